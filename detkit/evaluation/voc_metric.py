"""PASCAL VOC average precision on plain arrays: the devkit's matching rules, vectorized.

No model, tensor or dataset catalog is needed: ``voc_eval`` takes detections and ground truths
as NumPy arrays, so results of any detector (or any file of detections) can be scored.

The rules are those of the VOC devkit (PAPER.md, "Evaluation (PASCAL VOC)"):

- detections of a class are taken in decreasing score order (ties keep input order);
- each detection is compared with the ground truths of its image and class and takes the one
  of highest IoU (the first in annotation order on ties), matched or not;
- IoU > threshold (strictly) with a non-difficult ground truth not yet matched: true positive,
  and that ground truth is now matched; with one already matched: false positive (duplicate);
- IoU > threshold with a difficult ground truth: ignored, neither true nor false positive;
- IoU <= threshold, or no ground truth of the class in the image: false positive;
- the number of positives counts non-difficult ground truths only.

Because a detection's best ground truth does not depend on which ones are already matched,
the matching reduces to "the first detection, in score order, claiming each ground truth wins",
which is computed for every class and IoU threshold at once without a loop over detections.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "COCO_IOU_THRESHOLDS",
    "ELEVEN_RECALL_POINTS",
    "VOCEvalResult",
    "box_iou_numpy",
    "describe_iou_thresholds",
    "voc_ap",
    "voc_eval",
]

# VOC2007's 11-point AP: recall levels 0, 0.1, ..., 1. Written as k / 10 so that 0.3 is the
# double nearest 0.3: ``np.arange(0, 1.1, 0.1)`` (py-faster-rcnn) gives 0.30000000000000004 and
# would skip a recall of exactly 3/10. We follow the paper's definition, "recall >= 0.3".
ELEVEN_RECALL_POINTS = np.arange(11) / 10

# IoU thresholds 0.50, 0.55, ..., 0.95 of the COCO-style "AP" (rounded so 0.75 is exact).
COCO_IOU_THRESHOLDS = tuple(float(t) for t in np.round(0.5 + 0.05 * np.arange(10), 2))


def describe_iou_thresholds(thresholds: tuple[float, ...]) -> str:
    """``"0.50:0.05:0.95"`` for COCO's ten thresholds, else the values: for rule texts."""
    if len(thresholds) == len(COCO_IOU_THRESHOLDS) and np.allclose(thresholds, COCO_IOU_THRESHOLDS):
        return "0.50:0.05:0.95"
    return ", ".join(f"{t:g}" for t in thresholds)


def box_iou_numpy(boxes1: np.ndarray, boxes2: np.ndarray, legacy_plus_one: bool) -> np.ndarray:
    """IoU of every pair of XYXY boxes, in float64.

    Args:
        boxes1: ``[N, 4]`` XYXY absolute pixels.
        boxes2: ``[M, 4]`` XYXY absolute pixels, same convention as ``boxes1``.
        legacy_plus_one: widths are ``x2 - x1 + 1`` (the devkit's pixel-index boxes, where
            ``x2`` is the last pixel covered) instead of ``x2 - x1``.

    Returns:
        ``[N, M]`` IoU; 0 where the union is empty (two degenerate boxes).
    """
    a = np.asarray(boxes1, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(boxes2, dtype=np.float64).reshape(-1, 4)
    one = 1.0 if legacy_plus_one else 0.0
    inter_w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    inter_h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.maximum(inter_w + one, 0.0) * np.maximum(inter_h + one, 0.0)
    area_a = (a[:, 2] - a[:, 0] + one) * (a[:, 3] - a[:, 1] + one)
    area_b = (b[:, 2] - b[:, 0] + one) * (b[:, 3] - b[:, 1] + one)
    # Same order of operations as the devkit (detection area + gt area - intersection), so
    # IoUs that land exactly on a threshold compare the same way.
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool) -> float:
    """Average precision from a precision/recall curve, as the VOC devkit computes it.

    Args:
        recall: ``[N]`` recall after each detection (non-decreasing), in [0, 1].
        precision: ``[N]`` precision after each detection, in [0, 1].
        use_07_metric: VOC2007's 11-point AP, the mean over r in {0, 0.1, ..., 1} of the
            maximum precision at recall >= r (0 where the curve never reaches r). Otherwise
            (VOC2010 and later) the area under the monotone envelope of the curve
            (precision made non-increasing in recall), summed over the recall steps.

    Returns:
        AP in [0, 1]; 0 for an empty curve.
    """
    recall = np.asarray(recall, dtype=np.float64).reshape(-1)
    precision = np.asarray(precision, dtype=np.float64).reshape(-1)
    if recall.shape != precision.shape:
        raise ValueError(
            f"voc_ap: recall and precision must have the same length; got {recall.size} "
            f"and {precision.size}."
        )
    if use_07_metric:
        reached = recall[None, :] >= ELEVEN_RECALL_POINTS[:, None]  # [11, N]
        best = np.where(reached, precision[None, :], 0.0).max(axis=1, initial=0.0)
        return float(best.mean())
    # Sentinels: the curve starts at recall 0 and the envelope drops to 0 after the last point.
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    envelope = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * envelope[steps + 1]))


