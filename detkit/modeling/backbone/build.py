"""The backbone registry, the ``Backbone`` interface and ``build_backbone``."""

from __future__ import annotations

from abc import ABCMeta, abstractmethod

from torch import Tensor, nn

from detkit.layers import ShapeSpec
from detkit.registry import Registry, build_from_config

__all__ = ["BACKBONE_REGISTRY", "Backbone", "build_backbone", "select_feature_shapes"]

BACKBONE_REGISTRY = Registry("BACKBONE")
BACKBONE_REGISTRY.__doc__ = """
Backbones: shared convolutional feature extractors.

A member is a ``Backbone`` (an ``nn.Module``). It is built with ``input_shape`` a
``ShapeSpec`` of the image (channels). ``forward(images: Tensor[B, C, H, W])`` returns
``{feature_name: Tensor[B, C_f, H / stride_f, W / stride_f]}``, and ``output_shape()``
returns ``{feature_name: ShapeSpec(channels, stride)}`` for the same names.
"""


class Backbone(nn.Module, metaclass=ABCMeta):
    """A feature extractor that declares its outputs' names, channels and strides."""

    @abstractmethod
    def output_shape(self) -> dict[str, ShapeSpec]:
        """``{name: ShapeSpec(channels=..., stride=...)}`` of every output of ``forward``."""

    @abstractmethod
    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """``Tensor[B, C, H, W]`` -> ``{name: feature map}``."""

    @property
    def size_divisibility(self) -> int:
        """Padded inputs must be divisible by this (0: any size works)."""
        return 0


def build_backbone(cfg, node=None, input_shape: ShapeSpec | None = None, **overrides) -> Backbone:
    """Build ``node.NAME`` (default node ``cfg.MODEL.BACKBONE``) from ``BACKBONE_REGISTRY``."""
    if node is None:
        node = cfg.MODEL.BACKBONE
    if input_shape is None:
        input_shape = ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN))
    return build_from_config(BACKBONE_REGISTRY, cfg, node, input_shape, Backbone, **overrides)


def select_feature_shapes(
    shapes: dict[str, ShapeSpec], names: list[str], config_key: str
) -> list[ShapeSpec]:
    """The ``ShapeSpec`` of each of ``names`` (in that order) among the backbone's ``shapes``.

    Raises:
        KeyError: a name the backbone does not produce; the message names ``config_key``
            (e.g. ``"MODEL.RPN.IN_FEATURES"``) and the maps it does produce.
    """
    missing = [name for name in names if name not in shapes]
    if missing:
        raise KeyError(
            f"{config_key} names {missing}, which the backbone does not produce; it produces "
            f"{sorted(shapes)}."
        )
    return [shapes[name] for name in names]
