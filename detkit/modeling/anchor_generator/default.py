"""Grid anchors: the shared grid machinery and the modern exact-float generator."""

from __future__ import annotations

from abc import abstractmethod
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchvision.models.detection.anchor_utils import AnchorGenerator as TorchvisionAnchorGenerator

from detkit.config import CfgNode
from detkit.layers import ShapeSpec
from detkit.modeling.anchor_generator.build import ANCHOR_GENERATOR_REGISTRY, AnchorGenerator

__all__ = ["DefaultAnchorGenerator", "GridAnchorGenerator"]

# Distinct (level, H, W, device) grids kept; training images of varying size keep the cache
# bounded (a 38x63x9 grid is ~86 KB).
_MAX_CACHED_GRIDS = 64


def _sizes_per_level(
    sizes: Sequence[float] | Sequence[Sequence[float]], num_levels: int
) -> list[list[float]]:
    """One list of sizes per map: a flat list is shared; a list of lists must have one
    non-empty entry per map, all of one length (the RPN head predicts A per position)."""
    if not isinstance(sizes[0], (list, tuple)):
        return [[float(s) for s in sizes]] * num_levels
    if len(sizes) != num_levels or any(not isinstance(s, (list, tuple)) for s in sizes):
        raise ValueError(
            f"MODEL.ANCHOR_GENERATOR.SIZES {list(sizes)} has {len(sizes)} lists, but the "
            f"anchors are built for {num_levels} feature map(s): give one list per map (in the "
            "order of the RPN's IN_FEATURES), or one flat list used on every map."
        )
    if len({len(s) for s in sizes}) != 1 or not sizes[0]:
        raise ValueError(
            f"MODEL.ANCHOR_GENERATOR.SIZES {[list(s) for s in sizes]}: every map needs the same "
            "number of sizes (the RPN head predicts the same number of anchors per position)."
        )
    return [[float(v) for v in s] for s in sizes]


