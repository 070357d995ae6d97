"""The built-in ``shapes`` dataset: a deterministic, synthetic, PASCAL VOC-layout dataset.

Written once (on first use) and then read through the same VOC loader as real data, so the
quickstart exercises the whole pipeline with no download. It is meant to be a fair test, not
an easy one:

* classes circle, square, triangle; filled shapes of random colour, 16-96 px across (the
  diameter of the circle each shape is inscribed in, 16-95, rasterizes to at most 96 px),
  squares and triangles rotated at random; each box is the tight box of the pixels the
  shape covers (the whole shape, also where a later object hides part of it);
* 0-5 objects per image (about 10% of images have none); any two boxes overlap with
  IoU <= 0.3 (rejection sampling), and every object keeps >= 60% of its pixels visible;
* images 256 px on the short side, 256-384 px on the long side, landscape or portrait;
* backgrounds: a two-colour linear gradient, distractor strokes (lines and arcs that are
  not objects), Gaussian pixel noise; objects keep a minimum colour contrast to the
  background so that a person can always see them;
* ``difficult`` on objects whose box is under 16 px on a side: small rotated squares and
  triangles (a 16 px square has a 11.3 px side) and shapes cut by the image border (~15%
  of objects may cross it). That is the size below which the paper's proposal filter drops
  boxes (PAPER.md, RPN); the VOC evaluator ignores them and training skips them.

Images are JPEG (``JPEGImages/<id>.jpg``), as in VOC: the layout and the loader are the real
ones, and files are ~10x smaller than PNG for noisy images. JPEG changes pixel values
slightly at edges but never the boxes, which come from the drawn masks.

Every image comes from its own generator seeded with ``(seed, split, index)``, so images do
not depend on how many others are generated, and the same seed gives identical files.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile

import cv2
import numpy as np

from detkit.utils.progress import Progress

__all__ = ["SHAPE_CLASSES", "generate_shapes", "render_shapes_image"]

logger = logging.getLogger(__name__)

SHAPE_CLASSES = ("circle", "square", "triangle")
SHORT_SIDE = 256  # image short side, px
LONG_SIDE_RANGE = (256, 384)  # image long side, px (inclusive)
OBJECT_SIZE_RANGE = (16.0, 95.0)  # circumcircle diameter, px (rasterized boxes are <= 96)
NUM_OBJECTS_PROBS = (0.10, 0.18, 0.18, 0.18, 0.18, 0.18)  # P(0 objects) ... P(5 objects)
MAX_IOU = 0.3  # maximum IoU between two objects' boxes of one image
MIN_VISIBLE_FRACTION = 0.6  # each object keeps this fraction of its pixels unoccluded
DIFFICULT_BELOW = 16  # boxes with a side under this many px are marked difficult
TRUNCATION_PROB = 0.15  # chance that an object's centre may lie anywhere (border crossing)
MIN_CONTRAST = 60.0  # min L2 distance (0-255 RGB) of an object's colour to the background
_FORMAT_VERSION = 1  # bump when the generated content changes
_SHIFT = 4  # cv2 drawing with 4 fractional bits: sub-pixel shape positions


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A linear gradient between two random colours, at a random angle: float32 [H, W, 3]."""
    c0, c1 = rng.uniform(0, 255, size=(2, 3))
    angle = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    t = xs * math.cos(angle) + ys * math.sin(angle)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    return (c0 + (c1 - c0) * t[..., None]).astype(np.float32)


def _draw_strokes(rng: np.random.Generator, image: np.ndarray, count: int, max_thickness: int):
    """Distractors: open lines and arcs (never closed or filled, so never a class)."""
    height, width = image.shape[:2]
    for _ in range(count):
        color = tuple(float(c) for c in rng.uniform(0, 255, size=3))
        thickness = int(rng.integers(1, max_thickness + 1))
        if rng.random() < 0.5:
            p1 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            p2 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            cv2.line(image, p1, p2, color, thickness, cv2.LINE_AA)
        else:
            center = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            axes = (int(rng.integers(10, 90)), int(rng.integers(10, 90)))
            start = float(rng.uniform(0, 360))
            sweep = float(rng.uniform(60, 240))  # an open arc: never a full ellipse
            cv2.ellipse(image, center, axes, float(rng.uniform(0, 180)), start, start + sweep,
                        color, thickness, cv2.LINE_AA)


