"""DCAN's segmentation networks in one place (each lives in its own file; the split is in ``base``)."""

from frugalcv.models.dcan.base import SegNet
from frugalcv.models.dcan.fcn_resnet import FCN8sResNet, fcn8s_resnet101
from frugalcv.models.dcan.fcn_vgg import FCN8sVGG16, fc_from_vgg_classifier, fcn8s_vgg16
from frugalcv.models.dcan.pspnet import PSPNet, pspnet_resnet50

__all__ = ["FCN8sResNet", "FCN8sVGG16", "PSPNet", "SegNet", "fc_from_vgg_classifier", "fcn8s_resnet101",
           "fcn8s_vgg16", "pspnet_resnet50"]
