"""Fast R-CNN predictor: class scores and per-class box deltas, their losses and inference."""

from __future__ import annotations

import torch
from fvcore.nn import smooth_l1_loss
from torch import Tensor, nn
from torch.nn import functional as F
from torchvision.ops import batched_nms, nms

from detkit.structures import Boxes, Instances

__all__ = [
    "FastRCNNOutputLayers",
    "fast_rcnn_classification_statistics",
    "fast_rcnn_inference_single_image",
]


class FastRCNNOutputLayers(nn.Module):
    """Two sibling linear layers on the box head's vector: K+1 scores and box deltas.

    Classes are ``0 .. K-1`` (the dataset's foreground classes) and ``K`` is background.
    With class-specific regression there are ``4 * (K + 1)`` delta outputs; the background
    slot is never trained (PAPER.md). Class-agnostic regression has 4 outputs.

    Args:
        in_features: D, the box head's output size.
        num_classes: K foreground classes.
        cls_agnostic_bbox_reg: one box for all classes.
    """

    def __init__(self, *, in_features: int, num_classes: int, cls_agnostic_bbox_reg: bool = False):
        super().__init__()
        self.num_classes = num_classes
        self.cls_agnostic_bbox_reg = cls_agnostic_bbox_reg
        self.cls_score = nn.Linear(in_features, num_classes + 1)
        num_box_outputs = 1 if cls_agnostic_bbox_reg else num_classes + 1
        self.bbox_pred = nn.Linear(in_features, 4 * num_box_outputs)
        # Initialization of the released code: N(0, 0.01) scores, N(0, 0.001) deltas, bias 0.
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``[R, D]`` -> (scores ``[R, K + 1]``, deltas ``[R, 4 * (K + 1)]`` or ``[R, 4]``)."""
        x = x.flatten(1)
        return self.cls_score(x), self.bbox_pred(x)

    def per_roi_losses(
        self,
        scores: Tensor,
        deltas: Tensor,
        gt_classes: Tensor,
        regression_targets: Tensor,
        smooth_l1_beta: float,
    ) -> tuple[Tensor, Tensor]:
        """Unreduced losses of each RoI.

        Args:
            scores: ``[R, K + 1]``; deltas: ``[R, 4 * (K + 1)]`` or ``[R, 4]``.
            gt_classes: ``[R]`` in ``0 .. K`` (``K`` = background).
            regression_targets: ``[R, 4]`` encoded targets (used where foreground).
            smooth_l1_beta: beta of the box loss.

        Returns:
            (classification loss ``[R]``, box loss ``[R]``, zero for background RoIs).
        """
        loss_cls = F.cross_entropy(scores, gt_classes, reduction="none")
        foreground = torch.nonzero((gt_classes >= 0) & (gt_classes < self.num_classes))[:, 0]
        # Only foreground rows enter the box loss: background targets may be meaningless
        # (e.g. encoded from a placeholder box) and must not reach the sum, even as 0 * inf.
        box_deltas = self.select_class_deltas(deltas[foreground], gt_classes[foreground])
        loss_box = torch.zeros_like(loss_cls)
        loss_box[foreground] = smooth_l1_loss(
            box_deltas, regression_targets[foreground], smooth_l1_beta, reduction="none"
        ).sum(dim=1)
        return loss_cls, loss_box

    def losses(
        self,
        scores: Tensor,
        deltas: Tensor,
        gt_classes: Tensor,
        regression_targets: Tensor,
        smooth_l1_beta: float,
    ) -> dict[str, Tensor]:
        """``loss_cls`` (mean cross-entropy) and ``loss_box_reg`` (foreground smooth L1 summed
        over RoIs, divided by the number of sampled RoIs, as in the released code)."""
        loss_cls, loss_box = self.per_roi_losses(
            scores, deltas, gt_classes, regression_targets, smooth_l1_beta
        )
        normalizer = max(gt_classes.numel(), 1)
        return {
            "loss_cls": loss_cls.sum() / normalizer,
            "loss_box_reg": loss_box.sum() / normalizer,
        }

    def select_class_deltas(self, deltas: Tensor, classes: Tensor) -> Tensor:
        """``[R, 4 * (K + 1)]`` deltas -> ``[R, 4]`` of each RoI's class."""
        if self.cls_agnostic_bbox_reg:
            return deltas
        rows = torch.arange(deltas.shape[0], device=deltas.device)
        return deltas.view(deltas.shape[0], self.num_classes + 1, 4)[rows, classes]


