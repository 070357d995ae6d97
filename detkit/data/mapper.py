"""``DatasetMapper``: one dataset dict -> one model input (image tensor + ground truth)."""

from __future__ import annotations

import logging
import os
from typing import Any

import cv2
import numpy as np
import torch

from detkit.config import CfgNode
from detkit.data.augmentation import Augmentation, augmentation_settings, default_augmentations
from detkit.data.image_file import ImageFileError, load_image_file
from detkit.data.transforms import HFlipTransform, Transform, clip_boxes, nondegenerate
from detkit.structures import Boxes, Instances

__all__ = ["DatasetMapper", "read_image"]

logger = logging.getLogger(__name__)

# Keys of precomputed proposals in a dataset dict (attach_precomputed_proposals).
_PROPOSAL_KEYS = ("proposal_boxes", "proposal_objectness_logits")


def read_image(file_name: str, image_format: str = "BGR", image_id: Any = None) -> np.ndarray:
    """Read an image with OpenCV as uint8 [H, W, 3] in ``image_format`` channel order.

    Grayscale images get three equal channels, an alpha channel is dropped, and 16-bit images
    are scaled to 8 bits (x / 257, so 65535 -> 255). EXIF orientation is not applied (the
    stored pixel grid is the one annotations refer to). A JPEG or PNG that ends early is
    refused, not decoded with grey rows (:func:`detkit.data.image_file.load_image_file`).

    Raises:
        FileNotFoundError: naming the file and ``image_id`` when the file is missing.
        ImageFileError (a ValueError): naming them when the file is empty, truncated, cannot
            be decoded, or has an unsupported pixel type or channel count.
    """
    image = load_image_file(file_name, image_id)
    if image.dtype == np.uint16:
        image = np.round(image / 257.0).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ImageFileError(
            file_name,
            image_id,
            "unsupported",
            f"has pixel type {image.dtype}; detkit reads 8- or 16-bit images",
        )
    if image.ndim == 2 or image.shape[2] == 1:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    elif image.shape[2] != 3:
        raise ImageFileError(
            file_name,
            image_id,
            "unsupported",
            f"has {image.shape[2]} channels; detkit reads 1, 3 or 4",
        )
    if image_format == "RGB":
        image = image[:, :, ::-1]
    elif image_format != "BGR":
        raise ValueError(f"INPUT.FORMAT must be 'BGR' or 'RGB'; got '{image_format}'.")
    return np.ascontiguousarray(image)


