"""Drawing detections and ground truth on images with OpenCV.

Labels ("class score") are placed so that none hides another: each goes to the first free
spot among above, below and inside its box, else to the free spot nearest its box, and always
inside the image (:func:`place_labels`). Pictures with ground truth put it beside the
predictions: left panel ground truth, right panel predictions (:func:`side_by_side`).
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import cv2
import numpy as np

from detkit.structures import Instances

__all__ = [
    "TITLE_STRIP_HEIGHT",
    "class_color",
    "draw_annotations",
    "draw_boxes",
    "draw_instances",
    "draw_predictions_and_ground_truth",
    "label_font_scale",
    "place_labels",
    "side_by_side",
]

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_LABEL_PADDING = 2  # pixels of background around a label's text
TITLE_STRIP_HEIGHT = 24  # pixels above each panel of side_by_side, holding its title
_PANEL_GAP = 8  # white pixels between two panels


def class_color(class_id: int) -> tuple[int, int, int]:
    """A distinct, bright BGR colour per class (golden-ratio hues)."""
    hue = (class_id * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return int(b * 255), int(g * 255), int(r * 255)


def label_font_scale(image_shape: Sequence[int]) -> float:
    """OpenCV font scale readable on an image of ``image_shape`` (H, W, ...): about 12 px
    high text at 512 px, larger on larger images, never below 0.4 (unreadable)."""
    return float(np.clip(min(image_shape[:2]) / 1000.0, 0.4, 1.2))


def _rectangles_intersect(candidates: np.ndarray, placed: np.ndarray) -> np.ndarray:
    """``candidates``: [C, 4], ``placed``: [P, 4], both half-open XYXY -> bool [C]: the
    candidate overlaps some placed rectangle."""
    if len(placed) == 0:
        return np.zeros(len(candidates), dtype=bool)
    c, p = candidates[:, None, :], placed[None, :, :]
    overlap = (
        (c[..., 0] < p[..., 2])
        & (p[..., 0] < c[..., 2])
        & (c[..., 1] < p[..., 3])
        & (p[..., 1] < c[..., 3])
    )
    return overlap.any(axis=1)


def place_labels(
    boxes: np.ndarray, label_sizes: Sequence[tuple[int, int]], image_size: tuple[int, int]
) -> list[tuple[int, int, int, int] | None]:
    """Where to draw each box's label so that no two labels overlap and all are in the image.

    Labels are placed in the order given (put the most important first). A label goes to the
    first free one of: above the box's top-left corner, below its bottom-left corner, the
    same at its right side, then inside each of its corners; each moved into the image. When all
    are taken, it goes to the free position nearest the first, among positions that touch
    the image border or an already placed label (a free spot can always slide to one).

    Args:
        boxes: float [N, 4], XYXY, absolute pixels of the picture.
        label_sizes: (width, height) in pixels of each of the N labels.
        image_size: (height, width) of the picture.

    Returns:
        N half-open rectangles ``(x1, y1, x2, y2)`` in integer pixels, or None for a label
        that has no free place (it is then not drawn).
    """
    height, width = image_size
    placed: list[tuple[int, int, int, int]] = []
    result: list[tuple[int, int, int, int] | None] = []
    for (bx1, by1, bx2, by2), (w, h) in zip(np.asarray(boxes, dtype=np.float64), label_sizes):
        if w > width or h > height:
            result.append(None)
            continue
        bx1, by1, bx2, by2 = (int(round(v)) for v in (bx1, by1, bx2, by2))
        # Outside the box first (the object stays visible), then inside its corners.
        preferred = [
            (bx1, by1 - h),
            (bx1, by2),
            (bx2 - w, by1 - h),
            (bx2 - w, by2),
            (bx1, by1),
            (bx1, by2 - h),
            (bx2 - w, by1),
            (bx2 - w, by2 - h),
        ]
        taken = np.array(placed, dtype=np.int64).reshape(-1, 4)
        xs = np.concatenate([[bx1, bx2 - w, 0, width - w], taken[:, 2], taken[:, 0] - w])
        ys = np.concatenate(
            [[by1 - h, by1, by2, by2 - h, 0, height - h], taken[:, 3], taken[:, 1] - h]
        )
        grid = np.stack(np.meshgrid(xs, ys, indexing="ij"), axis=-1).reshape(-1, 2)
        # Nearest to the preferred spot first; the preferred list keeps its own order.
        distance = np.abs(grid[:, 0] - bx1) + np.abs(grid[:, 1] - (by1 - h))
        grid = grid[np.argsort(distance, kind="stable")]
        origins = np.concatenate([np.array(preferred, dtype=np.int64), grid])
        origins[:, 0] = np.clip(origins[:, 0], 0, width - w)
        origins[:, 1] = np.clip(origins[:, 1], 0, height - h)
        candidates = np.concatenate([origins, origins + np.array([w, h])], axis=1)
        free = np.flatnonzero(~_rectangles_intersect(candidates, taken))
        if len(free) == 0:
            result.append(None)
            continue
        rect = tuple(int(v) for v in candidates[free[0]])
        placed.append(rect)  # type: ignore[arg-type]
        result.append(rect)  # type: ignore[arg-type]
    return result


def draw_boxes(
    canvas: np.ndarray,
    boxes: np.ndarray,
    labels: Sequence[str],
    colors: Sequence[tuple[int, int, int]],
) -> list[tuple[int, int, int, int] | None]:
    """Draw boxes with their labels on ``canvas`` (uint8 HxWx3 BGR, in place).

    Boxes are drawn first and labels last, so no box line crosses a label. Labels are
    placed in the order given (:func:`place_labels`): text in black on the box's colour.

    Args:
        boxes: float [N, 4], XYXY, pixels of ``canvas``.
        labels: N texts ("" for none).
        colors: N BGR colours.

    Returns:
        The label rectangles, as :func:`place_labels` gives them.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    thickness = max(1, round(min(canvas.shape[:2]) / 250))
    # A box reaching the border (x2 = width) is drawn on the last pixel, not outside.
    height, width = canvas.shape[:2]
    edges = np.round(boxes).astype(np.int64)
    edges[:, 0::2] = np.clip(edges[:, 0::2], 0, width - 1)
    edges[:, 1::2] = np.clip(edges[:, 1::2], 0, height - 1)
    for (x1, y1, x2, y2), color in zip(edges.tolist(), colors):
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thickness)
    font_scale = label_font_scale(canvas.shape)
    text_thickness = 1 if font_scale < 0.8 else 2
    sizes, baselines = [], []
    for text in labels:
        (tw, th), base = cv2.getTextSize(text, _FONT, font_scale, text_thickness)
        sizes.append(
            (tw + 2 * _LABEL_PADDING, th + base + 2 * _LABEL_PADDING)
            if text
            else (canvas.shape[1] + 1, 0)
        )  # an empty label is never placed
        baselines.append(base)
    rects = place_labels(boxes, sizes, canvas.shape[:2])
    for rect, text, base, color in zip(rects, labels, baselines, colors):
        if rect is None:
            continue
        x1, y1, x2, y2 = rect
        cv2.rectangle(canvas, (x1, y1), (x2 - 1, y2 - 1), color, -1)
        cv2.putText(
            canvas,
            text,
            (x1 + _LABEL_PADDING, y2 - _LABEL_PADDING - base),
            _FONT,
            font_scale,
            (0, 0, 0),
            text_thickness,
            cv2.LINE_AA,
        )
    return rects