@torch.no_grad()
def fast_rcnn_classification_statistics(
    scores: Tensor, gt_classes: Tensor, num_classes: int
) -> dict[str, float]:
    """How well the sampled RoIs of a training batch are classified (argmax of the scores).

    Args:
        scores: ``[R, K + 1]`` class scores of the sampled RoIs (background is class K).
        gt_classes: ``[R]`` their labels in ``0 .. K``.
        num_classes: K.

    Returns:
        ``fast_rcnn/cls_accuracy``: fraction of the RoIs whose predicted class is their label;
        ``fast_rcnn/fg_cls_accuracy``: the same over the foreground RoIs only;
        ``fast_rcnn/false_negative``: fraction of the foreground RoIs predicted background.
        The last two are absent when no RoI is foreground; all are absent without RoIs.
    """
    if gt_classes.numel() == 0:
        return {}
    predicted = scores.argmax(dim=1)
    foreground = (gt_classes >= 0) & (gt_classes < num_classes)
    correct = predicted == gt_classes
    # One host transfer for the four counts.
    num_correct, num_fg, num_fg_correct, num_fg_as_bg = torch.stack(
        [
            correct.sum(),
            foreground.sum(),
            (correct & foreground).sum(),
            ((predicted == num_classes) & foreground).sum(),
        ]
    ).tolist()
    statistics = {"fast_rcnn/cls_accuracy": num_correct / gt_classes.numel()}
    if num_fg > 0:
        statistics["fast_rcnn/fg_cls_accuracy"] = num_fg_correct / num_fg
        statistics["fast_rcnn/false_negative"] = num_fg_as_bg / num_fg
    return statistics


def _batched_nms(boxes: Tensor, scores: Tensor, classes: Tensor, iou_threshold: float) -> Tensor:
    """torchvision's ``batched_nms``; traced (torch.export, torch.compile), its coordinate
    trick (boxes of each class shifted apart, one NMS) without its branches on the number of
    boxes, which is unknown then. The offset is torchvision's, the largest coordinate + 1
    (0 + 1 without boxes)."""
    if not torch.compiler.is_compiling():
        return batched_nms(boxes, scores, classes, iou_threshold)
    largest = torch.cat([boxes.reshape(-1), boxes.new_zeros(1)]).max()
    return nms(boxes + (classes.to(boxes) * (largest + 1))[:, None], scores, iou_threshold)


def fast_rcnn_inference_single_image(
    boxes: Tensor,
    scores: Tensor,
    image_size: tuple[int, int],
    *,
    score_thresh: float,
    nms_thresh: float,
    topk_per_image: int,
    legacy_plus_one: bool = False,
) -> Instances:
    """Detections of one image from per-class boxes and softmax scores (PAPER.md, "Test").

    Per class: keep scores above ``score_thresh``, NMS at ``nms_thresh`` (all classes at once
    with ``batched_nms``); then keep the ``topk_per_image`` best over all classes.

    Args:
        boxes: ``[R, K, 4]`` decoded boxes of each RoI for each foreground class.
        scores: ``[R, K]`` foreground probabilities.
        image_size: (height, width) to clip to.

    Returns:
        ``Instances(pred_boxes: Boxes, scores: Tensor[D], pred_classes: Tensor[D])``.
    """
    num_rois, num_classes = scores.shape
    clipped = Boxes(boxes.reshape(-1, 4).clone(), legacy_plus_one)
    clipped.clip(image_size)
    boxes = clipped.tensor.view(num_rois, num_classes, 4)
    roi_idx, class_idx = (scores > score_thresh).nonzero(as_tuple=True)
    kept_boxes, kept_scores = boxes[roi_idx, class_idx], scores[roi_idx, class_idx]
    # batched_nms keeps NMS within each class; its output is sorted by decreasing score.
    keep = _batched_nms(kept_boxes, kept_scores, class_idx, nms_thresh)[:topk_per_image]
    return Instances(
        image_size,
        pred_boxes=Boxes(kept_boxes[keep], legacy_plus_one),
        scores=kept_scores[keep],
        pred_classes=class_idx[keep],
    )