class GridAnchorGenerator(AnchorGenerator):
    """Cell anchors (A per position) repeated at every feature-map position (paper 3.1.1).

    Subclasses define ``cell_anchors_for_stride``. Anchors of map ``i`` are its cell anchors
    shifted by ``((x + offset) * stride, (y + offset) * stride)`` for every position
    ``(y, x)``; the result is ordered anchor fastest, then x, then y, which is the order of
    the RPN head's outputs after ``[B, A, H, W] -> [B, H, W, A]``.

    Args:
        sizes: sqrt of the anchor areas, input pixels: one list used on every map (e.g.
            [128, 256, 512]), or one list per map (a feature pyramid, e.g. [[32], [64],
            [128]]), all of the same length so every map has A anchors per position.
        aspect_ratios: height / width ratios (e.g. [0.5, 1, 2]).
        strides: stride of each feature map, input pixels per feature cell (e.g. [16]).
        offset: where the grid starts inside a cell, as a fraction of the stride.
    """

    def __init__(
        self,
        *,
        sizes: Sequence[float] | Sequence[Sequence[float]],
        aspect_ratios: list[float],
        strides: list[int],
        offset: float = 0.0,
    ):
        super().__init__()
        if not sizes or not aspect_ratios or not strides:
            raise ValueError(
                f"{type(self).__name__} needs non-empty sizes, aspect_ratios and strides; got "
                f"sizes={sizes}, aspect_ratios={aspect_ratios}, strides={strides} "
                "(MODEL.ANCHOR_GENERATOR.SIZES / ASPECT_RATIOS and the backbone's strides)."
            )
        self.level_sizes = _sizes_per_level(sizes, len(strides))
        if any(s <= 0 for level in self.level_sizes for s in level) or any(
            r <= 0 for r in aspect_ratios
        ):
            raise ValueError(
                f"Anchor sizes and aspect ratios must be positive; got sizes={sizes}, "
                f"aspect_ratios={aspect_ratios} (MODEL.ANCHOR_GENERATOR)."
            )
        per_level = isinstance(sizes[0], (list, tuple))
        #: As given: one list (every map) or one list per map.
        self.sizes = [list(map(float, s)) for s in sizes] if per_level else self.level_sizes[0]
        self.aspect_ratios = [float(r) for r in aspect_ratios]
        self.strides = [int(s) for s in strides]
        self.offset = float(offset)
        # One [A, 4] tensor per map, on the CPU; grids are built on the features' device.
        self.cell_anchors = [
            self.cell_anchors_for_stride(stride, level_sizes)
            for stride, level_sizes in zip(self.strides, self.level_sizes)
        ]
        self._grid_cache: OrderedDict[tuple, Tensor] = OrderedDict()

    @classmethod
    def from_config(
        cls, cfg: CfgNode, node: CfgNode, input_shape: list[ShapeSpec] | None = None
    ) -> dict[str, Any]:
        """``node``: ``MODEL.ANCHOR_GENERATOR``, read for ``SIZES`` and ``ASPECT_RATIOS``;
        ``input_shape``: one ``ShapeSpec`` with a stride per feature map the anchors are laid
        on."""
        if not input_shape or any(s.stride is None for s in input_shape):
            raise ValueError(
                f"{cls.__name__} is built with input_shape = one ShapeSpec with a stride per "
                f"feature map (the backbone's output_shape()); got {input_shape!r}."
            )
        return {
            "sizes": list(node.SIZES),
            "aspect_ratios": list(node.ASPECT_RATIOS),
            "strides": [s.stride for s in input_shape],
        }

    @property
    def num_anchors_per_location(self) -> int:
        """A = sizes per map * len(aspect_ratios)."""
        return len(self.level_sizes[0]) * len(self.aspect_ratios)

    @abstractmethod
    def cell_anchors_for_stride(self, stride: int, sizes: list[float]) -> Tensor:
        """``Tensor[A, 4]`` XYXY, float32: the anchors of ``sizes`` at the position at shift
        (0, 0) of a map of ``stride``."""

    def grid_anchors(self, level: int, height: int, width: int, device: torch.device) -> Tensor:
        """``Tensor[height * width * A, 4]``: the anchors of map ``level`` (cached).

        The returned tensor is shared with the cache: do not modify it in place.
        """
        if torch.compiler.is_compiling():  # traced sizes are symbolic: nothing to cache
            return self._grid(level, height, width, device)
        key = (level, height, width, str(device))
        cached = self._grid_cache.get(key)
        if cached is not None:
            self._grid_cache.move_to_end(key)
            return cached
        anchors = self._grid(level, height, width, device)
        self._grid_cache[key] = anchors
        if len(self._grid_cache) > _MAX_CACHED_GRIDS:
            self._grid_cache.popitem(last=False)
        return anchors

    def _grid(self, level: int, height: int, width: int, device: torch.device) -> Tensor:
        """``Tensor[height * width * A, 4]``: the anchors of map ``level``, computed."""
        stride = self.strides[level]
        xs = (torch.arange(width, dtype=torch.float32, device=device) + self.offset) * stride
        ys = (torch.arange(height, dtype=torch.float32, device=device) + self.offset) * stride
        shift_y, shift_x = torch.meshgrid(ys, xs, indexing="ij")  # x varies fastest
        shift_x, shift_y = shift_x.reshape(-1), shift_y.reshape(-1)
        shifts = torch.stack([shift_x, shift_y, shift_x, shift_y], dim=1)  # [H * W, 4]
        cell = self.cell_anchors[level].to(device)  # [A, 4]
        return (shifts[:, None, :] + cell[None, :, :]).reshape(-1, 4)  # anchor fastest

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        """Anchors of each feature map.

        Args:
            features: ``Tensor[B, C, H_i, W_i]`` per map, in the order of ``strides``.

        Returns:
            One ``Tensor[H_i * W_i * A, 4]`` per map, XYXY in input pixels, float32.
        """
        if len(features) != len(self.strides):
            raise ValueError(
                f"{type(self).__name__} was built for {len(self.strides)} feature map(s) "
                f"(strides {self.strides}) but received {len(features)}; build it with the "
                "ShapeSpecs of exactly the maps passed to forward()."
            )
        return [
            self.grid_anchors(level, f.shape[-2], f.shape[-1], f.device)
            for level, f in enumerate(features)
        ]

    def extra_repr(self) -> str:
        return (
            f"sizes={self.sizes}, aspect_ratios={self.aspect_ratios}, strides={self.strides}, "
            f"offset={self.offset}"
        )


