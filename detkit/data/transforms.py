"""Transforms applied to an image and its boxes together, with their parameters fixed.

Geometric transforms (resize, flip, crop) move boxes with the image; the photometric
:class:`ColorTransform` changes pixels only and is computed by ``torchvision.transforms.v2``.
The random choices live in :mod:`detkit.data.augmentation`, which draws a transform per image.
Boxes are ``np.ndarray[N, 4]`` XYXY in 0-based continuous pixel coordinates (a box covering
pixel columns 0..9 is ``x1 = 0, x2 = 10``), so resizing scales them and flipping mirrors
them about the image's vertical centre line with no +-1 terms.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from collections.abc import Sequence

import cv2
import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

__all__ = [
    "ColorTransform",
    "CropTransform",
    "HFlipTransform",
    "ResizeTransform",
    "Transform",
    "apply_transforms",
    "clip_boxes",
    "nondegenerate",
    "resize_shortest_edge_shape",
]


def resize_shortest_edge_shape(
    height: int, width: int, short_edge: int, max_size: int
) -> tuple[int, int]:
    """Output ``(height, width)`` for a shortest-side resize with a cap on the longest side.

    PAPER.md, Input: ``scale = short_edge / short``; if ``round(scale * long) > max_size`` then
    ``scale = max_size / long``. One factor for both axes; ``max_size <= 0`` means no cap.
    """
    short, long = min(height, width), max(height, width)
    scale = short_edge / short
    if max_size > 0 and round(scale * long) > max_size:
        scale = max_size / long
    return max(1, int(round(height * scale))), max(1, int(round(width * scale)))


class Transform(metaclass=ABCMeta):
    """An image/box transform whose parameters are already fixed (no randomness inside)."""

    @abstractmethod
    def apply_image(self, image: np.ndarray) -> np.ndarray:
        """image: uint8 [H, W, C] -> the transformed image."""

    @abstractmethod
    def apply_boxes(self, boxes: np.ndarray) -> np.ndarray:
        """boxes: float [N, 4] XYXY -> transformed boxes [N, 4] (x1 <= x2 kept)."""


class ResizeTransform(Transform):
    """Bilinear resize from ``(height, width)`` to ``(new_height, new_width)``."""

    def __init__(self, height: int, width: int, new_height: int, new_width: int):
        self.height, self.width = height, width
        self.new_height, self.new_width = new_height, new_width

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        if image.shape[:2] != (self.height, self.width):
            raise ValueError(
                f"ResizeTransform expects a {self.height}x{self.width} image; got "
                f"{image.shape[0]}x{image.shape[1]}."
            )
        return cv2.resize(image, (self.new_width, self.new_height), interpolation=cv2.INTER_LINEAR)

    def apply_boxes(self, boxes: np.ndarray) -> np.ndarray:
        # Per-axis factors: after rounding the output size the two factors differ slightly,
        # and each axis must land on the resized image's own pixel grid.
        scale_x, scale_y = self.new_width / self.width, self.new_height / self.height
        return boxes * np.array([scale_x, scale_y, scale_x, scale_y], dtype=boxes.dtype)


class HFlipTransform(Transform):
    """Mirror left-right in an image of ``width`` pixels."""

    def __init__(self, width: int):
        self.width = width

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(image[:, ::-1])

    def apply_boxes(self, boxes: np.ndarray) -> np.ndarray:
        flipped = boxes.copy()
        flipped[:, 0] = self.width - boxes[:, 2]
        flipped[:, 2] = self.width - boxes[:, 0]
        return flipped


class CropTransform(Transform):
    """Keep the ``height x width`` window whose top-left pixel is ``(y0, x0)``.

    Boxes are shifted by ``(-x0, -y0)`` and not clipped: parts outside the window are cut
    by :func:`clip_boxes` once all transforms are applied (the mapper does it).
    """

    def __init__(self, x0: int, y0: int, width: int, height: int):
        if min(x0, y0) < 0 or min(width, height) < 1:
            raise ValueError(
                f"CropTransform needs x0, y0 >= 0 and a window of at least 1x1 pixel; got "
                f"x0={x0}, y0={y0}, {height}x{width}."
            )
        self.x0, self.y0, self.width, self.height = x0, y0, width, height

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        if image.shape[0] < self.y0 + self.height or image.shape[1] < self.x0 + self.width:
            raise ValueError(
                f"CropTransform window ({self.x0}, {self.y0}) + {self.height}x{self.width} "
                f"does not fit in a {image.shape[0]}x{image.shape[1]} image."
            )
        window = image[self.y0 : self.y0 + self.height, self.x0 : self.x0 + self.width]
        return np.ascontiguousarray(window)

    def apply_boxes(self, boxes: np.ndarray) -> np.ndarray:
        shift = np.array([self.x0, self.y0, self.x0, self.y0], dtype=boxes.dtype)
        return boxes - shift


class ColorTransform(Transform):
    """Brightness, contrast, saturation and hue changes in a given order; boxes unchanged.

    Each step is torchvision's (``torchvision.transforms.v2.functional.adjust_*``), which
    works in RGB: a "BGR" image is reordered to RGB and back, so that saturation's grey
    (0.2989 R + 0.587 G + 0.114 B) and hue's rotation see the true colours.

    Args:
        factors: ``{"brightness": f, "contrast": f, "saturation": f, "hue": h}``; a factor of
            1 (hue 0) leaves the image unchanged; steps not given are skipped.
        order: the order of the steps, e.g. ``("hue", "brightness")``; default: as given.
        image_format: channel order of the images, "BGR" or "RGB".
    """

    _STEPS = {
        "brightness": TF.adjust_brightness,
        "contrast": TF.adjust_contrast,
        "saturation": TF.adjust_saturation,
        "hue": TF.adjust_hue,
    }

    def __init__(
        self,
        factors: dict[str, float],
        order: Sequence[str] | None = None,
        image_format: str = "BGR",
    ):
        unknown = sorted(set(factors) - set(self._STEPS))
        if unknown:
            raise ValueError(f"ColorTransform: unknown steps {unknown}; known {list(self._STEPS)}.")
        if image_format not in ("BGR", "RGB"):
            raise ValueError(
                f"ColorTransform: image_format must be 'BGR' or 'RGB'; got '{image_format}'."
            )
        self.factors = dict(factors)
        self.order = tuple(order) if order is not None else tuple(self.factors)
        self.image_format = image_format

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(
                f"ColorTransform expects a uint8 [H, W, 3] image; got {image.dtype} "
                f"{list(image.shape)}."
            )
        rgb = image[:, :, ::-1] if self.image_format == "BGR" else image
        tensor = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))
        for step in self.order:
            if step in self.factors:
                tensor = self._STEPS[step](tensor, self.factors[step])
        out = tensor.permute(1, 2, 0).numpy()
        return np.ascontiguousarray(out[:, :, ::-1] if self.image_format == "BGR" else out)

    def apply_boxes(self, boxes: np.ndarray) -> np.ndarray:
        return boxes


def apply_transforms(
    transforms: Sequence[Transform], image: np.ndarray, boxes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Apply ``transforms`` in order to an image [H, W, C] and its boxes [N, 4]."""
    for t in transforms:
        image, boxes = t.apply_image(image), t.apply_boxes(boxes)
    return image, boxes


def clip_boxes(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Boxes [N, 4] clipped to ``[0, width] x [0, height]`` (a new array)."""
    limits = np.array([width, height, width, height], dtype=boxes.dtype)
    return np.clip(boxes, 0, limits)


def nondegenerate(boxes: np.ndarray, min_size: float = 1.0) -> np.ndarray:
    """bool [N]: True where both width and height are at least ``min_size`` pixels."""
    return ((boxes[:, 2] - boxes[:, 0]) >= min_size) & ((boxes[:, 3] - boxes[:, 1]) >= min_size)
