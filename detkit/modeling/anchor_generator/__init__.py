"""Anchor generators: reference boxes on the feature-map grid."""

from detkit.modeling.anchor_generator.build import (
    ANCHOR_GENERATOR_REGISTRY,
    AnchorGenerator,
    build_anchor_generator,
)

__all__ = ["ANCHOR_GENERATOR_REGISTRY", "AnchorGenerator", "build_anchor_generator"]
