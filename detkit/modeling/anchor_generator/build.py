"""The anchor generator registry, the ``AnchorGenerator`` interface and its builder."""

from __future__ import annotations

from abc import ABCMeta, abstractmethod

from torch import Tensor, nn

from detkit.layers import ShapeSpec
from detkit.registry import Registry, build_from_config

__all__ = ["ANCHOR_GENERATOR_REGISTRY", "AnchorGenerator", "build_anchor_generator"]

ANCHOR_GENERATOR_REGISTRY = Registry("ANCHOR_GENERATOR")
ANCHOR_GENERATOR_REGISTRY.__doc__ = """
Anchor generators: reference boxes on a grid over each feature map (paper 3.1.1).

A member is an ``AnchorGenerator`` (an ``nn.Module``), built with ``input_shape`` a list of
``ShapeSpec`` (one per feature map; the stride is used). ``forward(features: list[Tensor])``
returns one ``Tensor[H_i * W_i * A, 4]`` per map, XYXY in input pixels, ordered anchor
fastest, then x, then y. ``num_anchors_per_location`` is A, which sizes the RPN head.
"""


class AnchorGenerator(nn.Module, metaclass=ABCMeta):
    """Produces the anchors of each feature map; A anchors per location."""

    @property
    @abstractmethod
    def num_anchors_per_location(self) -> int:
        """A: anchors at each feature-map position (the same for every map)."""

    @abstractmethod
    def forward(self, features: list[Tensor]) -> list[Tensor]:
        """Feature maps ``[B, C, H_i, W_i]`` -> anchors ``Tensor[H_i * W_i * A, 4]`` each."""


def build_anchor_generator(
    cfg, node=None, input_shape: list[ShapeSpec] | None = None, **overrides
) -> AnchorGenerator:
    """Build ``node.NAME`` (default ``cfg.MODEL.ANCHOR_GENERATOR``)."""
    node = cfg.MODEL.ANCHOR_GENERATOR if node is None else node
    return build_from_config(
        ANCHOR_GENERATOR_REGISTRY, cfg, node, input_shape, AnchorGenerator, **overrides
    )
