"""RoIAlign over a feature pyramid: each RoI pooled from the one level that fits its size."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from detkit.config import CfgNode
from detkit.layers import ShapeSpec
from detkit.modeling.poolers.build import ROI_POOLER_REGISTRY, ROIPooler
from detkit.modeling.poolers.roi_pool import ROIAlign
from detkit.structures import Boxes

__all__ = ["MultiLevelROIAlign", "assign_levels"]


def assign_levels(
    boxes: Boxes, min_level: int, max_level: int, canonical_size: float, canonical_level: int
) -> Tensor:
    """The pyramid level of each box (FPN, Eq. 1):
    ``floor(canonical_level + log2(sqrt(area) / canonical_size))``, clamped to
    ``[min_level, max_level]``; a level ``k`` is the map of stride ``2 ** k``.

    Returns:
        ``Tensor[N]`` int64 levels.
    """
    sizes = boxes.area().clamp(min=0).sqrt()
    # A tiny epsilon keeps a box of exactly the canonical size on the canonical level.
    levels = torch.floor(canonical_level + torch.log2(sizes / canonical_size + 1e-8))
    return levels.clamp(min=min_level, max=max_level).to(torch.int64)


@ROI_POOLER_REGISTRY.register()
class MultiLevelROIAlign(ROIPooler):
    """RoIAlign from the map whose level fits each RoI (:func:`assign_levels`): small RoIs
    from fine maps, large ones from coarse maps. All maps have C channels (a feature
    pyramid's); the output is ``Tensor[R, C, P, P]`` in the boxes' order, as every pooler.

    Args:
        output_size: P, bins per side.
        strides: stride of each map, in the order of ``MODEL.ROI_HEADS.IN_FEATURES``: powers
            of two, one per consecutive level (e.g. [4, 8, 16, 32]).
        in_channels: C, channels of every map.
        canonical_size, canonical_level: a RoI of ``canonical_size`` pixels (sqrt of its
            area) goes to level ``canonical_level`` (FPN: 224 at level 4, the ImageNet size
            on the stride-16 map); twice as large goes one level up.
        sampling_ratio, aligned, implementation: as in :class:`ROIAlign`.
    """

    def __init__(
        self,
        *,
        output_size: int,
        strides: list[int],
        in_channels: int,
        canonical_size: float = 224.0,
        canonical_level: int = 4,
        sampling_ratio: int = 0,
        aligned: bool = True,
        implementation: str = "auto",
    ):
        super().__init__()
        levels = [math.log2(s) for s in strides]
        if (
            not strides
            or any(not lv.is_integer() for lv in levels)
            or any(b != a + 1 for a, b in zip(levels, levels[1:]))
        ):
            raise ValueError(
                f"MultiLevelROIAlign needs maps whose strides are consecutive powers of two in "
                f"increasing order (e.g. [4, 8, 16, 32]); got {list(strides)} "
                "(MODEL.ROI_HEADS.IN_FEATURES)."
            )
        if canonical_size <= 0:
            raise ValueError(
                f"MODEL.ROI_HEADS.POOLER.CANONICAL_SIZE must be > 0; got {canonical_size}."
            )
        self.min_level, self.max_level = int(levels[0]), int(levels[-1])
        self.canonical_size = float(canonical_size)
        self.canonical_level = int(canonical_level)
        self.output_size = int(output_size)
        self.in_channels = int(in_channels)
        self.poolers = nn.ModuleList(
            ROIAlign(
                output_size=output_size,
                spatial_scale=1.0 / stride,
                in_channels=in_channels,
                sampling_ratio=sampling_ratio,
                aligned=aligned,
                implementation=implementation,
            )
            for stride in strides
        )

    @classmethod
    def from_config(
        cls, cfg: CfgNode, node: CfgNode, input_shape: list[ShapeSpec] | None = None
    ) -> dict[str, Any]:
        """``node``: ``MODEL.ROI_HEADS.POOLER``, read for ``RESOLUTION``, ``CANONICAL_SIZE``,
        ``CANONICAL_LEVEL``, ``SAMPLING_RATIO``, ``ALIGNED`` and ``IMPLEMENTATION``;
        ``input_shape``: one ``ShapeSpec`` (stride, channels) per map of
        ``MODEL.ROI_HEADS.IN_FEATURES``."""
        if not input_shape or any(s.stride is None or s.channels is None for s in input_shape):
            raise ValueError(
                "MultiLevelROIAlign needs the stride and channels of each map of "
                f"MODEL.ROI_HEADS.IN_FEATURES; got {input_shape!r}."
            )
        channels = {int(s.channels) for s in input_shape}
        if len(channels) != 1:
            raise ValueError(
                "MultiLevelROIAlign pools every RoI into the same head, so the maps of "
                f"MODEL.ROI_HEADS.IN_FEATURES need equal channels; got {sorted(channels)}."
            )
        return {
            "output_size": int(node.RESOLUTION),
            "strides": [int(s.stride) for s in input_shape],
            "in_channels": channels.pop(),
            "canonical_size": float(node.CANONICAL_SIZE),
            "canonical_level": int(node.CANONICAL_LEVEL),
            "sampling_ratio": int(node.SAMPLING_RATIO),
            "aligned": bool(node.ALIGNED),
            "implementation": node.IMPLEMENTATION,
        }

    def output_shape(self) -> ShapeSpec:
        return ShapeSpec(channels=self.in_channels, height=self.output_size, width=self.output_size)

    def forward(self, features: list[Tensor], boxes: list[Boxes]) -> Tensor:
        """``features``: one ``Tensor[B, C, H_l, W_l]`` per level; ``boxes``: B ``Boxes`` in
        input pixels -> ``Tensor[R, C, P, P]``, image 0's boxes first, each image's in order."""
        if len(features) != len(self.poolers):
            raise ValueError(
                f"MultiLevelROIAlign was built for {len(self.poolers)} maps but got "
                f"{len(features)}; MODEL.ROI_HEADS.IN_FEATURES lists the maps it pools."
            )
        levels = [
            assign_levels(
                b, self.min_level, self.max_level, self.canonical_size, self.canonical_level
            )
            - self.min_level
            for b in boxes
        ]
        total = sum(len(b) for b in boxes)
        size = self.output_size
        out = features[0].new_zeros((total, self.in_channels, size, size))
        flat_levels = torch.cat(levels) if levels else torch.zeros(0, dtype=torch.int64)
        for index, (pooler, feature) in enumerate(zip(self.poolers, features)):
            where = torch.nonzero(flat_levels == index).squeeze(1)
            if where.numel() == 0:
                continue
            level_boxes = [b[lv == index] for b, lv in zip(boxes, levels)]
            out[where] = pooler([feature], level_boxes).to(out.dtype)
        return out

    def extra_repr(self) -> str:
        return (
            f"levels={self.min_level}..{self.max_level}, canonical_size={self.canonical_size}, "
            f"canonical_level={self.canonical_level}"
        )
