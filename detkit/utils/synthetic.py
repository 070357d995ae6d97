"""A tiny synthetic detection example built in memory (for sanity checks and tests)."""

from __future__ import annotations

import torch

from detkit.structures import Boxes, Instances

__all__ = ["two_shapes_example"]


def two_shapes_example(height: int = 128, width: int = 160, seed: int = 0) -> dict:
    """One RGB image (0-255) with a red rectangle (class 0) and a green disc (class 2) on a
    noisy dark background, as a training input dict for a meta-architecture.

    Returns:
        ``{"image": Tensor[3, H, W], "instances": Instances(gt_boxes, gt_classes),
        "height": H, "width": W, "image_id": "two_shapes"}``.
    """
    if height < 96 or width < 128:
        raise ValueError(f"two_shapes_example needs at least 96x128 pixels; got {height}x{width}.")
    g = torch.Generator().manual_seed(seed)
    image = 40.0 + torch.rand(3, height, width, generator=g) * 30
    # Red rectangle, class 0.
    x1, y1, x2, y2 = 0.1 * width, 0.15 * height, 0.375 * width, 0.55 * height
    image[0, int(y1) : int(y2), int(x1) : int(x2)] = 230
    # Green disc, class 2; its box is the disc's bounding square.
    cx, cy, r = 0.69 * width, 0.625 * height, 0.23 * min(height, width)
    yy, xx = torch.meshgrid(
        torch.arange(height, dtype=torch.float32) + 0.5,
        torch.arange(width, dtype=torch.float32) + 0.5,
        indexing="ij",
    )
    image[1][(yy - cy) ** 2 + (xx - cx) ** 2 < r**2] = 220
    boxes = torch.tensor(
        [[int(x1), int(y1), int(x2), int(y2)], [cx - r, cy - r, cx + r, cy + r]],
        dtype=torch.float32,
    )
    instances = Instances((height, width), gt_boxes=Boxes(boxes), gt_classes=torch.tensor([0, 2]))
    return {
        "image": image,
        "instances": instances,
        "height": height,
        "width": width,
        "image_id": "two_shapes",
    }
