"""RoI max pooling (Fast R-CNN) and RoIAlign on one feature map, via torchvision.ops (and a
separable RoIAlign that is much faster to train on CPUs)."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

from torch import Tensor
from torchvision.ops import roi_align, roi_pool

from detkit.config import CfgNode
from detkit.layers import ShapeSpec
from detkit.layers.roi_align_separable import roi_align_separable
from detkit.modeling.poolers.build import ROI_POOLER_REGISTRY, ROIPooler
from detkit.structures import Boxes

__all__ = ["ROIAlign", "ROIPool", "SingleMapROIPooler"]


class SingleMapROIPooler(ROIPooler):
    """Shared part of the poolers that read one feature map (the paper's conv5_3).

    Args:
        output_size: P, bins per side of the pooled feature (7 for VGG16).
        spatial_scale: feature cells per input pixel, 1 / stride (1/16 for VGG16).
        in_channels: C, channels of the feature map.
    """

    def __init__(self, *, output_size: int, spatial_scale: float, in_channels: int):
        super().__init__()
        if output_size <= 0 or spatial_scale <= 0:
            raise ValueError(
                f"{type(self).__name__} needs output_size > 0 and spatial_scale > 0; got "
                f"{output_size} and {spatial_scale} (POOLER.RESOLUTION and the map's stride)."
            )
        self.output_size = int(output_size)
        self.spatial_scale = float(spatial_scale)
        self.in_channels = int(in_channels)

    @classmethod
    def from_config(
        cls, cfg: CfgNode, node: CfgNode, input_shape: list[ShapeSpec] | None = None
    ) -> dict[str, Any]:
        """``node``: ``MODEL.ROI_HEADS.POOLER``, read for ``RESOLUTION``; ``input_shape``: a
        list of exactly one ``ShapeSpec`` (stride, channels), the map of
        ``MODEL.ROI_HEADS.IN_FEATURES``."""
        if not input_shape or len(input_shape) != 1:
            count = len(input_shape) if input_shape else 0
            raise ValueError(
                f"{cls.__name__} pools from exactly one feature map, but was built for "
                f"{count} ({input_shape!r}). List one map in MODEL.ROI_HEADS.IN_FEATURES, or "
                "register a multi-level pooler for several maps."
            )
        shape = input_shape[0]
        if shape.stride is None or shape.channels is None:
            raise ValueError(
                f"{cls.__name__} needs the stride and channels of its feature map; got {shape}."
            )
        return {
            "output_size": int(node.RESOLUTION),
            "spatial_scale": 1.0 / shape.stride,
            "in_channels": int(shape.channels),
        }

    def output_shape(self) -> ShapeSpec:
        return ShapeSpec(channels=self.in_channels, height=self.output_size, width=self.output_size)

    @abstractmethod
    def _pool(self, feature: Tensor, rois: list[Tensor]) -> Tensor:
        """``Tensor[B, C, H, W]`` and per-image ``Tensor[R_i, 4]`` -> ``Tensor[R, C, P, P]``."""

    def forward(self, features: list[Tensor], boxes: list[Boxes]) -> Tensor:
        """Pool a ``P x P`` feature for every box of every image.

        Args:
            features: one ``Tensor[B, C, H, W]``, in a list.
            boxes: B ``Boxes``, XYXY in input pixels, one per image of the batch.

        Returns:
            ``Tensor[R, C, P, P]``: R = total boxes, image 0's boxes first, each image's in
            their given order; ``[0, C, P, P]`` when there are no boxes.
        """
        if len(features) != 1:
            raise ValueError(
                f"{type(self).__name__} pools from exactly one feature map; got {len(features)}."
            )
        feature = features[0]
        if feature.shape[0] != len(boxes):
            raise ValueError(
                f"{type(self).__name__} got a batch of {feature.shape[0]} feature maps but "
                f"{len(boxes)} Boxes; pass one Boxes per image (possibly empty)."
            )
        if feature.shape[1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__} was built for {self.in_channels} channels but the "
                f"feature map has {feature.shape[1]}."
            )
        # torchvision turns the per-image list into [K, 5] rois with the batch index.
        rois = [b.tensor.to(dtype=feature.dtype) for b in boxes]
        return self._pool(feature, rois)


@ROI_POOLER_REGISTRY.register()
class ROIPool(SingleMapROIPooler):
    """Fast R-CNN RoI max pooling: box edges rounded to the feature grid, max per bin.

    torchvision's ``roi_pool`` follows the Caffe layer of the released code (a box covers
    feature cells ``round(x1 * scale) .. round(x2 * scale)`` inclusive).
    """

    def _pool(self, feature: Tensor, rois: list[Tensor]) -> Tensor:
        return roi_pool(feature, rois, self.output_size, self.spatial_scale)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}, spatial_scale={self.spatial_scale}"


@ROI_POOLER_REGISTRY.register()
class ROIAlign(SingleMapROIPooler):
    """RoIAlign (Mask R-CNN): bilinear samples averaged per bin, no rounding.

    Args:
        output_size: P, bins per side.
        spatial_scale: 1 / stride.
        in_channels: C.
        sampling_ratio: samples per bin side; 0 = adaptive (ceil(box size / P)).
        aligned: shift boxes by half a pixel so that pixel centres are at .5 (the corrected
            RoIAlign); False reproduces the original.
        implementation: ``"torchvision"`` (``torchvision.ops.roi_align``), ``"separable"``
            (:func:`detkit.layers.roi_align_separable`: the same values as two matrix
            products, about 4x faster forward + backward on a CPU; needs a fixed
            sampling ratio) or ``"auto"``: separable on CPU with a fixed sampling ratio,
            torchvision otherwise (its CUDA kernel is fast).

    ``implementation_by_mode`` (``{"training": ..., "inference": ...}``, set by
    ``MODEL.MEMORY_FORMAT measure`` from timings on this machine) overrides ``"auto"`` per
    mode: the separable version wins where its fast backward counts, torchvision's kernel
    may win at inference.
    """

    IMPLEMENTATIONS = ("auto", "torchvision", "separable")

    def __init__(
        self,
        *,
        output_size: int,
        spatial_scale: float,
        in_channels: int,
        sampling_ratio: int = 0,
        aligned: bool = True,
        implementation: str = "auto",
    ):
        super().__init__(
            output_size=output_size, spatial_scale=spatial_scale, in_channels=in_channels
        )
        if implementation not in self.IMPLEMENTATIONS:
            raise ValueError(
                f"ROIAlign implementation must be one of {self.IMPLEMENTATIONS}; got "
                f"'{implementation}' (MODEL.ROI_HEADS.POOLER.IMPLEMENTATION)."
            )
        if implementation == "separable" and sampling_ratio <= 0:
            raise ValueError(
                "The separable ROIAlign needs a fixed sampling ratio: set "
                "MODEL.ROI_HEADS.POOLER.SAMPLING_RATIO > 0 or IMPLEMENTATION 'torchvision'."
            )
        self.sampling_ratio = int(sampling_ratio)
        self.aligned = bool(aligned)
        self.implementation = implementation
        self.implementation_by_mode: dict[str, str] = {}

    @classmethod
    def from_config(
        cls, cfg: CfgNode, node: CfgNode, input_shape: list[ShapeSpec] | None = None
    ) -> dict[str, Any]:
        """As :class:`SingleMapROIPooler`'s, plus ``SAMPLING_RATIO``, ``ALIGNED`` and
        ``IMPLEMENTATION`` of ``node`` (``MODEL.ROI_HEADS.POOLER``); ``input_shape``: one
        ``ShapeSpec`` (stride, channels) in a list."""
        return {
            **super().from_config(cfg, node, input_shape),
            "sampling_ratio": int(node.SAMPLING_RATIO),
            "aligned": bool(node.ALIGNED),
            "implementation": node.IMPLEMENTATION,
        }

    def _use_separable(self, feature: Tensor) -> bool:
        if self.implementation == "auto":
            measured = self.implementation_by_mode.get("training" if self.training else "inference")
            if measured is not None:
                return measured == "separable"
            return self.sampling_ratio > 0 and feature.device.type == "cpu"
        return self.implementation == "separable"

    def _pool(self, feature: Tensor, rois: list[Tensor]) -> Tensor:
        if self._use_separable(feature):
            return roi_align_separable(
                feature,
                rois,
                self.output_size,
                self.spatial_scale,
                self.sampling_ratio,
                self.aligned,
            )
        return roi_align(
            feature,
            rois,
            self.output_size,
            self.spatial_scale,
            sampling_ratio=self.sampling_ratio,
            aligned=self.aligned,
        )

    def extra_repr(self) -> str:
        return (
            f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
            f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}, "
            f"implementation={self.implementation}"
        )
