"""RoIAlign on several feature maps, the pooled features concatenated along channels."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from detkit.config import CfgNode
from detkit.layers import ShapeSpec
from detkit.modeling.poolers.build import ROI_POOLER_REGISTRY, ROIPooler
from detkit.modeling.poolers.roi_pool import ROIAlign
from detkit.structures import Boxes

__all__ = ["ConcatROIAlign"]


@ROI_POOLER_REGISTRY.register()
class ConcatROIAlign(ROIPooler):
    """Every RoI pooled from every map (each at its own stride), channels concatenated.

    Unlike a feature pyramid's pooler, which picks one level per box by its size, each RoI
    gets both the fine detail of an early, high-resolution map and the context of a later
    one (the "hypercolumn" of HyperNet and ION). Each map is pooled by :class:`ROIAlign`.

    Args:
        output_size: P, bins per side.
        spatial_scales: 1 / stride of each map, in the order of ``MODEL.ROI_HEADS.IN_FEATURES``.
        in_channels: channels of each map, same order.
        sampling_ratio, aligned, implementation: as in :class:`ROIAlign`.
    """

    def __init__(
        self,
        *,
        output_size: int,
        spatial_scales: list[float],
        in_channels: list[int],
        sampling_ratio: int = 0,
        aligned: bool = True,
        implementation: str = "auto",
    ):
        super().__init__()
        if not spatial_scales or len(spatial_scales) != len(in_channels):
            raise ValueError(
                "ConcatROIAlign needs one spatial scale and one channel count per map; got "
                f"{len(spatial_scales)} scales and {len(in_channels)} channel counts."
            )
        self.poolers = nn.ModuleList(
            ROIAlign(
                output_size=output_size,
                spatial_scale=scale,
                in_channels=channels,
                sampling_ratio=sampling_ratio,
                aligned=aligned,
                implementation=implementation,
            )
            for scale, channels in zip(spatial_scales, in_channels)
        )
        self.output_size = int(output_size)

    @classmethod
    def from_config(
        cls, cfg: CfgNode, node: CfgNode, input_shape: list[ShapeSpec] | None = None
    ) -> dict[str, Any]:
        """``node``: ``MODEL.ROI_HEADS.POOLER``, read for ``RESOLUTION``, ``SAMPLING_RATIO``,
        ``ALIGNED`` and ``IMPLEMENTATION``; ``input_shape``: one ``ShapeSpec`` (stride,
        channels) per map of ``MODEL.ROI_HEADS.IN_FEATURES``."""
        if not input_shape or any(s.stride is None or s.channels is None for s in input_shape):
            raise ValueError(
                "ConcatROIAlign needs the stride and channels of each map of "
                f"MODEL.ROI_HEADS.IN_FEATURES; got {input_shape!r}."
            )
        return {
            "output_size": int(node.RESOLUTION),
            "spatial_scales": [1.0 / s.stride for s in input_shape],
            "in_channels": [int(s.channels) for s in input_shape],
            "sampling_ratio": int(node.SAMPLING_RATIO),
            "aligned": bool(node.ALIGNED),
            "implementation": node.IMPLEMENTATION,
        }

    def output_shape(self) -> ShapeSpec:
        channels = sum(p.in_channels for p in self.poolers)
        return ShapeSpec(channels=channels, height=self.output_size, width=self.output_size)

    def forward(self, features: list[Tensor], boxes: list[Boxes]) -> Tensor:
        """``features``: one ``Tensor[B, C_i, H_i, W_i]`` per map; ``boxes``: B ``Boxes`` in
        input pixels -> ``Tensor[R, sum(C_i), P, P]``, map 0's channels first."""
        if len(features) != len(self.poolers):
            raise ValueError(
                f"ConcatROIAlign was built for {len(self.poolers)} maps but got "
                f"{len(features)}; MODEL.ROI_HEADS.IN_FEATURES lists the maps it pools."
            )
        return torch.cat([p([f], boxes) for p, f in zip(self.poolers, features)], dim=1)