def _enlarged(image_bgr: np.ndarray, scale: float) -> np.ndarray:
    if scale == 1.0:
        return image_bgr.copy()
    return cv2.resize(image_bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)


def _class_name(class_names: Sequence[str] | None, class_id: int) -> str:
    if class_names is not None and 0 <= class_id < len(class_names):
        return class_names[class_id]
    return str(class_id)


def draw_instances(
    image_bgr: np.ndarray,
    instances: Instances,
    class_names: Sequence[str] | None = None,
    score_thresh: float = 0.0,
    scale: float = 1.0,
) -> np.ndarray:
    """A copy of ``image_bgr`` (uint8 HxWx3) with each detection's box and "class score".

    The most confident detections get their labels placed first (:func:`place_labels`).

    Args:
        instances: ``pred_boxes``, ``scores``, ``pred_classes`` in the image's pixels.
        class_names: names by class index (indices are shown when absent).
        score_thresh: detections at or below this score are not drawn.
        scale: enlarge the picture by this factor first (small images read better).
    """
    canvas = _enlarged(image_bgr, scale)
    boxes = instances.pred_boxes.tensor.detach().cpu().numpy().astype(np.float64) * scale
    scores = instances.scores.detach().cpu().numpy()
    classes = instances.pred_classes.detach().cpu().numpy()
    order = np.argsort(-scores, kind="stable")
    order = order[scores[order] > score_thresh]
    draw_boxes(
        canvas,
        boxes[order],
        [f"{_class_name(class_names, int(classes[i]))} {scores[i]:.2f}" for i in order],
        [class_color(int(classes[i])) for i in order],
    )
    return canvas