@dataclass
class VOCEvalResult:
    """What ``voc_eval`` returns.

    Attributes:
        ap: ``[T, K]`` AP in [0, 1] per IoU threshold and class; NaN for a class with no
            non-difficult ground truth (the devkit divides by zero there; we leave the class
            out of the means instead, as pycocotools does with its -1).
        recall: ``[T, K]`` final recall (all detections kept); NaN where ``ap`` is NaN.
        num_positives: ``[K]`` non-difficult ground truths per class.
        num_detections: ``[K]`` detections per class.
        iou_thresholds: the T thresholds; a true positive needs IoU strictly above one.
    """

    ap: np.ndarray
    recall: np.ndarray
    num_positives: np.ndarray
    num_detections: np.ndarray
    iou_thresholds: tuple[float, ...]

    def mean_ap(self) -> np.ndarray:
        """``[T]`` mean AP over the classes that have positives (NaN if none has)."""
        valid = ~np.isnan(self.ap)
        counts = valid.sum(axis=1)
        sums = np.where(valid, self.ap, 0.0).sum(axis=1)
        return np.divide(sums, counts, out=np.full(sums.shape, np.nan), where=counts > 0)


def _as_array(name: str, value, dtype, shape_tail: tuple[int, ...]) -> np.ndarray:
    array = np.asarray(value, dtype=dtype)
    if array.size == 0:
        array = array.reshape((0, *shape_tail))
    if array.ndim != 1 + len(shape_tail) or array.shape[1:] != shape_tail:
        expected = "[N" + "".join(f", {s}" for s in shape_tail) + "]"
        raise ValueError(f"voc_eval: {name} must have shape {expected}; got {array.shape}.")
    return array


