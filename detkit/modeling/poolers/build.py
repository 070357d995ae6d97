"""The RoI pooler registry, the ``ROIPooler`` interface and its builder."""

from __future__ import annotations

from abc import ABCMeta, abstractmethod

from torch import Tensor, nn

from detkit.layers import ShapeSpec
from detkit.registry import Registry, build_from_config
from detkit.structures import Boxes

__all__ = ["ROI_POOLER_REGISTRY", "ROIPooler", "build_roi_pooler"]

ROI_POOLER_REGISTRY = Registry("ROI_POOLER")
ROI_POOLER_REGISTRY.__doc__ = """
RoI poolers: fixed-size features for each box from a feature map (Fast R-CNN).

A member is a ``ROIPooler`` (an ``nn.Module``), built with ``input_shape`` a list of
``ShapeSpec`` (the maps it pools from; the stride sets the spatial scale).
``forward(features: list[Tensor[B, C, H, W]], boxes: list[Boxes])`` (one ``Boxes`` per
image, input pixels) returns ``Tensor[R, C, P, P]`` for the R boxes in image order.
``output_shape()`` is ``ShapeSpec(channels=C, height=P, width=P)``.
"""


class ROIPooler(nn.Module, metaclass=ABCMeta):
    """Pools a ``P x P`` feature for every box."""

    @abstractmethod
    def output_shape(self) -> ShapeSpec:
        """``ShapeSpec(channels, height=P, width=P)`` of one pooled RoI."""

    @abstractmethod
    def forward(self, features: list[Tensor], boxes: list[Boxes]) -> Tensor:
        """Maps and per-image boxes -> ``Tensor[R, C, P, P]``."""


def build_roi_pooler(
    cfg, node=None, input_shape: list[ShapeSpec] | None = None, **overrides
) -> ROIPooler:
    """Build ``node.NAME`` (default ``cfg.MODEL.ROI_HEADS.POOLER``)."""
    node = cfg.MODEL.ROI_HEADS.POOLER if node is None else node
    return build_from_config(ROI_POOLER_REGISTRY, cfg, node, input_shape, ROIPooler, **overrides)
