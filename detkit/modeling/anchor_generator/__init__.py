"""Anchor generators: reference boxes on the feature-map grid."""

from detkit.modeling.anchor_generator.build import (
    ANCHOR_GENERATOR_REGISTRY,
    AnchorGenerator,
    build_anchor_generator,
)
from detkit.modeling.anchor_generator.default import DefaultAnchorGenerator, GridAnchorGenerator
from detkit.modeling.anchor_generator.legacy import LegacyAnchorGenerator

__all__ = [
    "ANCHOR_GENERATOR_REGISTRY",
    "AnchorGenerator",
    "DefaultAnchorGenerator",
    "GridAnchorGenerator",
    "LegacyAnchorGenerator",
    "build_anchor_generator",
]
