"""``ATSSMatcher``: Adaptive Training Sample Selection (Zhang et al., "Bridging the Gap
Between Anchor-based and Anchor-free Detection via Adaptive Training Sample Selection",
CVPR 2020, Algorithm 1) as a ``MATCHER_REGISTRY`` member."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from detkit.config import CfgNode
from detkit.modeling.matcher import MATCHER_REGISTRY, Matcher, MatchInputs
from detkit.registry import node_path

__all__ = [
    "ATSSMatcher",
    "center_inside",
    "closest_per_level",
    "iou_thresholds",
    "positives",
    "smallest_k",
]


def smallest_k(values: Tensor, k: int) -> Tensor:
    """``Tensor[M, n]`` bool: the ``k`` smallest values of each row of ``values [M, n]``
    (``1 <= k <= n``); among equal values at the cut, the first ones."""
    kth = values.topk(k, dim=1, largest=False).values[:, -1:]  # [M, 1]
    below = values < kth
    tied = values == kth
    room = k - below.sum(dim=1, keepdim=True)  # tied values still taken, per row
    return below | (tied & (tied.cumsum(dim=1) <= room))


def closest_per_level(
    gt_centers: Tensor,
    candidate_centers: Tensor,
    num_per_level: list[int],
    valid: Tensor,
    topk: int,
) -> Tensor:
    """On each level, the ``topk`` valid candidates nearest to each ground truth's centre.

    Args:
        gt_centers: ``Tensor[M, 2]`` (x, y) in pixels.
        candidate_centers: ``Tensor[N, 2]`` (x, y) in pixels, levels concatenated in order.
        num_per_level: candidates of each level; sums to N.
        valid: ``Tensor[N]`` bool: candidates that may be selected.
        topk: candidates kept per level and ground truth (all of a level's valid ones when
            it has fewer).

    Returns:
        ``Tensor[M, N]`` bool: candidate n is among ground truth m's nearest on its level.
        Equal distances are ranked by candidate index.
    """
    num_gt = gt_centers.shape[0]
    selected = torch.zeros(
        num_gt, candidate_centers.shape[0], dtype=torch.bool, device=gt_centers.device
    )
    start = 0
    for count in num_per_level:
        end = start + count
        k = min(topk, count)
        if k > 0:
            offsets = candidate_centers[None, start:end, :] - gt_centers[:, None, :]
            sq_dist = offsets.pow(2).sum(dim=2)  # [M, count]; same order as the L2 distance
            sq_dist = sq_dist.masked_fill(~valid[None, start:end], float("inf"))
            selected[:, start:end] = smallest_k(sq_dist, k)
        start = end
    return selected & valid[None, :]


def iou_thresholds(iou: Tensor, selected: Tensor) -> Tensor:
    """Per ground truth, the mean plus the standard deviation of its selected IoUs.

    The standard deviation is the unbiased estimator (divided by n - 1), as ``Tensor.std``,
    which the official ATSS code calls; it is 0 for a single selected candidate.

    Args:
        iou: ``Tensor[M, N]``.
        selected: ``Tensor[M, N]`` bool: the candidates of each ground truth.

    Returns:
        ``Tensor[M]``: the IoU threshold of each ground truth (``inf`` when it has no
        selected candidate, so that nothing reaches it).
    """
    count = selected.sum(dim=1).to(iou.dtype)  # [M]
    mean = torch.where(selected, iou, 0.0).sum(dim=1) / count.clamp(min=1)
    squares = torch.where(selected, (iou - mean[:, None]).pow(2), 0.0).sum(dim=1)
    std = (squares / (count - 1).clamp(min=1)).sqrt()
    return torch.where(count > 0, mean + std, torch.full_like(mean, float("inf")))


def center_inside(boxes: Tensor, centers: Tensor, eps: float) -> Tensor:
    """``Tensor[P]`` bool: each centre is farther than ``eps`` pixels inside every side of
    its box (``boxes``: ``Tensor[P, 4]`` XYXY; ``centers``: ``Tensor[P, 2]`` (x, y))."""
    margins = torch.cat([centers - boxes[:, :2], boxes[:, 2:] - centers], dim=1)  # [P, 4]
    return margins.min(dim=1).values > eps


def positives(
    iou: Tensor, selected: Tensor, gt_boxes: Tensor, candidate_centers: Tensor, eps: float
) -> Tensor:
    """``Tensor[M, N]`` bool: the selected candidates whose IoU reaches their ground truth's
    threshold (:func:`iou_thresholds`) and whose centre lies inside it
    (:func:`center_inside`); ``gt_boxes``: ``Tensor[M, 4]``; ``candidate_centers``:
    ``Tensor[N, 2]``."""
    gt_idx, cand_idx = selected.nonzero(as_tuple=True)  # the M x k x L selected pairs
    passed = (iou[gt_idx, cand_idx] >= iou_thresholds(iou, selected)[gt_idx]) & center_inside(
        gt_boxes[gt_idx], candidate_centers[cand_idx], eps
    )
    is_pos = torch.zeros_like(selected)
    is_pos[gt_idx[passed], cand_idx[passed]] = True
    return is_pos


@MATCHER_REGISTRY.register()
class ATSSMatcher(Matcher):
    """Labels candidates positive by the statistics of each object's nearest candidates.

    For each ground truth g (Algorithm 1): on each feature level, the ``topk`` candidates
    whose centres are nearest (L2) to g's centre; over these k x L candidates, the IoU
    threshold ``t_g = mean + std`` of their IoUs with g; the positives of g are those with
    IoU >= t_g whose centre lies inside g by more than ``center_in_gt_eps`` pixels on every
    side. A candidate positive for several ground truths goes to the one of highest IoU.
    Invalid candidates (``MatchInputs.valid`` False) are never selected and do not enter the
    statistics. Every other candidate is negative: the matcher ignores none.

    Args:
        topk: candidates per level and ground truth (paper and official code: 9 per anchor
            position; with A anchors per position the official code takes 9 * A).
        center_in_gt_eps: margin in pixels the candidate centre must exceed inside every
            side of the box (official code: 0.01; 0 is "strictly inside").
        config_key: the config key naming this matcher, for error messages.
    """

    def __init__(
        self, *, topk: int = 9, center_in_gt_eps: float = 0.01, config_key: str = "ATSSMatcher"
    ):
        if isinstance(topk, bool) or int(topk) != topk or topk < 1:
            raise ValueError(
                f"ATSSMatcher topk must be a positive integer; got {topk!r} (MODEL.ATSS.TOPK)."
            )
        self.topk = int(topk)
        self.center_in_gt_eps = float(center_in_gt_eps)
        self.config_key = config_key

    @classmethod
    def from_config(
        cls, cfg: CfgNode, node: CfgNode, input_shape: object | None = None
    ) -> dict[str, Any]:
        """``TOPK`` and ``CENTER_IN_GT_EPS`` of ``MODEL.ATSS`` (shared by every ATSS matcher
        of the model); ``node`` (the matcher node naming it) only names it in errors."""
        if "ATSS" not in cfg.MODEL:
            raise KeyError(
                "ATSSMatcher reads MODEL.ATSS.TOPK and MODEL.ATSS.CENTER_IN_GT_EPS, which are "
                "missing: list projects.atss in the config's IMPORTS (or call "
                "projects.atss.add_atss_config(cfg) on a config built in Python)."
            )
        where = node_path(cfg, node)
        return {
            "topk": cfg.MODEL.ATSS.TOPK,
            "center_in_gt_eps": cfg.MODEL.ATSS.CENTER_IN_GT_EPS,
            "config_key": f"{where}.NAME" if where else "ATSSMatcher",
        }

    def _levels(self, num_per_level: list[int] | None, num_candidates: int) -> list[int]:
        """``num_per_level``, or one level holding all candidates; checked to sum to N."""
        if num_per_level is None:
            return [num_candidates]
        levels = [int(n) for n in num_per_level]
        if any(n < 0 for n in levels) or sum(levels) != num_candidates:
            raise ValueError(
                f"{self.config_key} = ATSSMatcher got candidates per level {levels} "
                f"(sum {sum(levels)}) for {num_candidates} candidates: the levels must be "
                "non-negative and sum to the number of candidates. The caller of the matcher "
                "passes them (MatchInputs.num_per_level)."
            )
        return levels

    def __call__(self, inputs: MatchInputs) -> tuple[Tensor, Tensor]:
        """Match one image's N candidates against its M ground truths.

        Returns:
            matches: ``Tensor[N]`` int64: the assigned ground truth of a positive, the
                highest-IoU ground truth of any other candidate (ties: the first; 0 when
                M = 0).
            labels: ``Tensor[N]`` int8: 1 positive, 0 negative, -1 where ``valid`` is False.
        """
        iou = inputs.iou
        num_gt, num_cand = iou.shape
        device = iou.device
        levels = self._levels(inputs.num_per_level, num_cand)
        valid = inputs.valid
        if valid is None:
            valid = torch.ones(num_cand, dtype=torch.bool, device=device)
        labels = torch.zeros(num_cand, dtype=torch.int8, device=device)
        labels[~valid] = -1
        if num_gt == 0 or num_cand == 0:
            return torch.zeros(num_cand, dtype=torch.int64, device=device), labels

        gt_boxes = inputs.gt_boxes.tensor.to(iou)
        gt_centers = inputs.gt_boxes.centers().to(iou)
        candidate_centers = inputs.candidates.centers().to(iou)
        selected = closest_per_level(gt_centers, candidate_centers, levels, valid, self.topk)
        is_pos = positives(iou, selected, gt_boxes, candidate_centers, self.center_in_gt_eps)
        pos_iou, pos_gt = torch.where(is_pos, iou, float("-inf")).max(dim=0)  # [N] each
        positive = torch.isfinite(pos_iou)
        matches = torch.where(positive, pos_gt, iou.max(dim=0).indices)
        labels[positive] = 1
        return matches, labels