def draw_annotations(
    image_bgr: np.ndarray,
    annotations: Sequence[dict],
    class_names: Sequence[str] | None = None,
    scale: float = 1.0,
) -> np.ndarray:
    """A copy of ``image_bgr`` (uint8 HxWx3) with the ground truth of a dataset dict.

    Args:
        annotations: ``[{"bbox": [x1, y1, x2, y2] (absolute pixels), "category_id", ...}]``;
            a ``difficult`` or crowd object is labelled so.
        class_names: names by ``category_id`` (ids are shown when absent).
        scale: enlarge the picture by this factor first.
    """
    canvas = _enlarged(image_bgr, scale)
    boxes = np.array([a["bbox"] for a in annotations], dtype=np.float64).reshape(-1, 4) * scale
    labels = []
    for a in annotations:
        name = _class_name(class_names, int(a["category_id"]))
        if a.get("difficult"):
            name += " (difficult)"
        elif a.get("iscrowd"):
            name += " (crowd)"
        labels.append(name)
    draw_boxes(canvas, boxes, labels, [class_color(int(a["category_id"])) for a in annotations])
    return canvas


def side_by_side(panels: Sequence[tuple[str, np.ndarray]]) -> np.ndarray:
    """Pictures (uint8 HxWx3) next to each other, each under a strip with its title.

    Panel i's pixel (x, y) lands at (x + sum of the widths before it + 8 px per gap,
    y + ``TITLE_STRIP_HEIGHT``); shorter panels are padded with white at the bottom.
    """
    height = max(image.shape[0] for _, image in panels) + TITLE_STRIP_HEIGHT
    columns = []
    for i, (title, image) in enumerate(panels):
        column = np.full((height, image.shape[1], 3), 255, dtype=np.uint8)
        column[TITLE_STRIP_HEIGHT : TITLE_STRIP_HEIGHT + image.shape[0]] = image
        cv2.putText(
            column, title, (4, TITLE_STRIP_HEIGHT - 7), _FONT, 0.55, (0, 0, 0), 1, cv2.LINE_AA
        )
        if i:
            columns.append(np.full((height, _PANEL_GAP, 3), 255, dtype=np.uint8))
        columns.append(column)
    return np.concatenate(columns, axis=1)


def draw_predictions_and_ground_truth(
    image_bgr: np.ndarray,
    instances: Instances,
    annotations: Sequence[dict],
    class_names: Sequence[str] | None = None,
    scale: float = 1.0,
) -> np.ndarray:
    """The ground truth (left) beside the detections (right), each in its own copy of the
    image, both in class colours (:func:`side_by_side`; arguments as in
    :func:`draw_annotations` and :func:`draw_instances`)."""
    return side_by_side(
        [
            (
                f"ground truth ({len(annotations)})",
                draw_annotations(image_bgr, annotations, class_names, scale),
            ),
            (
                f"predictions ({len(instances)})",
                draw_instances(image_bgr, instances, class_names, scale=scale),
            ),
        ]
    )
