"""IoU matcher: label anchors/proposals by IoU intervals, plus the best-anchor-per-gt rule."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from detkit.config import CfgNode
from detkit.modeling.matcher.build import MATCHER_REGISTRY, Matcher, MatchInputs

__all__ = ["IoUMatcher"]


@MATCHER_REGISTRY.register()
class IoUMatcher(Matcher):
    """Assigns each prediction to its highest-IoU ground truth and labels it by that IoU.

    With thresholds ``[t0, t1]`` and labels ``[l0, l1, l2]``, a prediction whose best IoU
    is in ``[-inf, t0)`` gets l0, ``[t0, t1)`` gets l1 and ``[t1, inf)`` gets l2: a value
    exactly on a threshold goes to the upper interval (the released code labels positive
    at ``IoU >= 0.7`` and negative at ``IoU < 0.3``, paper 3.1.2). RPN: ``[0.3, 0.7]``,
    ``[0, -1, 1]``; Fast R-CNN: ``[0.0, 0.5]`` (or ``[0.1, 0.5]``), ``[-1, 0, 1]``.

    Args:
        thresholds: non-decreasing IoU cut points.
        labels: one label per interval (``len(thresholds) + 1``), each 1 positive,
            0 negative or -1 ignore.
        allow_low_quality_matches: paper 3.1.2 condition (i): for each ground truth, every
            prediction whose IoU equals that ground truth's highest IoU (ties included) is
            also positive (``labels[-1]``), overriding the interval label.
        low_quality_min_iou: that rule applies only to ground truths whose highest IoU is at
            least this. The released code uses 0, so a ground truth that overlaps no
            prediction makes every prediction at IoU 0 positive; 0.3 (some frameworks)
            disables that.
    """

    def __init__(
        self,
        *,
        thresholds: list[float],
        labels: list[int],
        allow_low_quality_matches: bool,
        low_quality_min_iou: float = 0.0,
    ):
        thresholds = [float(t) for t in thresholds]
        labels = [int(label) for label in labels]
        if any(a > b for a, b in zip(thresholds, thresholds[1:])):
            raise ValueError(
                f"IoUMatcher thresholds must be non-decreasing; got {thresholds} "
                "(IOU_THRESHOLDS of the matcher's config node, e.g. [0.3, 0.7])."
            )
        if len(labels) != len(thresholds) + 1:
            raise ValueError(
                f"IoUMatcher needs one label per IoU interval, len(thresholds) + 1 = "
                f"{len(thresholds) + 1}; got labels {labels} for thresholds {thresholds} "
                "(IOU_LABELS of the matcher's config node, e.g. [0, -1, 1])."
            )
        if any(label not in (-1, 0, 1) for label in labels):
            raise ValueError(
                f"IoUMatcher labels must each be -1 (ignore), 0 (negative) or 1 (positive); "
                f"got {labels} (IOU_LABELS of the matcher's config node)."
            )
        self.thresholds = thresholds
        self.labels = labels
        self.allow_low_quality_matches = bool(allow_low_quality_matches)
        self.low_quality_min_iou = float(low_quality_min_iou)

    @classmethod
    def from_config(
        cls, cfg: CfgNode, node: CfgNode, input_shape: object | None = None
    ) -> dict[str, Any]:
        """``node``: ``MODEL.RPN.MATCHER`` / ``MODEL.ROI_HEADS.MATCHER``, read for
        ``IOU_THRESHOLDS``, ``IOU_LABELS``, ``ALLOW_LOW_QUALITY_MATCHES`` and
        ``LOW_QUALITY_MIN_IOU``; ``input_shape``: unused (a matcher has no input features)."""
        return {
            "thresholds": list(node.IOU_THRESHOLDS),
            "labels": list(node.IOU_LABELS),
            "allow_low_quality_matches": bool(node.ALLOW_LOW_QUALITY_MATCHES),
            "low_quality_min_iou": float(node.LOW_QUALITY_MIN_IOU),
        }

    def _interval_labels(self, quality: Tensor) -> Tensor:
        """Label of the interval holding each value (on a threshold: the upper one)."""
        boundaries = torch.tensor(self.thresholds, dtype=quality.dtype, device=quality.device)
        # right=True: index i with thresholds[i - 1] <= q < thresholds[i].
        interval = torch.bucketize(quality, boundaries, right=True)
        table = torch.tensor(self.labels, dtype=torch.int8, device=quality.device)
        return table[interval]

    def __call__(self, inputs: MatchInputs | Tensor) -> tuple[Tensor, Tensor]:
        """Match N predictions against M ground truths.

        Args:
            inputs: the image's :class:`MatchInputs` (its ``iou`` is used), or directly a
                ``Tensor[M, N]`` quality matrix, e.g. IoU of M ground-truth boxes with N
                anchors. Entries below every threshold (e.g. -1 for anchors the caller
                excludes) are never low-quality matches unless ``low_quality_min_iou``
                allows them.

        Returns:
            matches: ``Tensor[N]`` int64, index of the highest-IoU ground truth (0 when
                M = 0; ties resolved to the first ground truth).
            labels: ``Tensor[N]`` int8, 1 positive, 0 negative, -1 ignore. With M = 0 every
                prediction gets the label of the interval containing IoU 0 (RPN defaults:
                negative; Fast R-CNN defaults ``[0.0, 0.5]``: background).
        """
        match_quality_matrix = inputs.iou if isinstance(inputs, MatchInputs) else inputs
        if match_quality_matrix.dim() != 2:
            raise ValueError(
                "IoUMatcher expects a [M ground truths, N predictions] matrix; got shape "
                f"{tuple(match_quality_matrix.shape)}."
            )
        num_gt, num_pred = match_quality_matrix.shape
        device = match_quality_matrix.device
        if num_gt == 0:
            matches = torch.zeros(num_pred, dtype=torch.int64, device=device)
            zero_iou = match_quality_matrix.new_zeros(num_pred)
            return matches, self._interval_labels(zero_iou)

        best_quality, matches = match_quality_matrix.max(dim=0)  # [N] each
        labels = self._interval_labels(best_quality)
        if self.allow_low_quality_matches and num_pred > 0:
            # Paper 3.1.2 (i), applied after the interval labels so it overrides negatives.
            best_per_gt = match_quality_matrix.max(dim=1).values[:, None]  # [M, 1]
            is_best = (match_quality_matrix == best_per_gt) & (
                best_per_gt >= self.low_quality_min_iou
            )
            labels[is_best.any(dim=0)] = self.labels[-1]
        return matches, labels