@ANCHOR_GENERATOR_REGISTRY.register()
class DefaultAnchorGenerator(GridAnchorGenerator):
    """Modern anchors: exact float shapes centred at ``(i + offset) * stride``.

    For each aspect ratio r (h / w) and size s: area = s^2, w = sqrt(area / r), h = w * r,
    and the cell anchor is ``(-w/2, -h/2, w/2, h/2)``. Ratio-major order, as the legacy
    generator. Position ``(y, x)`` of a map adds ``((x + offset) * stride,
    (y + offset) * stride)``; offset 0.5 centres anchors on the cells.

    Args:
        sizes: sqrt of the anchor areas, input pixels; one list for every map or one per map.
        aspect_ratios: height / width ratios.
        strides: stride of each feature map.
        offset: grid offset as a fraction of the stride (0 or 0.5 in practice).
        round_to_pixels: torchvision's cell anchors instead: computed in float32 as
            ``(-w, -h, w, h) / 2`` with ``h = s * sqrt(r)``, ``w = s / sqrt(r)``, and rounded
            to whole pixels (half to even). With ``offset`` 0 the anchors then equal
            torchvision's ``AnchorGenerator``'s wherever its stride (image size // map size)
            equals the map's stride, e.g. on batches padded to a multiple of it.
    """

    def __init__(
        self,
        *,
        sizes: Sequence[float] | Sequence[Sequence[float]],
        aspect_ratios: list[float],
        strides: list[int],
        offset: float = 0.0,
        round_to_pixels: bool = False,
    ):
        self.round_to_pixels = bool(round_to_pixels)  # read by cell_anchors_for_stride
        super().__init__(sizes=sizes, aspect_ratios=aspect_ratios, strides=strides, offset=offset)

    @classmethod
    def from_config(
        cls, cfg: CfgNode, node: CfgNode, input_shape: list[ShapeSpec] | None = None
    ) -> dict[str, Any]:
        """As :class:`GridAnchorGenerator`'s, plus ``OFFSET`` of ``node``
        and ``ROUND_TO_PIXELS`` of ``node`` (``MODEL.ANCHOR_GENERATOR``); ``input_shape``: one
        ``ShapeSpec`` per feature map."""
        return {
            **super().from_config(cfg, node, input_shape),
            "offset": float(node.OFFSET),
            "round_to_pixels": bool(node.ROUND_TO_PIXELS),
        }

    def cell_anchors_for_stride(self, stride: int, sizes: list[float]) -> Tensor:
        if self.round_to_pixels:
            return _torchvision_cell_anchors(sizes, self.aspect_ratios)
        # float64 so that the float32 result is the correctly rounded exact value.
        ratios = torch.tensor(self.aspect_ratios, dtype=torch.float64)[:, None]  # [R, 1]
        sizes = torch.tensor(sizes, dtype=torch.float64)[None, :]  # [1, S]
        widths = torch.sqrt(sizes * sizes / ratios)  # [R, S]: area / ratio = w^2
        heights = widths * ratios
        anchors = torch.stack([-widths / 2, -heights / 2, widths / 2, heights / 2], dim=-1)
        return anchors.reshape(-1, 4).to(torch.float32)  # ratio-major, then size


def _torchvision_cell_anchors(sizes: list[float], aspect_ratios: list[float]) -> Tensor:
    """``Tensor[R * S, 4]``: the cell anchors torchvision's ``AnchorGenerator`` computes
    (float32, rounded to whole pixels), ratio-major, then size, as detkit's."""
    return TorchvisionAnchorGenerator((tuple(sizes),), (tuple(aspect_ratios),)).cell_anchors[0]