class DatasetMapper:
    """Reads and augments one image and its boxes into the model's input format.

    Built from a config, ``DatasetMapper(cfg, is_train)`` (the usual way), or by hand with
    keyword settings (``DatasetMapper(is_train=False, min_sizes=[256], max_size=512)``);
    keywords override the config's values. Settings:

    * ``image_format``: "BGR" or "RGB" (INPUT.FORMAT).
    * ``min_sizes``: shorter-side lengths; training picks one at random per image
      (INPUT.MIN_SIZE_TRAIN; test: [INPUT.MIN_SIZE_TEST]).
    * ``max_size``: cap on the longer side (INPUT.MAX_SIZE_TRAIN / MAX_SIZE_TEST).
    * ``random_flip``: flip with p = 0.5 per sample (INPUT.RANDOM_FLIP "horizontal", training,
      unless INPUT.FLIP_BY_DUPLICATION). A dict with ``"flip": True`` is always flipped.
    * ``crop``: ``(type, size)`` of a random crop before the resize (INPUT.CROP, training),
      or None.
    * ``color_jitter``: ``{"brightness", "contrast", "saturation", "hue"}`` ranges
      (INPUT.COLOR_JITTER, training), or None.
    * ``augmentations``: a list of :class:`~detkit.data.augmentation.Augmentation` used
      instead of the one the settings above give (``build_augmentations(cfg, is_train)``
      returns that one, to extend).
    * ``legacy_plus_one``: give boxes in the released code's pixel-index convention
      (x2 -= 1, y2 -= 1) for models using ``x2 - x1 + 1`` widths (MODEL.LEGACY_PLUS_ONE).

    Training drops ``difficult`` and crowd objects (PAPER.md, Input) and boxes that become
    smaller than 1 px after the transforms; the number dropped is in the output's
    ``"num_degenerate_boxes"`` and summed in ``self.num_degenerate_boxes`` (this process).
    Randomness comes from a NumPy generator seeded with ``torch.initial_seed()`` in each
    process, i.e. per data-loader worker, so runs with a fixed seed repeat exactly.
    """

    _DEFAULTS: dict[str, Any] = {
        "image_format": "BGR",
        "min_sizes": (600,),
        "max_size": 1000,
        "random_flip": False,
        "crop": None,
        "color_jitter": None,
        "augmentations": None,
        "legacy_plus_one": False,
    }

    def __init__(self, cfg: Any = None, is_train: bool = True, **settings: Any):
        unknown = sorted(set(settings) - set(self._DEFAULTS))
        if unknown:
            raise TypeError(
                f"DatasetMapper got unknown settings {unknown}; known: {sorted(self._DEFAULTS)}."
            )
        values = dict(self._DEFAULTS)
        if cfg is not None:
            values.update(self.from_config(cfg, is_train))
        values.update(settings)
        self.is_train = is_train
        self.image_format = values["image_format"]
        self.min_sizes = tuple(int(s) for s in values["min_sizes"])
        self.max_size = int(values["max_size"])
        self.random_flip = bool(values["random_flip"])
        self.legacy_plus_one = bool(values["legacy_plus_one"])
        if self.image_format not in ("BGR", "RGB"):
            raise ValueError(f"INPUT.FORMAT must be 'BGR' or 'RGB'; got '{self.image_format}'.")
        if not self.min_sizes:
            raise ValueError("DatasetMapper needs at least one shorter-side size (min_sizes).")
        if values["augmentations"] is not None:
            self.augmentations: list[Augmentation] = list(values["augmentations"])
        else:
            self.augmentations = default_augmentations(
                self.min_sizes,
                self.max_size,
                self.random_flip,
                values["crop"],
                values["color_jitter"],
                self.image_format,
            )
        self.num_degenerate_boxes = 0
        self._rng: np.random.Generator | None = None
        self._rng_pid = -1

    @classmethod
    def from_config(cls, cfg: CfgNode, is_train: bool) -> dict[str, Any]:
        """The mapper settings ``cfg`` gives for training (``is_train``) or test.

        Reads ``INPUT.FORMAT``, the augmentation keys of ``INPUT`` (``MIN_SIZE_TRAIN`` /
        ``MAX_SIZE_TRAIN`` or ``MIN_SIZE_TEST`` / ``MAX_SIZE_TEST``, ``RANDOM_FLIP``,
        ``FLIP_BY_DUPLICATION``, ``CROP``, ``COLOR_JITTER``) and ``MODEL.LEGACY_PLUS_ONE``.
        """
        return {
            "image_format": cfg.INPUT.FORMAT,
            **augmentation_settings(cfg, is_train),
            "legacy_plus_one": cfg.MODEL.LEGACY_PLUS_ONE,
        }

    def _get_rng(self) -> np.random.Generator:
        # One generator per process: a forked worker must not reuse the parent's stream.
        if self._rng is None or self._rng_pid != os.getpid():
            self._rng = np.random.default_rng(torch.initial_seed())
            self._rng_pid = os.getpid()
        return self._rng

    def __call__(self, dataset_dict: dict) -> dict:
        """Map one dataset dict.

        Returns:
            The dict's keys (without ``annotations``) plus ``"image"``: float32 Tensor[3, H, W]
            (0-255, ``image_format`` order, resized) and, in training, ``"instances"``:
            ``Instances((H, W), gt_boxes=Boxes [N, 4], gt_classes=int64 Tensor[N])`` and
            ``"num_degenerate_boxes"``. ``"height"`` / ``"width"`` stay the original size.
            A dict with precomputed proposals (``"proposal_boxes"``, see
            :func:`detkit.data.attach_precomputed_proposals`) also gives ``"proposals"``:
            ``Instances((H, W), proposal_boxes, objectness_logits)`` moved with the image.
        """
        image_id = dataset_dict.get("image_id")
        image = read_image(dataset_dict["file_name"], self.image_format, image_id)
        height, width = image.shape[:2]
        expected = (dataset_dict.get("height", height), dataset_dict.get("width", width))
        if (height, width) != expected:
            raise ValueError(
                f"Image {dataset_dict['file_name']} (image_id {image_id!r}) is {height}x{width} "
                f"pixels, but its dataset dict says {expected[0]}x{expected[1]}. Fix the "
                "annotation's size (or the image)."
            )
        # A seed placed by the training loader makes the random choices replayable on resume.
        aug_seed = dataset_dict.get("aug_seed")
        rng = np.random.default_rng(aug_seed) if aug_seed is not None else self._get_rng()
        image, transforms = self._augment(image, rng, dataset_dict)
        new_h, new_w = image.shape[:2]

        # PAPER.md, Input: difficult objects are excluded from training; so are crowd ones.
        # At test time the evaluator reads the ground truth from the dataset, not from here.
        annotations = [
            a
            for a in dataset_dict.get("annotations", [])
            if self.is_train and not a.get("difficult", False) and not a.get("iscrowd", 0)
        ]
        boxes = np.array([a["bbox"] for a in annotations], dtype=np.float32).reshape(-1, 4)
        for t in transforms:
            boxes = t.apply_boxes(boxes)

        dropped = ("annotations", "aug_seed", *_PROPOSAL_KEYS)
        out = {k: v for k, v in dataset_dict.items() if k not in dropped}
        out["height"], out["width"] = height, width
        out["image"] = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float()
        if "proposal_boxes" in dataset_dict:
            out["proposals"] = self._proposals(dataset_dict, transforms, (new_h, new_w))
        if self.is_train:
            classes = np.array([a["category_id"] for a in annotations], dtype=np.int64)
            out["instances"], out["num_degenerate_boxes"] = self._instances(
                boxes, classes, (new_h, new_w), dataset_dict
            )
        return out

    def _augment(
        self, image: np.ndarray, rng: np.random.Generator, dataset_dict: dict
    ) -> tuple[np.ndarray, list[Transform]]:
        """The image after every augmentation, and the transforms drawn (for the boxes).

        A dict marked ``"flip": True`` is mirrored after them (flip-by-duplication's copy).
        """
        transforms: list[Transform] = []
        for augmentation in self.augmentations:
            transform = augmentation.get_transform(image, rng, dataset_dict)
            if transform is not None:
                image = transform.apply_image(image)
                transforms.append(transform)
        if dataset_dict.get("flip", False):
            transforms.append(HFlipTransform(image.shape[1]))
            image = transforms[-1].apply_image(image)
        return image, transforms

    def _proposals(self, source: dict, transforms: list, image_size: tuple[int, int]) -> Instances:
        """The dict's precomputed proposals (original-image pixels, continuous) moved with the
        image: resized, flipped, clipped, without boxes left empty; in the model's width
        convention, in decreasing objectness."""
        boxes = np.asarray(source["proposal_boxes"], dtype=np.float32).reshape(-1, 4)
        logits = np.asarray(
            source.get("proposal_objectness_logits", np.zeros(len(boxes))), dtype=np.float32
        ).reshape(-1)
        if len(logits) != len(boxes):
            raise ValueError(
                f"{source.get('file_name')} (image_id {source.get('image_id')!r}) has "
                f"{len(boxes)} proposal boxes but {len(logits)} objectness values."
            )
        for t in transforms:
            boxes = t.apply_boxes(boxes)
        boxes = clip_boxes(boxes, *image_size)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, logits = boxes[keep], logits[keep]
        order = np.argsort(-logits, kind="stable")
        boxes, logits = boxes[order], logits[order]
        if self.legacy_plus_one:
            boxes = boxes - np.array([0, 0, 1, 1], dtype=boxes.dtype)
        return Instances(
            image_size,
            proposal_boxes=Boxes(torch.from_numpy(boxes), legacy_plus_one=self.legacy_plus_one),
            objectness_logits=torch.from_numpy(logits),
        )

    def _instances(
        self, boxes: np.ndarray, classes: np.ndarray, image_size: tuple[int, int], source: dict
    ) -> tuple[Instances, int]:
        boxes = clip_boxes(boxes, *image_size)
        keep = nondegenerate(boxes, min_size=1.0)
        num_dropped = int((~keep).sum())
        if num_dropped:
            self.num_degenerate_boxes += num_dropped
            logger.debug(
                "%s (image_id %r): dropped %d boxes smaller than 1 px after resize, flip and clip.",
                source.get("file_name"),
                source.get("image_id"),
                num_dropped,
            )
        boxes, classes = boxes[keep], classes[keep]
        if self.legacy_plus_one:
            # Continuous [x1, x2) -> last covered pixel index x2 - 1 (the code's convention).
            boxes = boxes - np.array([0, 0, 1, 1], dtype=boxes.dtype)
        instances = Instances(
            image_size,
            gt_boxes=Boxes(torch.from_numpy(boxes), legacy_plus_one=self.legacy_plus_one),
            gt_classes=torch.from_numpy(classes),
        )
        return instances, num_dropped
