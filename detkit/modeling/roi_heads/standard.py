"""Fast R-CNN on proposals: RoI sampling, pooling, the box head, losses and inference."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from detkit.config import CfgNode
from detkit.layers import ShapeSpec
from detkit.modeling.backbone import select_feature_shapes
from detkit.modeling.box_coder import BoxCoder, build_box_coder
from detkit.modeling.labeling import match_candidates, matched_targets, sample_candidates
from detkit.modeling.matcher import Matcher, build_matcher
from detkit.modeling.poolers import ROIPooler, build_roi_pooler
from detkit.modeling.roi_heads.build import ROI_HEADS_REGISTRY, build_roi_box_head
from detkit.modeling.roi_heads.fast_rcnn import (
    FastRCNNOutputLayers,
    fast_rcnn_classification_statistics,
    fast_rcnn_inference_single_image,
)
from detkit.modeling.sampler import Sampler, build_sampler
from detkit.structures import Boxes, ImageList, Instances, check_gt_classes
from detkit.utils.events import try_get_event_storage

__all__ = ["StandardROIHeads"]


@ROI_HEADS_REGISTRY.register()
class StandardROIHeads(nn.Module):
    """The Fast R-CNN detector of Faster R-CNN, on one feature map.

    Training: ground-truth boxes join the proposals, the matcher labels each proposal
    (foreground IoU >= 0.5, background in [lo, 0.5)), the sampler keeps 128 per image with
    at most 25% foreground, and the predictor's losses are computed on them. Inference:
    softmax scores, class-specific decoding, clipping, per-class NMS and the top detections.

    Args:
        in_features: backbone outputs to pool from.
        pooler: RoI pooler (``ROI_POOLER_REGISTRY``).
        box_head: pooled features -> vector (``ROI_BOX_HEAD_REGISTRY``).
        box_predictor: scores and deltas.
        proposal_matcher: labels proposals against ground truth.
        sampler: picks the RoIs of the loss.
        box_coder: deltas between proposals and boxes (weights 10, 10, 5, 5).
        num_classes: K foreground classes; background is class K.
        proposal_append_gt: add ground-truth boxes to the proposals in training.
        smooth_l1_beta: beta of the box loss (sigma 1: beta 1).
        score_thresh, nms_thresh, detections_per_image: inference (0.05, 0.3, 100).
        legacy_plus_one: the ``x2 - x1 + 1`` width convention.
    """

    def __init__(
        self,
        *,
        in_features: list[str],
        pooler: ROIPooler,
        box_head: nn.Module,
        box_predictor: FastRCNNOutputLayers,
        proposal_matcher: Matcher,
        sampler: Sampler,
        box_coder: BoxCoder,
        num_classes: int,
        proposal_append_gt: bool = True,
        smooth_l1_beta: float = 1.0,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.3,
        detections_per_image: int = 100,
        legacy_plus_one: bool = False,
    ):
        super().__init__()
        self.in_features = list(in_features)
        self.pooler = pooler
        self.box_head = box_head
        self.box_predictor = box_predictor
        self.proposal_matcher = proposal_matcher
        self.sampler = sampler
        self.box_coder = box_coder
        self.num_classes = num_classes
        self.proposal_append_gt = proposal_append_gt
        self.smooth_l1_beta = smooth_l1_beta
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_image = detections_per_image
        self.legacy_plus_one = legacy_plus_one

    @classmethod
    def from_config(
        cls, cfg: CfgNode, node: CfgNode, input_shape: dict[str, ShapeSpec] | None = None
    ) -> dict[str, Any]:
        """``node``: ``MODEL.ROI_HEADS``, read for ``IN_FEATURES``, ``NUM_CLASSES``,
        ``CLS_AGNOSTIC_BBOX_REG``, ``PROPOSAL_APPEND_GT``, ``SMOOTH_L1_BETA``,
        ``SCORE_THRESH_TEST``, ``NMS_THRESH_TEST`` and ``DETECTIONS_PER_IMAGE``; its
        ``POOLER``, ``MATCHER``, ``SAMPLER`` and ``BOX_CODER`` children and
        ``MODEL.ROI_BOX_HEAD`` build the parts. ``input_shape``: the backbone's
        ``{name: ShapeSpec}``."""
        if input_shape is None:
            raise ValueError("StandardROIHeads needs input_shape: the backbone's ShapeSpecs.")
        shapes = select_feature_shapes(
            input_shape, list(node.IN_FEATURES), "MODEL.ROI_HEADS.IN_FEATURES"
        )
        pooler = build_roi_pooler(cfg, node.POOLER, input_shape=shapes)
        box_head = build_roi_box_head(cfg, input_shape=pooler.output_shape())
        predictor = FastRCNNOutputLayers(
            in_features=box_head.output_shape().channels,
            num_classes=node.NUM_CLASSES,
            cls_agnostic_bbox_reg=node.CLS_AGNOSTIC_BBOX_REG,
        )
        return {
            "in_features": list(node.IN_FEATURES),
            "pooler": pooler,
            "box_head": box_head,
            "box_predictor": predictor,
            "proposal_matcher": build_matcher(cfg, node.MATCHER),
            "sampler": build_sampler(cfg, node.SAMPLER),
            "box_coder": build_box_coder(cfg, node.BOX_CODER),
            "num_classes": node.NUM_CLASSES,
            "proposal_append_gt": node.PROPOSAL_APPEND_GT,
            "smooth_l1_beta": node.SMOOTH_L1_BETA,
            "score_thresh": node.SCORE_THRESH_TEST,
            "nms_thresh": node.NMS_THRESH_TEST,
            "detections_per_image": node.DETECTIONS_PER_IMAGE,
            "legacy_plus_one": cfg.MODEL.LEGACY_PLUS_ONE,
        }

    def forward(
        self,
        images: ImageList,
        features: dict[str, Tensor],
        proposals: list[Instances],
        targets: list[Instances] | None = None,
    ) -> tuple[list[Instances], dict[str, Tensor]]:
        """Training: ``([], {"loss_cls", "loss_box_reg"})``. Inference: detections, ``{}``.

        In training, when an ``EventStorage`` is current (inside a trainer), it also records
        ``roi_head/num_fg_samples`` and ``roi_head/num_bg_samples`` (sampled RoIs per image)
        and :func:`fast_rcnn_classification_statistics` of the sampled RoIs.

        Args:
            images: the padded batch.
            features: backbone outputs by name.
            proposals: per image ``Instances(proposal_boxes, ...)``.
            targets: per image ``Instances(gt_boxes, gt_classes)``, required in training.
        """
        maps = [features[f] for f in self.in_features]
        if self.training:
            if targets is None:
                raise ValueError("StandardROIHeads in training mode needs targets (per image).")
            sampled = self.label_and_sample_proposals(maps, proposals, targets)
            scores, deltas = self.box_forward(maps, [p.proposal_boxes for p in sampled])
            gt_classes = torch.cat([p.gt_classes for p in sampled])
            regression_targets = self.box_coder.encode(
                torch.cat([p.proposal_boxes.tensor for p in sampled]),
                torch.cat([p.gt_boxes.tensor for p in sampled]),
            )
            losses = self.box_predictor.losses(
                scores, deltas, gt_classes, regression_targets, self.smooth_l1_beta
            )
            storage = try_get_event_storage()
            if storage is not None:
                storage.put_scalars(
                    **fast_rcnn_classification_statistics(
                        scores.detach(), gt_classes, self.num_classes
                    )
                )
            return [], losses
        scores, deltas = self.box_forward(maps, [p.proposal_boxes for p in proposals])
        return self.inference(scores, deltas, proposals), {}

    def box_forward(self, maps: list[Tensor], boxes: list[Boxes]) -> tuple[Tensor, Tensor]:
        """Pool, run the box head and the predictor: ``(scores [R, K+1], deltas)``."""
        return self.box_predictor(self.box_head(self.pooler(maps, boxes)))

    @torch.no_grad()
    def label_and_sample_proposals(
        self, maps: list[Tensor], proposals: list[Instances], targets: list[Instances]
    ) -> list[Instances]:
        """Per image, the sampled RoIs with every ``gt_*`` field of their matched ground
        truth (:func:`~detkit.modeling.labeling.matched_targets`): ``gt_classes`` (K =
        background), ``gt_boxes`` and any other field the targets carry.

        Returns:
            ``Instances(proposal_boxes, gt_classes, gt_boxes, ...)`` per image.
        """
        labelled = []
        for props, gt in zip(proposals, targets):
            gt_boxes = Boxes(gt.gt_boxes.tensor.to(maps[0].device), self.legacy_plus_one)
            boxes = Boxes(props.proposal_boxes.tensor, self.legacy_plus_one)
            if self.proposal_append_gt:
                boxes = Boxes.cat([boxes, gt_boxes])
            matches, labels = match_candidates(self.proposal_matcher, boxes, gt_boxes)
            if len(gt_boxes) > 0:
                check_gt_classes(gt.gt_classes, self.num_classes, "MODEL.ROI_HEADS.NUM_CLASSES")
            targets_of_rois = matched_targets(
                gt, matches, labels, boxes, self.num_classes, gt_boxes=gt_boxes
            )
            labelled.append(
                Instances(props.image_size, proposal_boxes=boxes, **targets_of_rois, labels=labels)
            )
        per_image_losses: list[Tensor | None] = [None] * len(labelled)
        if self.sampler.needs_losses:
            per_image_losses = self._per_roi_losses(maps, labelled)
        sampled = []
        num_fg, num_bg = 0, 0
        for inst, losses in zip(labelled, per_image_losses):
            positive, negative = sample_candidates(self.sampler, inst.labels, losses)
            chosen = inst[torch.cat([positive, negative])]
            chosen.remove("labels")
            sampled.append(chosen)
            num_fg, num_bg = num_fg + len(positive), num_bg + len(negative)
        storage = try_get_event_storage()
        if storage is not None and self.training and sampled:
            # Per image, averaged over the batch.
            storage.put_scalar("roi_head/num_fg_samples", num_fg / len(sampled))
            storage.put_scalar("roi_head/num_bg_samples", num_bg / len(sampled))
        return sampled

    def _per_roi_losses(self, maps: list[Tensor], labelled: list[Instances]) -> list[Tensor]:
        """Loss of every candidate RoI (for hard-example samplers), without gradient."""
        scores, deltas = self.box_forward(maps, [p.proposal_boxes for p in labelled])
        gt_classes = torch.cat([p.gt_classes for p in labelled])
        targets = self.box_coder.encode(
            torch.cat([p.proposal_boxes.tensor for p in labelled]),
            torch.cat([p.gt_boxes.tensor for p in labelled]),
        )
        # Ignored RoIs (class -1) are never sampled; give them class 0 to compute anything.
        loss_cls, loss_box = self.box_predictor.per_roi_losses(
            scores, deltas, gt_classes.clamp(min=0), targets, self.smooth_l1_beta
        )
        return list((loss_cls + loss_box).split([len(p) for p in labelled]))

    def inference(
        self, scores: Tensor, deltas: Tensor, proposals: list[Instances]
    ) -> list[Instances]:
        """Per-image detections in the padded input's pixels."""
        probs = F.softmax(scores, dim=-1)[:, : self.num_classes]  # background is the last class
        counts = [p.num_instances() for p in proposals]
        proposal_boxes = torch.cat([p.proposal_boxes.tensor for p in proposals])
        if self.box_predictor.cls_agnostic_bbox_reg:
            boxes = self.box_coder.decode(deltas, proposal_boxes)
            boxes = boxes[:, None, :].expand(-1, self.num_classes, 4)
        else:
            boxes = self.box_coder.decode(deltas[:, : 4 * self.num_classes], proposal_boxes)
            boxes = boxes.view(-1, self.num_classes, 4)
        results = []
        for b, s, p in zip(boxes.split(counts), probs.split(counts), proposals):
            results.append(
                fast_rcnn_inference_single_image(
                    b,
                    s,
                    p.image_size,
                    score_thresh=self.score_thresh,
                    nms_thresh=self.nms_thresh,
                    topk_per_image=self.detections_per_image,
                    legacy_plus_one=self.legacy_plus_one,
                )
            )
        return results
