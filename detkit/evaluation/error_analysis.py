"""Where a detector's VOC AP goes: the kinds of its false positives and its missed objects.

The VOC AP of a class is set by the false positives that outrank its true positives. At a
recall level ``r`` (0.9 by default: the last point of the 11-point metric that a class can
reach without finding every object), the precision is that of the first point of the ranked
list where recall reaches ``r``, and the false positives ranked above that point are what
pull it down. :func:`analyze_errors` sorts those false positives into four kinds, each
detection counted once, in this order:

- ``duplicate``: IoU above the threshold with an object of its class that a higher-scored
  detection already matched;
- ``confusion``: IoU above the threshold with an object of another class (the box is right,
  the label is not);
- ``localization``: IoU in (``background_iou``, threshold] with an object of its class;
- ``background``: none of the above.

It also counts the objects no detection of their class matched ("missed"), and of those the
ones that a detection of another class covers at IoU above the threshold (found, but
labelled wrong). Matching follows :func:`detkit.evaluation.voc_metric.voc_eval` exactly
(ranked by score over all classes, IoU strictly above the threshold, difficult objects
neither true nor false positives), so the true positives per class equal ``voc_eval``'s.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from detkit.evaluation.voc_metric import (
    _best_ground_truth,
    box_iou_numpy,
    checked_inputs,
    claim_ground_truths,
)

__all__ = ["FALSE_POSITIVE_KINDS", "analyze_errors", "format_error_report"]

FALSE_POSITIVE_KINDS = ("duplicate", "confusion", "localization", "background")


def _group_by_image(image_ids: np.ndarray) -> dict[int, np.ndarray]:
    """Image id -> the indices with that id (one sort, not one scan per image)."""
    order = np.argsort(image_ids, kind="stable")
    images, starts = np.unique(image_ids[order], return_index=True)
    return dict(zip(images.tolist(), np.split(order, starts[1:])))


def _best_other_class_iou(
    det_image_ids: np.ndarray,
    det_boxes: np.ndarray,
    det_classes: np.ndarray,
    gt_image_ids: np.ndarray,
    gt_boxes: np.ndarray,
    gt_classes: np.ndarray,
    legacy_plus_one: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """For each detection, the highest IoU with an object of its image and another class;
    for each object, the highest IoU with a detection of its image and another class."""
    det_best = np.zeros(det_image_ids.shape[0])
    gt_best = np.zeros(gt_image_ids.shape[0])
    gts_of = _group_by_image(gt_image_ids)
    for image, dets in _group_by_image(det_image_ids).items():
        gts = gts_of.get(image)
        if gts is None:
            continue
        iou = box_iou_numpy(det_boxes[dets], gt_boxes[gts], legacy_plus_one)
        iou[det_classes[dets][:, None] == gt_classes[gts][None, :]] = 0.0
        det_best[dets] = iou.max(axis=1)
        gt_best[gts] = iou.max(axis=0)
    return det_best, gt_best


def analyze_errors(
    *,
    det_image_ids: np.ndarray,
    det_boxes: np.ndarray,
    det_scores: np.ndarray,
    det_classes: np.ndarray,
    gt_image_ids: np.ndarray,
    gt_boxes: np.ndarray,
    gt_classes: np.ndarray,
    gt_difficult: np.ndarray | None = None,
    num_classes: int,
    recall_level: float = 0.9,
    iou_threshold: float = 0.5,
    background_iou: float = 0.1,
    legacy_plus_one: bool = False,
) -> list[dict]:
    """Per class: positives, true positives, final recall, the precision at ``recall_level``
    and the false positives ranked above it by kind, and the missed objects.

    Arguments are those of :func:`detkit.evaluation.voc_metric.voc_eval` (one IoU threshold),
    plus ``recall_level`` in (0, 1] and ``background_iou`` (the IoU at or below which a false
    positive is background rather than a poor localization).

    Returns:
        One dict per class with positives: ``class`` (index), ``num_positives``,
        ``true_positives``, ``recall`` (final), ``precision_at_recall`` (the best precision
        at any recall >= ``recall_level``, the value the 11-point metric takes there; None
        when recall never reaches it), ``false_positives`` (kind -> count among the
        detections ranked up to where recall first reaches the level, or among all of them
        when it never does), ``missed`` (objects no detection of their class
        matched) and ``missed_but_confused`` (of those, covered by a detection of another
        class at IoU above the threshold).
    """
    if not 0.0 < recall_level <= 1.0:
        raise ValueError(f"recall_level must be in (0, 1]; got {recall_level}.")
    if not 0.0 <= background_iou <= iou_threshold:
        raise ValueError(
            f"background_iou must be in [0, iou_threshold={iou_threshold}]; got {background_iou}."
        )
    (
        det_image_ids,
        det_boxes,
        det_scores,
        det_classes,
        gt_image_ids,
        gt_boxes,
        gt_classes,
        gt_difficult,
    ) = checked_inputs(
        det_image_ids,
        det_boxes,
        det_scores,
        det_classes,
        gt_image_ids,
        gt_boxes,
        gt_classes,
        gt_difficult,
        num_classes,
    )

    same_iou, best_gt = _best_ground_truth(
        det_image_ids, det_boxes, det_classes, gt_image_ids, gt_boxes, gt_classes, legacy_plus_one
    )
    other_iou, gt_covered_by_other = _best_other_class_iou(
        det_image_ids, det_boxes, det_classes, gt_image_ids, gt_boxes, gt_classes, legacy_plus_one
    )
    # voc_eval's ranking (all detections by score) and claims.
    order = np.argsort(-det_scores, kind="stable")
    same_iou, best_gt, other_iou = same_iou[order], best_gt[order], other_iou[order]
    ranked_classes = det_classes[order]
    on_difficult = np.zeros(len(order), dtype=bool)
    on_difficult[best_gt >= 0] = gt_difficult[best_gt[best_gt >= 0]]
    tp, ignored = claim_ground_truths(same_iou, best_gt, on_difficult, iou_threshold)
    kind = np.full(len(order), "", dtype=object)
    kind[(same_iou > iou_threshold) & ~on_difficult & ~tp] = "duplicate"
    rest = ~tp & ~ignored & (kind == "")
    kind[rest & (other_iou > iou_threshold)] = "confusion"
    rest &= kind == ""
    kind[rest & (same_iou > background_iou)] = "localization"
    kind[rest & (kind == "")] = "background"
    matched = np.zeros(gt_image_ids.shape[0], dtype=bool)
    matched[best_gt[tp]] = True

    report = []
    for k in range(num_classes):
        positives = np.flatnonzero((gt_classes == k) & ~gt_difficult)
        if positives.size == 0:
            continue
        keep = np.flatnonzero((ranked_classes == k) & ~ignored)
        tp_cum = np.cumsum(tp[keep])
        recall = tp_cum / positives.size
        reached = np.flatnonzero(recall >= recall_level)
        upto = keep[: reached[0] + 1] if reached.size else keep
        # The 11-point metric's value at the level: the best precision at any recall >= it.
        precision = float(np.max(tp_cum[reached] / (reached + 1))) if reached.size else None
        counts = {name: int(np.sum(kind[upto] == name)) for name in FALSE_POSITIVE_KINDS}
        missed = positives[~matched[positives]]
        confused = int(np.sum(gt_covered_by_other[missed] > iou_threshold))
        report.append(
            {
                "class": k,
                "num_positives": int(positives.size),
                "true_positives": int(tp_cum[-1]) if tp_cum.size else 0,
                "recall": float(recall[-1]) if recall.size else 0.0,
                "precision_at_recall": precision,
                "false_positives": counts,
                "missed": int(missed.size),
                "missed_but_confused": confused,
            }
        )
    return report


def format_error_report(
    report: list[dict], class_names: Sequence[str], recall_level: float = 0.9
) -> str:
    """A Markdown table of :func:`analyze_errors`' report, one row per class."""
    from detkit.evaluation.testing import format_table

    rows = []
    for entry in report:
        precision = entry["precision_at_recall"]
        rows.append(
            [
                class_names[entry["class"]],
                entry["num_positives"],
                f"{entry['recall']:.3f}",
                "never" if precision is None else f"{precision:.3f}",
                *(entry["false_positives"][name] for name in FALSE_POSITIVE_KINDS),
                entry["missed"],
                entry["missed_but_confused"],
            ]
        )
    header = [
        "class",
        "gt",
        "recall",
        f"precision at recall {recall_level:g}",
        *(f"FP {name}" for name in FALSE_POSITIVE_KINDS),
        "missed",
        "missed, other class",
    ]
    return format_table(header, rows)
