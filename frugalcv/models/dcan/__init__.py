"""DCAN (dual channel-wise alignment): the image generator and the segmentation networks it adapts.

``align``: AdaIN and Gram matrices; ``generator``: frozen VGG-19 encoder + decoder; ``base``: a
segmentation net split into ``f_seg``/``g_seg``; ``fcn_vgg``, ``fcn_resnet``, ``pspnet``: the nets.
"""

from frugalcv.models.dcan.align import adain, channel_stats, gram
from frugalcv.models.dcan.generator import Decoder, Generator, GeneratorOutput, VGGEncoder, dcan_generator
from frugalcv.models.dcan.segmentation import (
    FCN8sResNet,
    FCN8sVGG16,
    PSPNet,
    SegNet,
    fc_from_vgg_classifier,
    fcn8s_resnet101,
    fcn8s_vgg16,
    pspnet_resnet50,
)

__all__ = ["Decoder", "FCN8sResNet", "FCN8sVGG16", "Generator", "GeneratorOutput", "PSPNet", "SegNet",
           "VGGEncoder", "adain", "channel_stats", "dcan_generator", "fc_from_vgg_classifier", "fcn8s_resnet101",
           "fcn8s_vgg16", "gram", "pspnet_resnet50"]
