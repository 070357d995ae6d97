"""Backbones: shared convolutional feature extractors."""

from detkit.modeling.backbone.build import BACKBONE_REGISTRY, Backbone, build_backbone

__all__ = ["BACKBONE_REGISTRY", "Backbone", "build_backbone"]
