"""SCN (spatial context networks): the backbones (CNN_M, VGG-19) and the two-stream network."""

from frugalcv.models.scn.backbones import CNNM, VGG19, Backbone
from frugalcv.models.scn.registry import scn_backbone, scn_cnn_m, scn_vgg19
from frugalcv.models.scn.scn import SpatialContextNet, box_corners, box_offset, context_loss

__all__ = ["CNNM", "VGG19", "Backbone", "SpatialContextNet", "box_corners", "box_offset", "context_loss",
           "scn_backbone", "scn_cnn_m", "scn_vgg19"]
