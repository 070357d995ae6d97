"""RoIAlign as two small matrix products: the same numbers as ``torchvision.ops.roi_align``
with a fixed sampling ratio, and a much cheaper backward pass on CPUs.

Bilinear interpolation is separable: the value sampled at (y, x) is
``sum_{i,j} a_i(y) F[i, j] b_j(x)`` with ``a`` and ``b`` the 1-D interpolation weights of
the two axes. RoIAlign averages a grid of such samples per bin, and averaging is linear, so
the pooled feature of one RoI is ``Wy @ F @ Wx^T`` where ``Wy[p, :]`` (``P x H``) averages
the y weights of bin row p and ``Wx`` likewise for x. The products run on BLAS and their
backward is two more products, where torchvision's CPU kernel scatters every sample's
gradient one by one.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["roi_align_separable", "roi_align_weights"]


def roi_align_weights(
    start: Tensor, bin_size: Tensor, output_size: int, sampling_ratio: int, size: int
) -> Tensor:
    """1-D interpolation weights of RoIAlign along one axis.

    Args:
        start: ``Tensor[R]``, where each RoI begins on this axis, in feature cells (pixel
            centres at integers, as in torchvision's kernel).
        bin_size: ``Tensor[R]``, the length of one bin in feature cells.
        output_size: P, bins along the axis.
        sampling_ratio: samples per bin along the axis (> 0).
        size: the feature map's length along the axis (H or W).

    Returns:
        ``Tensor[R, P, size]``: row p holds the mean over the bin's samples of each
        sample's two bilinear weights. A sample beyond one cell outside the map contributes
        nothing; one within a cell of the border reads the border (torchvision's rules).
    """
    num_rois = start.shape[0]
    steps = torch.arange(output_size * sampling_ratio, device=start.device, dtype=start.dtype)
    bins = torch.div(steps, sampling_ratio, rounding_mode="floor")
    # Sample k of bin p sits at p + (k + 0.5) / s bins from the RoI's start.
    offsets = bins + (steps - bins * sampling_ratio + 0.5) / sampling_ratio
    pos = start[:, None] + offsets[None, :] * bin_size[:, None]  # [R, P * s]
    inside = ((pos >= -1.0) & (pos <= size)).to(start.dtype)
    pos = pos.clamp(min=0, max=size - 1)
    low = pos.floor()
    frac = pos - low
    high = (low + 1).clamp(max=size - 1)
    scale = inside / sampling_ratio
    weights = torch.zeros(num_rois, output_size * size, device=start.device, dtype=start.dtype)
    row = (bins.long() * size).expand(num_rois, -1)
    weights.scatter_add_(1, row + low.long(), (1 - frac) * scale)
    weights.scatter_add_(1, row + high.long(), frac * scale)
    return weights.view(num_rois, output_size, size)


def roi_align_separable(
    feature: Tensor,
    boxes: list[Tensor],
    output_size: int,
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool = True,
) -> Tensor:
    """``torchvision.ops.roi_align`` for a fixed ``sampling_ratio > 0``, computed separably.

    Args:
        feature: ``Tensor[B, C, H, W]``.
        boxes: B tensors ``[R_i, 4]``, XYXY in input pixels.
        output_size: P.
        spatial_scale: feature cells per input pixel (1 / stride).
        sampling_ratio: samples per bin side (> 0; adaptive sampling is not separable into
            fixed-size matrices: use torchvision's kernel for it).
        aligned: shift by half a cell so pixel centres sit at .5 (corrected RoIAlign).

    Returns:
        ``Tensor[R, C, P, P]``, boxes of image 0 first.
    """
    if sampling_ratio <= 0:
        raise ValueError(
            "roi_align_separable needs sampling_ratio > 0 (use torchvision's "
            "roi_align for adaptive sampling)."
        )
    _, channels, height, width = feature.shape
    offset = 0.5 if aligned else 0.0
    outputs = []
    for image_feature, image_boxes in zip(feature, boxes):
        if image_boxes.numel() == 0:
            continue
        b = image_boxes.to(feature.dtype) * spatial_scale - offset
        x1, y1, x2, y2 = b.unbind(dim=1)
        roi_w, roi_h = x2 - x1, y2 - y1
        if not aligned:  # the original RoIAlign makes every RoI at least one cell wide
            roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
        wy = roi_align_weights(y1, roi_h / output_size, output_size, sampling_ratio, height)
        wx = roi_align_weights(x1, roi_w / output_size, output_size, sampling_ratio, width)
        rows = torch.einsum("rph,chw->rcpw", wy, image_feature)
        outputs.append(torch.einsum("rcpw,rqw->rcpq", rows, wx))
    if not outputs:
        return feature.new_zeros(0, channels, output_size, output_size)
    return torch.cat(outputs, dim=0)
