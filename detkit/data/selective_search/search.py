"""Selective Search on one image (OpenCV's contrib implementation): boxes in its ranking.

See the package docstring for speed and ranking.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
from importlib import metadata
from typing import Any

import cv2
import numpy as np

__all__ = [
    "DEFAULT_MIN_SIZE",
    "SELECTIVE_SEARCH_MODES",
    "check_options",
    "rects_to_boxes",
    "remove_duplicate_boxes",
    "require_selective_search",
    "selective_search",
]

logger = logging.getLogger(__name__)

SELECTIVE_SEARCH_MODES = ("fast", "quality", "single")
# The released py-faster-rcnn drops SS boxes narrower or lower than 2 px (pascal_voc.py,
# config "min_size": 2) before Fast R-CNN sees them.
DEFAULT_MIN_SIZE = 2.0
_CV2_DISTRIBUTIONS = (
    "opencv-python-headless",
    "opencv-python",
    "opencv-contrib-python-headless",
    "opencv-contrib-python",
)


def _cv2_distributions() -> dict[str, str]:
    """Installed pip distributions that provide ``cv2`` -> their versions."""
    found = {}
    for name in _CV2_DISTRIBUTIONS:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def _missing_extra_message() -> str:
    installed = _cv2_distributions()
    version = installed.get("opencv-python-headless") or next(iter(installed.values()), None)
    # cv2.__version__ lacks the wheel's build number (5.0.0 vs 5.0.0.93): "==5.0.0.*" matches.
    pin = f"=={version}" if version else f"=={cv2.__version__}.*"
    reinstall = f'pip install --force-reinstall --no-deps "opencv-contrib-python-headless{pin}"'
    found = ", ".join(f"{k} {v}" for k, v in installed.items()) or "no pip distribution found"
    lines = [
        f"Selective search needs OpenCV's contrib module cv2.ximgproc, which the installed "
        f"OpenCV lacks (cv2 {cv2.__version__} at {os.path.dirname(cv2.__file__ or '')}; "
        f"installed: {found}).",
        'Install detkit\'s extra: pip install -e ".[selective-search]" (from the detkit '
        f'checkout), i.e. pip install "opencv-contrib-python-headless{pin}", the same version '
        "as the installed cv2.",
        "opencv-python-headless and opencv-contrib-python-headless ship the same cv2 package "
        "(the contrib build is a superset) and the one installed last wins, so if both are "
        f"installed and cv2.ximgproc is still missing, run: {reinstall}",
    ]
    contrib = [k for k in installed if "contrib" in k]
    if contrib:
        lines[0] += (
            f" {contrib[0]} is installed, but another OpenCV build was installed over it (see "
            "the last line)."
        )
    return "\n".join(lines)


def require_selective_search() -> Any:
    """``cv2.ximgproc.segmentation``, the module with OpenCV's Selective Search.

    Raises:
        ImportError: the installed OpenCV has no contrib modules; the message says what to
            install. (A leftover ``cv2/ximgproc`` folder of type stubs makes ``cv2.ximgproc``
            importable without the code, so the function itself is looked up.)
    """
    segmentation = getattr(getattr(cv2, "ximgproc", None), "segmentation", None)
    if not hasattr(segmentation, "createSelectiveSearchSegmentation"):
        raise ImportError(_missing_extra_message())
    return segmentation


def rects_to_boxes(rects: np.ndarray) -> np.ndarray:
    """OpenCV rects ``[R, 4]`` (x, y, w, h) -> float32 ``[R, 4]`` XYXY (x, y, x + w, y + h).

    A rect is the bounding box of a segment's pixels (columns x .. x + w - 1), so the XYXY box
    is in continuous pixel coordinates, as detkit's annotations and proposals are.
    """
    rects = np.asarray(rects, dtype=np.float32).reshape(-1, 4)
    return np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1)


def remove_duplicate_boxes(boxes: np.ndarray) -> np.ndarray:
    """Indices ``[K]`` (increasing) of the first occurrence of each distinct row of ``boxes``
    ``[P, 4]``: ``boxes[keep]`` drops exact repeats and keeps the order."""
    boxes = np.ascontiguousarray(np.asarray(boxes, dtype=np.float32).reshape(-1, 4))
    _, first = np.unique(boxes, axis=0, return_index=True)
    return np.sort(first)


@functools.lru_cache(maxsize=1)
def _c_library() -> Any:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c"))
    except (OSError, TypeError):  # no C library under that name (e.g. on Windows)
        return None


def _seed_c_rand(seed: int) -> None:
    """Seed the C library's ``rand()``, which OpenCV's SS ranking draws from (best effort:
    where it cannot be reached, the box order varies from run to run)."""
    srand = getattr(_c_library(), "srand", None)
    if srand is not None:
        srand(ctypes.c_uint(seed))


def _opencv_selective_search(image_bgr: np.ndarray, mode: str, seed: int | None) -> np.ndarray:
    """OpenCV's rects ``[R, 4]`` (x, y, w, h) of ``image_bgr``, in SS's ranking order."""
    segmentation = require_selective_search().createSelectiveSearchSegmentation()
    segmentation.setBaseImage(image_bgr)
    if mode == "fast":
        segmentation.switchToSelectiveSearchFast()
    elif mode == "quality":
        segmentation.switchToSelectiveSearchQuality()
    else:
        segmentation.switchToSingleStrategy()
    if seed is not None:
        _seed_c_rand(seed)
    rects = segmentation.process()
    return np.asarray(rects, dtype=np.int64).reshape(-1, 4)


def check_options(mode: str, max_proposals: int, min_size: float, resize_to: int | None) -> None:
    """Raise ValueError, saying what is allowed, for a bad mode, count, size or resize."""
    if mode not in SELECTIVE_SEARCH_MODES:
        raise ValueError(
            f"Selective search mode must be one of {', '.join(SELECTIVE_SEARCH_MODES)}; got "
            f"{mode!r}."
        )
    if int(max_proposals) < 1:
        raise ValueError(f"max_proposals must be at least 1; got {max_proposals}.")
    if not min_size >= 0:
        raise ValueError(f"min_size must be >= 0 pixels; got {min_size}.")
    if resize_to is not None and int(resize_to) < 1:
        raise ValueError(
            f"resize_to must be a positive shorter-side length in pixels, or None; got {resize_to}."
        )


def selective_search(
    image_bgr: np.ndarray,
    *,
    mode: str = "fast",
    max_proposals: int = 2000,
    min_size: float = DEFAULT_MIN_SIZE,
    resize_to: int | None = None,
    seed: int | None = 0,
) -> np.ndarray:
    """Selective Search boxes of one image, in SS's own ranking order.

    Args:
        image_bgr: uint8 ``[H, W, 3]``, BGR (as :func:`detkit.data.read_image` gives).
        mode: "fast" (the paper's and Fast R-CNN's setting: HSV and Lab, k = 150, 300, 450,
            two strategies), "quality" (five colour spaces, five k: ~4x slower, more boxes)
            or "single" (HSV, k = 200, one strategy: fastest, fewest boxes).
        max_proposals: keep at most this many boxes (the first ones in SS's order).
        min_size: drop boxes narrower or lower than this, in original-image pixels (default 2,
            as the released py-faster-rcnn does with SS boxes).
        resize_to: resize the image so that its shorter side is this long before SS (down or
            up), and scale the boxes back; None runs SS on the original size. SS time grows
            roughly with the pixel count, and smaller images give fewer, coarser boxes.
        seed: seeds the C ``rand()`` that OpenCV draws its ranking from, so the same image
            gives the same order; None leaves it alone.

    Returns:
        float32 ``[P, 4]`` XYXY boxes in continuous original-image pixels, ``P <=
        max_proposals``; a rect (x, y, w, h) becomes (x, y, x + w, y + h). Exact duplicates
        (after scaling back) are removed, keeping the first.

    Raises:
        ImportError: OpenCV's contrib modules are not installed (the message says how).
        ValueError: a bad argument or image.
    """
    check_options(mode, max_proposals, min_size, resize_to)
    image_bgr = np.asarray(image_bgr)
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8:
        raise ValueError(
            f"selective_search needs a uint8 [H, W, 3] BGR image; got {image_bgr.dtype} "
            f"{list(image_bgr.shape)}."
        )
    height, width = image_bgr.shape[:2]
    if height < 1 or width < 1:
        raise ValueError(f"selective_search got an empty image ({height}x{width}).")
    scale_x = scale_y = 1.0
    if resize_to is not None and int(resize_to) != min(height, width):
        factor = int(resize_to) / min(height, width)
        new_w, new_h = max(1, round(width * factor)), max(1, round(height * factor))
        interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
        image_bgr = cv2.resize(image_bgr, (new_w, new_h), interpolation=interpolation)
        # Per-axis factors from the rounded size, so a full-image rect maps to the full image.
        scale_x, scale_y = width / new_w, height / new_h
    boxes = rects_to_boxes(_opencv_selective_search(np.ascontiguousarray(image_bgr), mode, seed))
    if scale_x != 1.0 or scale_y != 1.0:
        boxes = boxes * np.array([scale_x, scale_y, scale_x, scale_y], dtype=np.float32)
        np.clip(boxes[:, 0::2], 0, width, out=boxes[:, 0::2])
        np.clip(boxes[:, 1::2], 0, height, out=boxes[:, 1::2])
    sizes = boxes[:, 2:] - boxes[:, :2]
    boxes = boxes[(sizes >= min_size).all(axis=1)]
    boxes = boxes[remove_duplicate_boxes(boxes)]
    return np.ascontiguousarray(boxes[: int(max_proposals)], dtype=np.float32)
