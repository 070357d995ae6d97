"""Backbones: shared convolutional feature extractors."""

from detkit.modeling.backbone.build import (
    BACKBONE_REGISTRY,
    Backbone,
    build_backbone,
    select_feature_shapes,
)
from detkit.modeling.backbone.resnet import ResNet, ResNetC4, build_torchvision_resnet
from detkit.modeling.backbone.tiny import TinyBackbone
from detkit.modeling.backbone.vgg import VGG16, VGG16_CLASSIFIER_TO_BOX_HEAD
from detkit.modeling.backbone.zf import ZF

__all__ = [
    "BACKBONE_REGISTRY",
    "Backbone",
    "build_backbone",
    "select_feature_shapes",
    "ResNet",
    "ResNetC4",
    "build_torchvision_resnet",
    "TinyBackbone",
    "VGG16",
    "VGG16_CLASSIFIER_TO_BOX_HEAD",
    "ZF",
]
