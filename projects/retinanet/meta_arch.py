"""``RetinaNet``: a one-stage detector assembled from detkit's registered components.

The backbone, anchor generator, matcher, box coder (and, optionally, sampler) are detkit's,
built through detkit's ``build_*`` functions from config nodes; only the head, the focal
loss and the dense inference are new (Lin et al., "Focal Loss for Dense Object Detection").
"""

from __future__ import annotations

from typing import Any

import torch
from fvcore.nn import sigmoid_focal_loss, smooth_l1_loss
from torch import Tensor, nn
from torchvision.ops import batched_nms

from detkit.config import CfgNode
from detkit.layers import ShapeSpec
from detkit.modeling import (
    META_ARCH_REGISTRY,
    AnchorGenerator,
    Backbone,
    BoxCoder,
    Matcher,
    Sampler,
    build_anchor_generator,
    build_backbone,
    build_box_coder,
    build_matcher,
    build_sampler,
    select_feature_shapes,
)
from detkit.modeling.labeling import (
    check_sampler_needs,
    match_candidates,
    matched_targets,
    sample_candidates,
    sampled_labels,
)
from detkit.modeling.meta_arch import detector_postprocess
from detkit.modeling.preprocessing import ImagePreprocessor, padding_multiple
from detkit.structures import Boxes, ImageList, Instances, check_gt_classes
from detkit.utils import comm
from projects.retinanet.head import RetinaNetHead

__all__ = ["RetinaNet", "flatten_predictions"]


def flatten_predictions(x: Tensor, values_per_anchor: int) -> Tensor:
    """``Tensor[B, A * V, H, W]`` -> ``Tensor[B, H * W * A, V]``, in the anchor generator's
    order (anchor fastest, then x, then y)."""
    batch, _, height, width = x.shape
    x = x.view(batch, -1, values_per_anchor, height, width)  # [B, A, V, H, W]
    return x.permute(0, 3, 4, 1, 2).reshape(batch, -1, values_per_anchor)


