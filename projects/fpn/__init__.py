"""FPN: a Feature Pyramid Network backbone over any registered backbone.

Importing this package registers ``FPN`` and ``ResNet`` (all four stages, res2..res5) in
``BACKBONE_REGISTRY`` and ``add_fpn_config`` (``MODEL.FPN``) as a config extension.
"""

from projects.fpn.config import add_fpn_config
from projects.fpn.fpn import FPN, ConvNorm
from projects.fpn.resnet import ResNet
from projects.fpn.weights import imagenet_resnet_to_fpn

__all__ = ["FPN", "ConvNorm", "ResNet", "add_fpn_config", "imagenet_resnet_to_fpn"]
