"""Drawing detections on images with OpenCV."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import cv2
import numpy as np

from detkit.structures import Instances

__all__ = ["class_color", "draw_instances"]


def class_color(class_id: int) -> tuple[int, int, int]:
    """A distinct, bright BGR colour per class (golden-ratio hues)."""
    hue = (class_id * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return int(b * 255), int(g * 255), int(r * 255)


def draw_instances(
    image_bgr: np.ndarray,
    instances: Instances,
    class_names: Sequence[str] | None = None,
    score_thresh: float = 0.0,
    scale: float = 1.0,
) -> np.ndarray:
    """A copy of ``image_bgr`` (uint8 HxWx3) with each detection's box and "class score".

    Args:
        instances: ``pred_boxes``, ``scores``, ``pred_classes`` in the image's pixels.
        class_names: names by class index (indices are shown when absent).
        score_thresh: detections at or below this score are not drawn.
        scale: enlarge the picture by this factor first (small images read better).
    """
    canvas = image_bgr.copy()
    if scale != 1.0:
        canvas = cv2.resize(canvas, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    boxes = instances.pred_boxes.tensor.detach().cpu().numpy() * scale
    scores = instances.scores.detach().cpu().numpy()
    classes = instances.pred_classes.detach().cpu().numpy()
    thickness = max(1, round(min(canvas.shape[:2]) / 250))
    for (x1, y1, x2, y2), score, cls in zip(boxes, scores, classes):
        if score <= score_thresh:
            continue
        color = class_color(int(cls))
        name = class_names[cls] if class_names is not None and cls < len(class_names) else str(cls)
        p1, p2 = (int(round(x1)), int(round(y1))), (int(round(x2)), int(round(y2)))
        cv2.rectangle(canvas, p1, p2, color, thickness)
        text = f"{name} {score:.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
        top = max(p1[1] - th - base - 2, 0)
        cv2.rectangle(canvas, (p1[0], top), (p1[0] + tw + 4, top + th + base + 2), color, -1)
        cv2.putText(canvas, text, (p1[0] + 2, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    (0, 0, 0), 1, cv2.LINE_AA)
    return canvas