def _best_ground_truth(
    det_image_ids: np.ndarray,
    det_boxes: np.ndarray,
    det_classes: np.ndarray,
    gt_image_ids: np.ndarray,
    gt_boxes: np.ndarray,
    gt_classes: np.ndarray,
    legacy_plus_one: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """For each detection, the highest IoU with a ground truth of its image and class and that
    ground truth's index (-inf and -1 when there is none). Loops over images only."""
    num_dets = det_image_ids.shape[0]
    max_iou = np.full(num_dets, -np.inf)
    best_gt = np.full(num_dets, -1, dtype=np.int64)
    if num_dets == 0 or gt_image_ids.shape[0] == 0:
        return max_iou, best_gt
    # Stable sorts keep annotation order inside an image, so argmax ties pick the first
    # ground truth as the devkit does.
    gt_order = np.argsort(gt_image_ids, kind="stable")
    gt_sorted_ids = gt_image_ids[gt_order]
    det_order = np.argsort(det_image_ids, kind="stable")
    images, det_starts = np.unique(det_image_ids[det_order], return_index=True)
    det_ends = np.append(det_starts[1:], num_dets)
    gt_starts = np.searchsorted(gt_sorted_ids, images, side="left")
    gt_ends = np.searchsorted(gt_sorted_ids, images, side="right")
    for d0, d1, g0, g1 in zip(det_starts, det_ends, gt_starts, gt_ends):
        if g0 == g1:
            continue
        dets, gts = det_order[d0:d1], gt_order[g0:g1]
        iou = box_iou_numpy(det_boxes[dets], gt_boxes[gts], legacy_plus_one)
        iou[det_classes[dets][:, None] != gt_classes[gts][None, :]] = -np.inf
        best = iou.argmax(axis=1)
        best_iou = iou[np.arange(len(dets)), best]
        max_iou[dets] = best_iou
        best_gt[dets] = np.where(np.isfinite(best_iou), gts[best], -1)
    return max_iou, best_gt


def checked_inputs(
    det_image_ids,
    det_boxes,
    det_scores,
    det_classes,
    gt_image_ids,
    gt_boxes,
    gt_classes,
    gt_difficult,
    num_classes: int,
) -> tuple[np.ndarray, ...]:
    """``voc_eval``'s arguments as arrays of their dtypes and shapes (``gt_difficult`` None:
    all False), in the same order; a wrong shape, row count or class id is a ValueError
    naming the argument."""
    det_image_ids = _as_array("det_image_ids", det_image_ids, np.int64, ())
    det_boxes = _as_array("det_boxes", det_boxes, np.float64, (4,))
    det_scores = _as_array("det_scores", det_scores, np.float64, ())
    det_classes = _as_array("det_classes", det_classes, np.int64, ())
    gt_image_ids = _as_array("gt_image_ids", gt_image_ids, np.int64, ())
    gt_boxes = _as_array("gt_boxes", gt_boxes, np.float64, (4,))
    gt_classes = _as_array("gt_classes", gt_classes, np.int64, ())
    if gt_difficult is None:
        gt_difficult = np.zeros(gt_image_ids.shape[0], dtype=bool)
    gt_difficult = _as_array("gt_difficult", gt_difficult, bool, ())
    num_dets, num_gts = det_image_ids.shape[0], gt_image_ids.shape[0]
    for name, array, n in [
        ("det_boxes", det_boxes, num_dets),
        ("det_scores", det_scores, num_dets),
        ("det_classes", det_classes, num_dets),
        ("gt_boxes", gt_boxes, num_gts),
        ("gt_classes", gt_classes, num_gts),
        ("gt_difficult", gt_difficult, num_gts),
    ]:
        if array.shape[0] != n:
            raise ValueError(
                f"voc_eval: {name} has {array.shape[0]} rows but there are {n} "
                f"{'detections' if name.startswith('det') else 'ground truths'}."
            )
    for name, classes in [("det_classes", det_classes), ("gt_classes", gt_classes)]:
        if classes.size and (classes.min() < 0 or classes.max() >= num_classes):
            raise ValueError(
                f"voc_eval: {name} must lie in [0, {num_classes}); got values from "
                f"{classes.min()} to {classes.max()}. Pass 0-based contiguous class ids."
            )

    return (
        det_image_ids,
        det_boxes,
        det_scores,
        det_classes,
        gt_image_ids,
        gt_boxes,
        gt_classes,
        gt_difficult,
    )


def claim_ground_truths(
    max_iou: np.ndarray, best_gt: np.ndarray, best_is_difficult: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """The devkit's matching of detections ranked by score: ``(true_positive, ignored)``
    masks. A detection claims its best ground truth (``best_gt``, of its class) when their IoU
    is strictly above ``threshold``; the first claim on a ground truth is its true positive
    and later ones are duplicates (false positives); claims on difficult ground truths are
    ignored, neither true nor false."""
    overlaps = max_iou > threshold  # strict, as the devkit
    ignored = overlaps & best_is_difficult
    claims = np.flatnonzero(overlaps & ~best_is_difficult)
    _, first = np.unique(best_gt[claims], return_index=True)
    tp = np.zeros(max_iou.shape[0], dtype=bool)
    tp[claims[first]] = True
    return tp, ignored


def voc_eval(
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
    iou_thresholds: Sequence[float] = (0.5,),
    use_07_metric: bool = False,
    legacy_plus_one: bool = False,
) -> VOCEvalResult:
    """Per-class VOC AP of a set of detections against a set of ground truths.

    Args:
        det_image_ids: ``[D]`` int image index of each detection.
        det_boxes: ``[D, 4]`` XYXY absolute pixels.
        det_scores: ``[D]`` confidence; higher is ranked first.
        det_classes: ``[D]`` int class in ``[0, num_classes)``.
        gt_image_ids: ``[G]`` int image index of each ground truth (same ids as detections).
        gt_boxes: ``[G, 4]`` XYXY absolute pixels, same convention as ``det_boxes``.
        gt_classes: ``[G]`` int class in ``[0, num_classes)``.
        gt_difficult: ``[G]`` bool, VOC's "difficult" flag (None: none is difficult).
        num_classes: K.
        iou_thresholds: T thresholds; a match needs IoU > threshold (strictly, as the devkit).
        use_07_metric: 11-point AP (VOC2007) instead of the area under the envelope.
        legacy_plus_one: IoU with ``x2 - x1 + 1`` widths (the devkit's); boxes must then be
            pixel-index boxes (``x2`` the last pixel covered).

    Returns:
        A ``VOCEvalResult`` with ``ap[T, K]`` in [0, 1].
    """
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
    num_dets = det_image_ids.shape[0]

    max_iou, best_gt = _best_ground_truth(
        det_image_ids,
        det_boxes,
        det_classes,
        gt_image_ids,
        gt_boxes,
        gt_classes,
        legacy_plus_one,
    )
    # Rank all detections by score once; each class's detections keep this relative order.
    order = np.argsort(-det_scores, kind="stable")
    max_iou, best_gt, ranked_classes = max_iou[order], best_gt[order], det_classes[order]
    best_is_difficult = np.zeros(num_dets, dtype=bool)
    has_gt = best_gt >= 0
    best_is_difficult[has_gt] = gt_difficult[best_gt[has_gt]]

    num_positives = np.bincount(gt_classes[~gt_difficult], minlength=num_classes)
    num_detections = np.bincount(det_classes, minlength=num_classes)
    thresholds = tuple(float(t) for t in iou_thresholds)
    ap = np.full((len(thresholds), num_classes), np.nan)
    recall_final = np.full((len(thresholds), num_classes), np.nan)
    for t, threshold in enumerate(thresholds):
        tp, ignored = claim_ground_truths(max_iou, best_gt, best_is_difficult, threshold)
        fp = ~tp & ~ignored
        for k in np.flatnonzero(num_positives > 0):
            # Ignored detections are dropped: they only repeat the previous curve point.
            keep = (ranked_classes == k) & ~ignored
            tp_cum = np.cumsum(tp[keep])
            fp_cum = np.cumsum(fp[keep])
            recall = tp_cum / num_positives[k]
            precision = tp_cum / np.maximum(tp_cum + fp_cum, 1)
            ap[t, k] = voc_ap(recall, precision, use_07_metric)
            recall_final[t, k] = recall[-1] if recall.size else 0.0
    return VOCEvalResult(
        ap=ap,
        recall=recall_final,
        num_positives=num_positives,
        num_detections=num_detections,
        iou_thresholds=thresholds,
    )