@META_ARCH_REGISTRY.register()
class RetinaNet(nn.Module):
    """Backbone -> dense class and box predictions on every anchor -> detections.

    Training: every anchor is matched to the ground truth (IoU >= 0.5 positive, < 0.4
    negative, in between ignored, plus each object's best anchors); the class loss is the
    sigmoid focal loss over all non-ignored anchors (or over the sampler's picks, when a
    sampler is given), the box loss smooth L1 on positives, both divided by the number of
    positive anchors (paper 4.1), averaged over iterations: a batch of 4 shapes images holds
    from a few to about 80 positives, and dividing by that count alone made the loss spike on
    nearly empty batches. Inference, per image: on each feature map keep the
    (anchor, class) pairs scoring above ``score_thresh``, at most ``topk_candidates`` of
    them, decode their boxes; then per-class NMS over all maps, the best
    ``detections_per_image``, and boxes rescaled to the original image.

    Args:
        backbone: shared features (``BACKBONE_REGISTRY``).
        head: per-map class logits and box deltas (:class:`RetinaNetHead`).
        anchor_generator: anchors per feature map (``ANCHOR_GENERATOR_REGISTRY``).
        anchor_matcher: labels anchors against ground truth (``MATCHER_REGISTRY``).
        box_coder: deltas between anchors and boxes (``BOX_CODER_REGISTRY``).
        in_features: backbone outputs the head reads, in the anchor generator's order.
        num_classes: K foreground classes.
        pixel_mean, pixel_std: per-channel normalization of the input images.
        sampler: ``None`` puts every non-ignored anchor in the class loss (the paper);
            a ``SAMPLER_REGISTRY`` entry restricts it to the sampled anchors (with
            ``focal_loss_gamma`` 0 this is an RPN-style class-specific dense detector).
        focal_loss_alpha: weight of positives; negative disables the weighting.
        focal_loss_gamma: focusing parameter (0: binary cross-entropy).
        smooth_l1_beta: beta of the box loss.
        loss_normalizer_momentum: m of the moving average of positives per batch,
            ``n <- m * n + (1 - m) * positives`` (starting at the first batch's count);
            0 divides by each batch's own count.
        score_thresh, topk_candidates, nms_thresh, detections_per_image: inference.
        legacy_plus_one: the ``x2 - x1 + 1`` width convention.
        size_divisibility: pad each batch to a multiple of this (``INPUT.SIZE_DIVISIBILITY``).
    """

    #: The config key of the number of classes (checked against the datasets').
    num_classes_key = "MODEL.RETINANET.NUM_CLASSES"

    def __init__(
        self,
        *,
        backbone: Backbone,
        head: nn.Module,
        anchor_generator: AnchorGenerator,
        anchor_matcher: Matcher,
        box_coder: BoxCoder,
        in_features: list[str],
        num_classes: int,
        pixel_mean: list[float],
        pixel_std: list[float],
        sampler: Sampler | None = None,
        focal_loss_alpha: float = 0.25,
        focal_loss_gamma: float = 2.0,
        smooth_l1_beta: float = 0.1,
        loss_normalizer_momentum: float = 0.9,
        score_thresh: float = 0.05,
        topk_candidates: int = 1000,
        nms_thresh: float = 0.5,
        detections_per_image: int = 100,
        legacy_plus_one: bool = False,
        size_divisibility: int = 0,
    ):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.anchor_generator = anchor_generator
        self.anchor_matcher = anchor_matcher
        self.box_coder = box_coder
        check_sampler_needs(sampler, "MODEL.RETINANET.SAMPLER.NAME", "RetinaNet")
        self.sampler = sampler
        self.in_features = list(in_features)
        self.num_classes = num_classes
        self.focal_loss_alpha = focal_loss_alpha
        self.focal_loss_gamma = focal_loss_gamma
        self.smooth_l1_beta = smooth_l1_beta
        self.loss_normalizer_momentum = loss_normalizer_momentum
        # The moving average of positives per batch; saved in checkpoints so that a resumed
        # run continues it. Negative until the first training batch.
        self.register_buffer("loss_normalizer", torch.tensor(-1.0))
        self.score_thresh = score_thresh
        self.topk_candidates = topk_candidates
        self.nms_thresh = nms_thresh
        self.detections_per_image = detections_per_image
        self.legacy_plus_one = legacy_plus_one
        # Normalization, padding and ground-truth gathering, as detkit's meta-architectures.
        self.preprocessor = ImagePreprocessor(
            pixel_mean, pixel_std, padding_multiple(backbone.size_divisibility, size_divisibility)
        )

    @property
    def device(self) -> torch.device:
        return self.preprocessor.device

    @classmethod
    def from_config(
        cls, cfg: CfgNode, node: CfgNode, input_shape: object | None = None
    ) -> dict[str, Any]:
        """``node``: ``MODEL`` (``build_model`` passes it; its ``META_ARCHITECTURE`` names
        this class). Reads ``MODEL.RETINANET`` (``IN_FEATURES``, ``NUM_CLASSES``, the head,
        loss and test keys; its ``MATCHER``, ``BOX_CODER`` and optional ``SAMPLER``
        children), ``MODEL.PIXEL_MEAN``, ``MODEL.PIXEL_STD``, ``INPUT.SIZE_DIVISIBILITY``
        and ``MODEL.LEGACY_PLUS_ONE``; the backbone and anchors come from ``MODEL.BACKBONE``
        and ``MODEL.ANCHOR_GENERATOR``. ``input_shape``: unused (the backbone's input is
        ``len(MODEL.PIXEL_MEAN)`` channels)."""
        r = cfg.MODEL.RETINANET
        backbone = build_backbone(cfg, input_shape=ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN)))
        shapes = backbone.output_shape()
        maps = select_feature_shapes(shapes, list(r.IN_FEATURES), "MODEL.RETINANET.IN_FEATURES")
        channels = {s.channels for s in maps}
        if len(channels) != 1:
            raise ValueError(
                f"The RetinaNet head is shared by all maps of MODEL.RETINANET.IN_FEATURES; "
                f"their channels differ: {sorted(channels)}."
            )
        anchor_generator = build_anchor_generator(cfg, input_shape=maps)
        head = RetinaNetHead(
            in_channels=channels.pop(),
            num_anchors=anchor_generator.num_anchors_per_location,
            num_classes=r.NUM_CLASSES,
            num_convs=r.NUM_CONVS,
            prior_prob=r.PRIOR_PROB,
            norm=r.NORM,
        )
        return {
            "backbone": backbone,
            "head": head,
            "anchor_generator": anchor_generator,
            "anchor_matcher": build_matcher(cfg, r.MATCHER),
            "box_coder": build_box_coder(cfg, r.BOX_CODER),
            "sampler": build_sampler(cfg, r.SAMPLER) if r.SAMPLER.NAME else None,
            "in_features": list(r.IN_FEATURES),
            "num_classes": r.NUM_CLASSES,
            "pixel_mean": list(cfg.MODEL.PIXEL_MEAN),
            "pixel_std": list(cfg.MODEL.PIXEL_STD),
            "size_divisibility": cfg.INPUT.SIZE_DIVISIBILITY,
            "focal_loss_alpha": r.FOCAL_LOSS_ALPHA,
            "focal_loss_gamma": r.FOCAL_LOSS_GAMMA,
            "smooth_l1_beta": r.SMOOTH_L1_BETA,
            "loss_normalizer_momentum": r.LOSS_NORMALIZER_MOMENTUM,
            "score_thresh": r.SCORE_THRESH_TEST,
            "topk_candidates": r.TOPK_CANDIDATES_TEST,
            "nms_thresh": r.NMS_THRESH_TEST,
            "detections_per_image": r.DETECTIONS_PER_IMAGE,
            "legacy_plus_one": cfg.MODEL.LEGACY_PLUS_ONE,
        }

    def forward(self, batched_inputs: list[dict[str, Any]]):
        """Training: ``{"loss_cls", "loss_box_reg"}``. Inference: ``[{"instances":
        Instances(pred_boxes, scores, pred_classes)}]`` per image, original coordinates.

        Args:
            batched_inputs: per image ``{"image": Tensor[C, H, W]`` (resized, 0-255),
                ``"instances": Instances(gt_boxes, gt_classes)`` (training), ``"height"``,
                ``"width"`` (original size, optional)``}``.
        """
        images = self.preprocessor(batched_inputs)
        features = self.backbone(images.tensor)
        maps = [features[f] for f in self.in_features]
        anchors = self.anchor_generator(maps)  # per map [H * W * A, 4]
        logits, deltas = self.head(maps)
        logits = [flatten_predictions(x, self.num_classes) for x in logits]  # [B, HWA, K]
        deltas = [flatten_predictions(x, 4) for x in deltas]  # [B, HWA, 4]
        if self.training:
            gt = self.preprocessor.ground_truth(batched_inputs)
            all_anchors = torch.cat(anchors)
            gt_classes, gt_boxes = self.label_anchors(all_anchors, gt, [len(a) for a in anchors])
            return self.losses(
                all_anchors,
                torch.cat(logits, dim=1),
                torch.cat(deltas, dim=1),
                gt_classes,
                gt_boxes,
            )
        detections = self.inference(images, anchors, logits, deltas)
        return [
            {"instances": detector_postprocess(det, h, w)}
            for det, (h, w) in zip(detections, images.original_sizes)
        ]

    @torch.no_grad()
    def label_anchors(
        self, anchors: Tensor, gt_instances: list[Instances], num_per_level: list[int] | None = None
    ) -> tuple[Tensor, Tensor]:
        """Class target and matched box of every anchor of every image, through detkit's
        labelling path (:mod:`detkit.modeling.labeling`; ``num_per_level``: anchors per map,
        for matchers that use levels).

        Returns:
            gt_classes: ``Tensor[B, N]`` int64: the class ``0 .. K-1`` of a positive
                anchor, ``K`` for a negative one, -1 for an anchor left out of the loss
                (ignored by the matcher, or not sampled).
            gt_boxes: ``Tensor[B, N, 4]`` matched ground-truth box (meaningful where
                positive).
        """
        anchor_boxes = Boxes(anchors, self.legacy_plus_one)
        all_classes, all_boxes = [], []
        for gt in gt_instances:
            gt_boxes = Boxes(gt.gt_boxes.tensor.to(anchors), self.legacy_plus_one)
            matches, labels = match_candidates(
                self.anchor_matcher, anchor_boxes, gt_boxes, num_per_level=num_per_level
            )
            if self.sampler is not None:
                labels = sampled_labels(labels, *sample_candidates(self.sampler, labels))
            if len(gt_boxes) > 0:
                check_gt_classes(gt.gt_classes, self.num_classes, "MODEL.RETINANET.NUM_CLASSES")
            targets = matched_targets(
                gt, matches, labels, anchor_boxes, self.num_classes, gt_boxes=gt_boxes
            )
            all_classes.append(targets["gt_classes"])
            all_boxes.append(targets["gt_boxes"].tensor)
        return torch.stack(all_classes), torch.stack(all_boxes)

    def losses(
        self,
        anchors: Tensor,
        pred_logits: Tensor,
        pred_deltas: Tensor,
        gt_classes: Tensor,
        gt_boxes: Tensor,
    ) -> dict[str, Tensor]:
        """Focal loss over the labelled anchors, smooth L1 on the positive ones.

        Args:
            anchors: ``Tensor[N, 4]`` of all maps.
            pred_logits: ``Tensor[B, N, K]``; pred_deltas: ``Tensor[B, N, 4]``.
            gt_classes: ``Tensor[B, N]`` from :meth:`label_anchors`.
            gt_boxes: ``Tensor[B, N, 4]`` from :meth:`label_anchors`.

        Returns:
            ``{"loss_cls", "loss_box_reg"}``, each divided by the moving average of positive
            anchors per batch (at least 1); in training the average is updated first.
        """
        valid = gt_classes >= 0
        positive = valid & (gt_classes < self.num_classes)
        normalizer = max(self._update_normalizer(int(positive.sum())), 1.0)
        # One-hot over K + 1 columns, then drop the background column: negatives are all 0.
        targets = nn.functional.one_hot(gt_classes[valid], self.num_classes + 1)
        targets = targets[:, : self.num_classes].to(pred_logits.dtype)
        loss_cls = sigmoid_focal_loss(
            pred_logits[valid],
            targets,
            alpha=self.focal_loss_alpha,
            gamma=self.focal_loss_gamma,
            reduction="sum",
        )
        num_images = gt_classes.shape[0]
        box_targets = self.box_coder.encode(
            anchors.expand(num_images, -1, -1)[positive], gt_boxes[positive]
        )
        loss_box = smooth_l1_loss(
            pred_deltas[positive], box_targets, self.smooth_l1_beta, reduction="sum"
        )
        return {"loss_cls": loss_cls / normalizer, "loss_box_reg": loss_box / normalizer}

    def _update_normalizer(self, num_positive: int) -> float:
        """The loss normalizer after a batch with ``num_positive`` positive anchors."""
        if comm.get_world_size() > 1:  # every process divides by the same, global count
            num_positive = sum(comm.all_gather(num_positive)) / comm.get_world_size()
        if not self.training:
            return float(num_positive)
        m = self.loss_normalizer_momentum
        previous = float(self.loss_normalizer)
        value = float(num_positive) if previous < 0 else m * previous + (1 - m) * num_positive
        self.loss_normalizer.fill_(value)
        return value

    @torch.no_grad()
    def inference(
        self,
        images: ImageList,
        anchors: list[Tensor],
        logits: list[Tensor],
        deltas: list[Tensor],
    ) -> list[Instances]:
        """Detections of each image in the padded input's pixels.

        Args:
            images: the batch (its ``image_sizes`` clip the boxes).
            anchors: per map ``Tensor[N_l, 4]``.
            logits: per map ``Tensor[B, N_l, K]``; deltas: per map ``Tensor[B, N_l, 4]``.
        """
        results = []
        for i, image_size in enumerate(images.image_sizes):
            boxes, scores, classes = [], [], []
            for level_anchors, level_logits, level_deltas in zip(anchors, logits, deltas):
                probs = level_logits[i].sigmoid().flatten()  # [N_l * K], class fastest
                candidates = torch.nonzero(probs > self.score_thresh).flatten()
                level_scores = probs[candidates]
                if level_scores.numel() > self.topk_candidates:
                    level_scores, order = level_scores.topk(self.topk_candidates)
                    candidates = candidates[order]
                anchor_idx = candidates // self.num_classes
                boxes.append(
                    self.box_coder.decode(level_deltas[i][anchor_idx], level_anchors[anchor_idx])
                )
                scores.append(level_scores)
                classes.append(candidates % self.num_classes)
            kept = Boxes(torch.cat(boxes), self.legacy_plus_one)
            kept.clip(image_size)
            scores_, classes_ = torch.cat(scores), torch.cat(classes)
            # batched_nms keeps NMS within each class; its output is sorted by score.
            keep = batched_nms(kept.tensor, scores_, classes_, self.nms_thresh)
            keep = keep[: self.detections_per_image]
            results.append(
                Instances(
                    image_size,
                    pred_boxes=kept[keep],
                    scores=scores_[keep],
                    pred_classes=classes_[keep],
                )
            )
        return results
