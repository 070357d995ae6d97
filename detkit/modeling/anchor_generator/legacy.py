"""py-faster-rcnn anchors: integer-rounded shapes around the centre of the first cell."""

from __future__ import annotations

import torch
from torch import Tensor

from detkit.modeling.anchor_generator.build import ANCHOR_GENERATOR_REGISTRY
from detkit.modeling.anchor_generator.default import GridAnchorGenerator

__all__ = ["LegacyAnchorGenerator"]


@ANCHOR_GENERATOR_REGISTRY.register()
class LegacyAnchorGenerator(GridAnchorGenerator):
    """The released code's anchors (PAPER.md "Anchors", legacy generation).

    For a map of stride s the base window is ``(0, 0, s - 1, s - 1)``: width s under the
    ``x2 - x1 + 1`` convention, centre ``((s - 1) / 2, (s - 1) / 2)`` (7.5 for s = 16). For
    each aspect ratio r (h / w): ``ws = round(sqrt(s * s / r))``, ``hs = round(ws * r)`` with
    round half to even (NumPy's rule); then ``(ws, hs)`` times each scale ``size / s``, and
    the anchor is ``centre -/+ 0.5 * (side - 1)``. Ratio-major order. For s = 16, sizes
    [128, 256, 512] and ratios [0.5, 1, 2] this is PAPER.md's 9-anchor table.

    Positions are shifted by ``(stride * x, stride * y)`` from the top-left, so absolute
    centres are ``stride * x + 7.5`` (offset 0; the half cell lives in the cell anchors).

    Args:
        sizes: sqrt of the anchor areas, input pixels (scale = size / stride); one list for
            every map, or one list per map.
        aspect_ratios: height / width ratios.
        strides: stride of each feature map.
    """

    def __init__(self, *, sizes: list[float], aspect_ratios: list[float], strides: list[int]):
        super().__init__(sizes=sizes, aspect_ratios=aspect_ratios, strides=strides, offset=0.0)

    def cell_anchors_for_stride(self, stride: int, sizes: list[float]) -> Tensor:
        # float64 keeps the rounding inputs exact; torch.round rounds half to even as NumPy.
        ratios = torch.tensor(self.aspect_ratios, dtype=torch.float64)
        scales = torch.tensor(sizes, dtype=torch.float64) / stride
        base_area = float(stride * stride)  # base window (0, 0, s-1, s-1), +1 widths
        centre = 0.5 * (stride - 1)
        ws = torch.round(torch.sqrt(base_area / ratios))  # [R]
        hs = torch.round(ws * ratios)
        widths = ws[:, None] * scales[None, :]  # [R, S]: ratio-major, then scale
        heights = hs[:, None] * scales[None, :]
        half_w, half_h = 0.5 * (widths - 1), 0.5 * (heights - 1)
        anchors = torch.stack(
            [centre - half_w, centre - half_h, centre + half_w, centre + half_h], dim=-1
        )
        return anchors.reshape(-1, 4).to(torch.float32)
