"""The one labelling path of every head: match candidates to ground truth, sample, gather targets.

A candidate is an anchor (RPN, one-stage detectors) or a proposal (ROI heads). For one image:

1. :func:`match_candidates` builds the :class:`~detkit.modeling.matcher.MatchInputs` (the
   IoU of ground truth and candidates, computed once, the boxes, the candidates per feature
   level and which candidates may be labelled at all) and asks the matcher for each
   candidate's ground truth and label (1 positive, 0 negative, -1 ignored).
2. :func:`sample_candidates` asks the sampler which labelled candidates enter the loss
   (with per-candidate losses for samplers that declare ``needs_losses``).
3. :func:`matched_targets` copies every ``gt_*`` field of the ground truth to the
   candidates through the matches, so a head that needs another field (masks, keypoints,
   attributes) finds it on its candidates without a change to the heads.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from detkit.modeling.matcher import Matcher, MatchInputs
from detkit.modeling.sampler import Sampler
from detkit.structures import Boxes, Instances, pairwise_iou

__all__ = [
    "check_sampler_needs",
    "match_candidates",
    "matched_targets",
    "sample_candidates",
    "sampled_labels",
]


def match_candidates(
    matcher: Matcher,
    candidates: Boxes,
    gt_boxes: Boxes,
    *,
    num_per_level: list[int] | None = None,
    valid: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Match one image's N candidates to its M ground-truth boxes.

    Args:
        matcher: a ``MATCHER_REGISTRY`` member.
        candidates: ``Boxes[N]``; gt_boxes: ``Boxes[M]`` (same device and convention).
        num_per_level: candidates of each feature level, in order (anchors), or None.
        valid: ``Tensor[N]`` bool, or None for all: an invalid candidate (e.g. an anchor
            crossing the image border, paper 3.1.3) has IoU -1 with every ground truth, so it
            is never a best match, and its label is -1 (ignored).

    Returns:
        matches: ``Tensor[N]`` int64 index of the matched ground truth (0 when M = 0).
        labels: ``Tensor[N]`` int8: 1 positive, 0 negative, -1 ignored.
    """
    iou = pairwise_iou(gt_boxes, candidates)  # [M, N]
    if valid is not None:
        iou[:, ~valid] = -1.0
    inputs = MatchInputs(
        iou=iou,
        gt_boxes=gt_boxes,
        candidates=candidates,
        num_per_level=num_per_level,
        valid=valid,
    )
    matches, labels = matcher(inputs)
    labels = labels.to(torch.int8)
    if valid is not None:
        labels[~valid] = -1
    return matches, labels


def sample_candidates(
    sampler: Sampler, labels: Tensor, losses: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """``(positive_idx, negative_idx)`` of the candidates in the loss (int64 indices)."""
    return sampler(labels, losses=losses)


def sampled_labels(labels: Tensor, positive: Tensor, negative: Tensor) -> Tensor:
    """``Tensor[N]`` int8: 1 for ``positive``, 0 for ``negative``, -1 for the rest."""
    sampled = torch.full_like(labels, -1)
    sampled[positive] = 1
    sampled[negative] = 0
    return sampled


def matched_targets(
    gt: Instances,
    matches: Tensor,
    labels: Tensor,
    candidates: Boxes,
    background_class: int,
    gt_boxes: Boxes | None = None,
) -> dict[str, Any]:
    """Every ``gt_*`` field of ``gt`` for each candidate, through ``matches``.

    ``gt_boxes`` (optional) replaces ``gt.gt_boxes``: the boxes the candidates were matched
    against, on their device and in the model's width convention.

    ``gt_classes`` becomes ``background_class`` where the label is 0 and -1 where it is -1.
    Without ground truth (M = 0) every candidate is background: ``gt_boxes`` are the
    candidates themselves (never used as regression targets) and other fields are zeros of
    the field's shape.

    Returns:
        ``{field: value}`` with N entries per value (``Boxes`` or tensors).
    """
    targets: dict[str, Any] = {}
    num_gt = len(gt)
    fields = dict(gt.get_fields())
    if gt_boxes is not None:
        fields["gt_boxes"] = gt_boxes
    for name, value in fields.items():
        if not name.startswith("gt_"):
            continue
        if num_gt > 0:
            targets[name] = value[matches]
        elif isinstance(value, Boxes):
            targets[name] = Boxes(candidates.tensor.clone(), candidates.legacy_plus_one)
        else:
            shape = (len(matches), *value.shape[1:])
            targets[name] = torch.zeros(shape, dtype=value.dtype, device=matches.device)
    if "gt_classes" in targets:
        classes = targets["gt_classes"].to(matches.device).long()
        if num_gt == 0:
            classes = torch.full_like(matches, background_class)
        classes[labels == 0] = background_class
        classes[labels == -1] = -1
        targets["gt_classes"] = classes
    return targets


def check_sampler_needs(sampler: Sampler | None, config_key: str, where: str) -> None:
    """Refuse, when the model is built, a sampler that needs per-candidate losses where the
    caller (``where``, e.g. "the RPN") does not compute them before sampling."""
    if sampler is not None and sampler.needs_losses:
        raise ValueError(
            f"{config_key} is {type(sampler).__name__}, which ranks candidates by their loss, "
            f"but {where} samples before computing any loss. Use a sampler that does not "
            "need losses there (e.g. BalancedPositiveNegativeSampler); hard-example mining "
            "is supported in the ROI heads (MODEL.ROI_HEADS.SAMPLER.NAME)."
        )
