"""From per-anchor objectness and deltas to proposals (paper 3.1, "proposals" in PAPER.md)."""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import batched_nms, nms

from detkit.modeling.box_coder import BoxCoder
from detkit.structures import Boxes, Instances

__all__ = ["find_top_proposals"]


def find_top_proposals(
    anchors: Tensor,
    objectness_logits: Tensor,
    anchor_deltas: Tensor,
    box_coder: BoxCoder,
    image_sizes: list[tuple[int, int]],
    scale_factors: list[float],
    *,
    pre_nms_topk: int,
    post_nms_topk: int,
    nms_thresh: float,
    min_size: float,
    legacy_plus_one: bool = False,
    num_anchors_per_level: list[int] | None = None,
) -> list[Instances]:
    """Proposals of each image, in the released code's order.

    Per image: decode every anchor, clip to the image, drop boxes smaller than ``min_size``
    pixels at the original image scale, keep the ``pre_nms_topk`` best by objectness, NMS at
    ``nms_thresh``, keep the ``post_nms_topk`` best. Nothing here is differentiated: the
    proposals are constants to the ROI heads (approximate joint training).

    With ``num_anchors_per_level`` (a feature pyramid, ``MODEL.RPN.TOPK_SCOPE "per_level"``)
    the ``pre_nms_topk`` best are kept on each level, NMS runs within each level, and the
    ``post_nms_topk`` best over all levels are kept.

    Args:
        anchors: ``Tensor[N, 4]`` anchors of all feature maps, shared by all images.
        objectness_logits: ``Tensor[B, N]``.
        anchor_deltas: ``Tensor[B, N, 4]``.
        box_coder: decodes deltas on the anchors.
        image_sizes: (height, width) of each image in the padded batch.
        scale_factors: resized / original size of each image; ``min_size * scale`` is the
            threshold in the input's pixels.
        pre_nms_topk, post_nms_topk, nms_thresh, min_size: see above.
        legacy_plus_one: width convention of clipping and the size filter.
        num_anchors_per_level: anchors of each feature map, in the order of ``anchors``
            (their sum is N), or None for one global ranking.

    Returns:
        One ``Instances(proposal_boxes: Boxes, objectness_logits: Tensor[P])`` per image,
        sorted by decreasing objectness, ``P <= post_nms_topk``.
    """
    results = []
    with torch.no_grad():
        for logits, deltas, image_size, scale in zip(
            objectness_logits, anchor_deltas, image_sizes, scale_factors
        ):
            boxes = Boxes(box_coder.decode(deltas, anchors), legacy_plus_one)
            boxes.clip(image_size)
            threshold = min_size * scale
            keep = (boxes.widths() >= threshold) & (boxes.heights() >= threshold)
            if num_anchors_per_level is not None:
                results.append(
                    _top_per_level(
                        boxes,
                        logits,
                        keep,
                        num_anchors_per_level,
                        image_size,
                        pre_nms_topk=pre_nms_topk,
                        post_nms_topk=post_nms_topk,
                        nms_thresh=nms_thresh,
                    )
                )
                continue
            boxes, logits = boxes[keep], logits[keep]
            # Traced (torch.export), the count is unknown: the best min(count, pre_nms_topk).
            count = torch.sym_int(logits.numel())
            if torch.compiler.is_compiling() or count > pre_nms_topk:
                logits, order = logits.topk(torch.sym_min(count, pre_nms_topk))
                boxes = boxes[order]
            else:
                logits, order = logits.sort(descending=True)
                boxes = boxes[order]
            if nms_thresh >= 1.0:  # no box overlaps another by more than IoU 1: NMS is a no-op
                keep = torch.arange(min(len(logits), post_nms_topk), device=logits.device)
            else:
                keep = nms(boxes.tensor, logits, nms_thresh)[:post_nms_topk]
            results.append(
                Instances(image_size, proposal_boxes=boxes[keep], objectness_logits=logits[keep])
            )
    return results


def _top_per_level(
    boxes: Boxes,
    logits: Tensor,
    valid: Tensor,
    num_anchors_per_level: list[int],
    image_size: tuple[int, int],
    *,
    pre_nms_topk: int,
    post_nms_topk: int,
    nms_thresh: float,
) -> Instances:
    """One image's proposals with a ranking per level: the ``pre_nms_topk`` best valid boxes
    of each level, NMS within each level, the ``post_nms_topk`` best over all.

    Args:
        boxes: ``Boxes[N]`` decoded and clipped; logits: ``Tensor[N]``.
        valid: ``Tensor[N]`` bool, boxes that passed the size filter.
    """
    if sum(num_anchors_per_level) != len(logits):
        raise ValueError(
            f"num_anchors_per_level {num_anchors_per_level} sums to "
            f"{sum(num_anchors_per_level)}, but there are {len(logits)} anchors."
        )
    chosen, levels = [], []
    start = 0
    for level, count in enumerate(num_anchors_per_level):
        candidates = torch.nonzero(valid[start : start + count]).squeeze(1) + start
        start += count
        k = min(pre_nms_topk, candidates.numel())
        order = logits[candidates].topk(k).indices
        chosen.append(candidates[order])
        levels.append(torch.full((k,), level, dtype=torch.int64, device=logits.device))
    index, level_ids = torch.cat(chosen), torch.cat(levels)
    boxes, logits = boxes[index], logits[index]
    if nms_thresh >= 1.0:  # NMS is a no-op: rank all levels together
        keep = logits.sort(descending=True).indices[:post_nms_topk]
    else:
        keep = batched_nms(boxes.tensor, logits, level_ids, nms_thresh)[:post_nms_topk]
    return Instances(image_size, proposal_boxes=boxes[keep], objectness_logits=logits[keep])
