"""Random augmentations: each draws a :class:`~detkit.data.transforms.Transform` per image.

An augmentation looks at the image (after the previous augmentations) and a NumPy generator,
and returns the transform to apply, or ``None`` to leave the image as it is. The random
draws come only from that generator, so a training loader that seeds it per sample
(``"aug_seed"``) replays the same augmentations after a resume.

:func:`build_augmentations` gives the list a config selects, in this order:

1. :class:`RandomCrop` (``INPUT.CROP.ENABLED``, training only), a window of the original
   image;
2. :class:`ResizeShortestEdge` (``INPUT.MIN_SIZE_*``, ``INPUT.MAX_SIZE_*``), always;
3. :class:`RandomFlip` (``INPUT.RANDOM_FLIP``, training only);
4. :class:`ColorJitter` (``INPUT.COLOR_JITTER.*``, training only, when any range is > 0).

A custom list goes to ``DatasetMapper(cfg, is_train, augmentations=[...])``, typically from
an override of ``DefaultTrainer.build_train_loader``.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np

from detkit.data.transforms import (
    ColorTransform,
    CropTransform,
    HFlipTransform,
    ResizeTransform,
    Transform,
    resize_shortest_edge_shape,
)

__all__ = [
    "Augmentation",
    "ColorJitter",
    "RandomCrop",
    "RandomFlip",
    "ResizeShortestEdge",
    "build_augmentations",
]

CROP_TYPES = ("relative", "relative_range", "absolute", "absolute_range")


class Augmentation(metaclass=ABCMeta):
    """Draws the transform for one image."""

    @abstractmethod
    def get_transform(
        self, image: np.ndarray, rng: np.random.Generator, dataset_dict: dict
    ) -> Transform | None:
        """image: uint8 [H, W, C] as transformed so far -> a transform, or None for none."""

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({settings})"


class ResizeShortestEdge(Augmentation):
    """Resize so the shorter side is one of ``min_sizes`` (drawn uniformly when there are
    several) and the longer side at most ``max_size`` (PAPER.md, Input; 0 = no cap)."""

    def __init__(self, min_sizes: Sequence[int], max_size: int):
        if not min_sizes or min(min_sizes) < 1:
            raise ValueError(
                f"ResizeShortestEdge needs positive shorter-side sizes; got {list(min_sizes)}."
            )
        self.min_sizes = tuple(int(s) for s in min_sizes)
        self.max_size = int(max_size)

    def get_transform(self, image, rng, dataset_dict) -> Transform:
        height, width = image.shape[:2]
        short = self.min_sizes[0] if len(self.min_sizes) == 1 else int(rng.choice(self.min_sizes))
        new_h, new_w = resize_shortest_edge_shape(height, width, short, self.max_size)
        return ResizeTransform(height, width, new_h, new_w)


class RandomFlip(Augmentation):
    """Mirror left-right with probability ``prob``.

    A dict marked ``"flip": True`` (the flipped copy of flip-by-duplication) is flipped by
    the mapper itself, so this augmentation leaves it alone and draws nothing.
    """

    def __init__(self, prob: float = 0.5):
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"RandomFlip: prob must be in [0, 1]; got {prob}.")
        self.prob = float(prob)

    def get_transform(self, image, rng, dataset_dict) -> Transform | None:
        if dataset_dict.get("flip", False):
            return None
        return HFlipTransform(image.shape[1]) if rng.random() < self.prob else None


class RandomCrop(Augmentation):
    """A random window of the image, of a size given as detectron2's crop types do:

    * ``"relative"``: ``(h * size[0], w * size[1])``;
    * ``"relative_range"``: fractions drawn uniformly in ``[size[0], 1]`` and ``[size[1], 1]``;
    * ``"absolute"``: ``(size[0], size[1])`` pixels (at most the image);
    * ``"absolute_range"``: height in ``[size[0], min(h, size[1])]`` and width in
      ``[size[0], min(w, size[1])]`` pixels, drawn uniformly.

    The window's position is uniform over the image. Boxes cut by the window are clipped;
    those left under 1 px are dropped by the mapper, so a crop can leave an image without
    objects (the losses handle it).
    """

    def __init__(self, crop_type: str, size: Sequence[float]):
        if crop_type not in CROP_TYPES:
            raise ValueError(
                f"INPUT.CROP.TYPE must be one of {list(CROP_TYPES)}; got '{crop_type}'."
            )
        if len(size) != 2 or min(size) <= 0:
            raise ValueError(f"INPUT.CROP.SIZE must be two positive numbers; got {list(size)}.")
        if crop_type.startswith("relative") and max(size) > 1:
            raise ValueError(
                f"INPUT.CROP.SIZE for '{crop_type}' crops holds fractions in (0, 1]; got "
                f"{list(size)}."
            )
        if crop_type == "absolute_range" and size[0] > size[1]:
            raise ValueError(
                f"INPUT.CROP.SIZE for 'absolute_range' is [min, max] pixels; got {list(size)}."
            )
        self.crop_type = crop_type
        self.size = (float(size[0]), float(size[1]))

    def crop_size(self, height: int, width: int, rng: np.random.Generator) -> tuple[int, int]:
        """``(crop_height, crop_width)`` for an image of ``height x width``."""
        a, b = self.size
        if self.crop_type == "relative":
            ch, cw = height * a, width * b
        elif self.crop_type == "relative_range":
            ch, cw = height * rng.uniform(a, 1.0), width * rng.uniform(b, 1.0)
        elif self.crop_type == "absolute":
            ch, cw = a, b
        else:
            ch = rng.integers(min(height, int(a)), min(height, int(b)) + 1)
            cw = rng.integers(min(width, int(a)), min(width, int(b)) + 1)
        return min(height, max(1, int(round(ch)))), min(width, max(1, int(round(cw))))

    def get_transform(self, image, rng, dataset_dict) -> Transform:
        height, width = image.shape[:2]
        ch, cw = self.crop_size(height, width, rng)
        y0 = int(rng.integers(0, height - ch + 1))
        x0 = int(rng.integers(0, width - cw + 1))
        return CropTransform(x0, y0, cw, ch)


class ColorJitter(Augmentation):
    """Random brightness, contrast, saturation and hue, in a random order (as torchvision's
    ``ColorJitter``, but drawn from the mapper's generator so a resume replays it).

    Factors are drawn uniformly in ``[max(0, 1 - r), 1 + r]`` for the first three ranges
    ``r`` and the hue shift in ``[-hue, hue]`` (a fraction of the colour wheel, at most 0.5);
    a range of 0 leaves that property alone.
    """

    def __init__(
        self,
        brightness: float = 0.0,
        contrast: float = 0.0,
        saturation: float = 0.0,
        hue: float = 0.0,
        image_format: str = "BGR",
    ):
        ranges = {"brightness": brightness, "contrast": contrast, "saturation": saturation}
        for name, value in ranges.items():
            if value < 0:
                raise ValueError(f"INPUT.COLOR_JITTER.{name.upper()} must be >= 0; got {value}.")
        if not 0.0 <= hue <= 0.5:
            raise ValueError(f"INPUT.COLOR_JITTER.HUE must be in [0, 0.5]; got {hue}.")
        self.ranges = {**{k: float(v) for k, v in ranges.items()}, "hue": float(hue)}
        self.image_format = image_format

    def get_transform(self, image, rng, dataset_dict) -> Transform | None:
        factors: dict[str, float] = {}
        for name, r in self.ranges.items():
            if r > 0:
                low, high = (-r, r) if name == "hue" else (max(0.0, 1.0 - r), 1.0 + r)
                factors[name] = float(rng.uniform(low, high))
        if not factors:
            return None
        order = [tuple(factors)[i] for i in rng.permutation(len(factors))]
        return ColorTransform(factors, order, self.image_format)


def default_augmentations(
    min_sizes: Sequence[int],
    max_size: int,
    random_flip: bool,
    crop: tuple[str, Sequence[float]] | None = None,
    color_jitter: dict[str, float] | None = None,
    image_format: str = "BGR",
) -> list[Augmentation]:
    """The list of the module docstring from plain settings (``DatasetMapper``'s)."""
    augmentations: list[Augmentation] = []
    if crop is not None:
        augmentations.append(RandomCrop(*crop))
    augmentations.append(ResizeShortestEdge(min_sizes, max_size))
    if random_flip:
        augmentations.append(RandomFlip())
    if color_jitter and any(v > 0 for v in color_jitter.values()):
        augmentations.append(ColorJitter(**color_jitter, image_format=image_format))
    return augmentations


def augmentation_settings(cfg: Any, is_train: bool) -> dict[str, Any]:
    """The mapper settings a config gives (INPUT.*): sizes, flip, crop, colour jitter."""
    if cfg.INPUT.RANDOM_FLIP not in ("horizontal", "none"):
        raise ValueError(
            f"INPUT.RANDOM_FLIP must be 'horizontal' or 'none'; got '{cfg.INPUT.RANDOM_FLIP}'."
        )
    if is_train:
        min_sizes, max_size = list(cfg.INPUT.MIN_SIZE_TRAIN), cfg.INPUT.MAX_SIZE_TRAIN
    else:
        min_sizes, max_size = [cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST
    jitter = cfg.INPUT.COLOR_JITTER
    return {
        "min_sizes": min_sizes,
        "max_size": max_size,
        # Duplication already supplies each image flipped once (PAPER.md choice 7).
        "random_flip": is_train
        and cfg.INPUT.RANDOM_FLIP == "horizontal"
        and not cfg.INPUT.FLIP_BY_DUPLICATION,
        "crop": (cfg.INPUT.CROP.TYPE, list(cfg.INPUT.CROP.SIZE))
        if is_train and cfg.INPUT.CROP.ENABLED
        else None,
        "color_jitter": {
            "brightness": jitter.BRIGHTNESS,
            "contrast": jitter.CONTRAST,
            "saturation": jitter.SATURATION,
            "hue": jitter.HUE,
        }
        if is_train
        else None,
    }


def build_augmentations(cfg: Any, is_train: bool) -> list[Augmentation]:
    """The augmentations ``cfg`` selects for training (``is_train``) or test, in the order
    of the module docstring. Extend the list and pass it to ``DatasetMapper`` to add yours."""
    settings = augmentation_settings(cfg, is_train)
    return default_augmentations(**settings, image_format=cfg.INPUT.FORMAT)