def _shape_mask(class_id: int, cx: float, cy: float, size: float, angle: float,
                height: int, width: int) -> np.ndarray:
    """uint8 [H, W] mask (1 inside) of one filled shape inscribed in a circle of diameter size."""
    mask = np.zeros((height, width), np.uint8)
    scale = 1 << _SHIFT
    if SHAPE_CLASSES[class_id] == "circle":
        center = (round(cx * scale), round(cy * scale))
        cv2.circle(mask, center, round(size / 2 * scale), 1, -1, cv2.LINE_8, _SHIFT)
        return mask
    corners = 4 if SHAPE_CLASSES[class_id] == "square" else 3
    theta = angle + np.arange(corners) * (2 * math.pi / corners)
    points = np.stack([cx + size / 2 * np.cos(theta), cy + size / 2 * np.sin(theta)], axis=1)
    cv2.fillPoly(mask, [np.round(points * scale).astype(np.int32)], 1, cv2.LINE_8, _SHIFT)
    return mask


def _box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one XYXY box [4] with boxes [N, 4] (continuous coordinates)."""
    lt = np.maximum(box[:2], boxes[:, :2])
    rb = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    area = np.prod(box[2:] - box[:2])
    areas = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
    return inter / (area + areas - inter)


def render_shapes_image(rng: np.random.Generator) -> tuple[np.ndarray, list[dict]]:
    """Draw one image.

    Returns:
        ``(image, objects)``: a BGR uint8 image [H, W, 3] and, per object, ``{"name",
        "box": [x1, y1, x2, y2] (0-based continuous, tight), "difficult", "truncated"}``.
    """
    long_side = int(rng.integers(LONG_SIDE_RANGE[0], LONG_SIDE_RANGE[1] + 1))
    height, width = (SHORT_SIDE, long_side) if rng.random() < 0.5 else (long_side, SHORT_SIDE)
    background = _background(rng, height, width)
    image = background.copy()
    _draw_strokes(rng, image, count=int(rng.integers(1, 7)), max_thickness=3)

    owner = np.full((height, width), -1, np.int16)  # index of the object on top of each pixel
    objects: list[dict] = []
    boxes = np.zeros((0, 4))
    areas: list[int] = []
    num_objects = int(rng.choice(len(NUM_OBJECTS_PROBS), p=NUM_OBJECTS_PROBS))
    for _ in range(num_objects):
        for _attempt in range(30):  # rejection sampling; give the object up if nothing fits
            class_id = int(rng.integers(len(SHAPE_CLASSES)))
            size = float(rng.uniform(*OBJECT_SIZE_RANGE))
            margin = 0.0 if rng.random() < TRUNCATION_PROB else size / 2
            cx = float(rng.uniform(margin, width - margin))
            cy = float(rng.uniform(margin, height - margin))
            mask = _shape_mask(class_id, cx, cy, size, float(rng.uniform(0, 2 * math.pi)),
                               height, width)
            rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
            if len(rows) < 4 or len(cols) < 4:  # a sliver: not an object anyone could see
                continue
            box = np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], np.float64)
            if len(boxes) and _box_iou(box, boxes).max() > MAX_IOU:
                continue
            covered = np.bincount(owner[mask.astype(bool)] + 1, minlength=len(areas) + 1)[1:]
            visible = np.bincount(owner.ravel() + 1, minlength=len(areas) + 1)[1:]
            if np.any(visible - covered < MIN_VISIBLE_FRACTION * np.asarray(areas, int)):
                continue
            color = rng.uniform(0, 255, size=3)
            local = background[int((box[1] + box[3]) / 2), int((box[0] + box[2]) / 2)]
            for _retry in range(10):  # a colour a person can tell from the background
                if np.linalg.norm(color - local) >= MIN_CONTRAST:
                    break
                color = rng.uniform(0, 255, size=3)
            inside = mask.astype(bool)
            image[inside] = color
            owner[inside] = len(objects)
            boxes = np.concatenate([boxes, box[None]])
            areas.append(int(inside.sum()))
            truncated = cols[0] == 0 or rows[0] == 0 or cols[-1] == width - 1 or (
                rows[-1] == height - 1
            )
            objects.append({
                "name": SHAPE_CLASSES[class_id], "box": [int(v) for v in box],
                "difficult": bool(min(box[2] - box[0], box[3] - box[1]) < DIFFICULT_BELOW),
                "truncated": bool(truncated),
            })
            break

    if rng.random() < 0.25:  # a thin stroke over everything: objects are not always pristine
        _draw_strokes(rng, image, count=1, max_thickness=1)
    image += rng.normal(0.0, rng.uniform(3.0, 12.0), size=image.shape).astype(np.float32)
    return np.clip(image, 0, 255).round().astype(np.uint8), objects


def _annotation_xml(image_id: str, height: int, width: int, objects: list[dict]) -> str:
    """A VOC annotation: boxes as 1-based inclusive pixel indices (xmin = x1 + 1, xmax = x2)."""
    parts = [
        "<annotation>\n  <folder>shapes</folder>\n",
        f"  <filename>{image_id}.jpg</filename>\n",
        f"  <size><width>{width}</width><height>{height}</height><depth>3</depth></size>\n",
    ]
    for obj in objects:
        x1, y1, x2, y2 = obj["box"]
        parts.append(
            f"  <object><name>{obj['name']}</name><pose>Unspecified</pose>"
            f"<truncated>{int(obj['truncated'])}</truncated>"
            f"<difficult>{int(obj['difficult'])}</difficult>"
            f"<bndbox><xmin>{x1 + 1}</xmin><ymin>{y1 + 1}</ymin><xmax>{x2}</xmax>"
            f"<ymax>{y2}</ymax></bndbox></object>\n"
        )
    parts.append("</annotation>\n")
    return "".join(parts)


def _write_image(root: str, image_id: str, rng: np.random.Generator) -> None:
    image, objects = render_shapes_image(rng)
    jpg = os.path.join(root, "JPEGImages", f"{image_id}.jpg")
    if not cv2.imwrite(jpg, image, [cv2.IMWRITE_JPEG_QUALITY, 95]):
        raise OSError(f"Could not write {jpg} (disk full or not writable?).")
    xml = _annotation_xml(image_id, image.shape[0], image.shape[1], objects)
    with open(os.path.join(root, "Annotations", f"{image_id}.xml"), "w", encoding="utf-8") as f:
        f.write(xml)


def _is_complete(root: str) -> bool:
    return all(
        os.path.isfile(os.path.join(root, "ImageSets", "Main", f"{split}.txt"))
        for split in ("train", "test")
    )


def generate_shapes(
    root: str, num_train: int = 2000, num_test: int = 300, seed: int = 0, progress: bool = True
) -> str:
    """Write the shapes dataset to ``root`` in the VOC layout, unless it is already there.

    The dataset is written to a temporary sibling directory and renamed to ``root`` at the
    end, so an interrupted run never leaves a partial dataset that looks complete.

    Args:
        root: the dataset directory to create (e.g. ``$DETKIT_DATASETS/shapes``); it gets
            ``JPEGImages/``, ``Annotations/``, ``ImageSets/Main/{train,test}.txt``.
        num_train: training images (ids ``train_000000`` ...).
        num_test: test images (ids ``test_000000`` ...).
        seed: the same seed gives byte-identical files.
        progress: show a tqdm progress bar.

    Returns:
        ``root``.
    """
    requested = {"version": _FORMAT_VERSION, "seed": seed, "num_train": num_train,
                 "num_test": num_test, "classes": list(SHAPE_CLASSES)}
    if os.path.exists(root):
        if not _is_complete(root):
            raise FileExistsError(
                f"{root} exists but is not a complete shapes dataset (no "
                "ImageSets/Main/train.txt and test.txt). Delete it to have it regenerated."
            )
        info_file = os.path.join(root, "shapes_info.json")
        if os.path.isfile(info_file):
            with open(info_file, encoding="utf-8") as f:
                existing = json.load(f)
            if existing != requested:
                logger.warning("Using the existing shapes dataset in %s, made with %s (asked "
                               "for %s). Delete it to regenerate.", root, existing, requested)
        return root

    parent = os.path.dirname(os.path.abspath(root))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(root)}-incomplete-", dir=parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the dataset is not
        for sub in ("JPEGImages", "Annotations", os.path.join("ImageSets", "Main")):
            os.makedirs(os.path.join(tmp, sub))
        logger.info("Generating the shapes dataset (%d train, %d test images) in %s",
                    num_train, num_test, root)
        bar = Progress(num_train + num_test, "Generating shapes", "img", logger,
                       enabled=progress, period=10.0)
        try:
            for split_code, split, count in ((0, "train", num_train), (1, "test", num_test)):
                ids = [f"{split}_{i:06d}" for i in range(count)]
                for i, image_id in enumerate(ids):
                    _write_image(tmp, image_id, np.random.default_rng([seed, split_code, i]))
                    bar.update(1)
                with open(os.path.join(tmp, "ImageSets", "Main", f"{split}.txt"), "w") as f:
                    f.write("".join(f"{image_id}\n" for image_id in ids))
        finally:
            bar.close()
        with open(os.path.join(tmp, "shapes_info.json"), "w", encoding="utf-8") as f:
            json.dump(requested, f)
        try:
            os.rename(tmp, root)  # atomic: root appears complete or not at all
        except OSError:
            if not _is_complete(root):  # not another process that finished first
                raise
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return root
