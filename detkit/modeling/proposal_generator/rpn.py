"""The Region Proposal Network: anchor labels, the loss of Eq. 1 and proposals (paper 3.1)."""

from __future__ import annotations

from typing import Any

import torch
from fvcore.nn import smooth_l1_loss
from torch import Tensor, nn
from torch.nn import functional as F

from detkit.config import CfgNode
from detkit.layers import ShapeSpec
from detkit.modeling.anchor_generator import AnchorGenerator, build_anchor_generator
from detkit.modeling.backbone import select_feature_shapes
from detkit.modeling.box_coder import BoxCoder, build_box_coder
from detkit.modeling.labeling import (
    check_sampler_needs,
    match_candidates,
    sample_candidates,
    sampled_labels,
)
from detkit.modeling.matcher import Matcher, build_matcher
from detkit.modeling.proposal_generator.build import PROPOSAL_GENERATOR_REGISTRY, build_rpn_head
from detkit.modeling.proposal_generator.proposals import find_top_proposals
from detkit.modeling.sampler import Sampler, build_sampler
from detkit.structures import Boxes, ImageList, Instances
from detkit.utils.events import try_get_event_storage

__all__ = ["RPN"]

_NORMALIZATIONS = ("sampled", "paper")
_TOPK_SCOPES = ("global", "per_level")


@PROPOSAL_GENERATOR_REGISTRY.register()
class RPN(nn.Module):
    """Region Proposal Network over one (or more) feature maps.

    Args:
        in_features: names of the backbone outputs to read.
        head: the RPN head (``RPN_HEAD_REGISTRY``).
        anchor_generator: anchors per feature map.
        anchor_matcher: labels anchors against ground truth (paper 3.1.2).
        sampler: picks the anchors of the loss (256 per image, at most half positive).
        box_coder: Eq. 2 deltas between anchors and boxes.
        boundary_threshold: in training, anchors crossing the image border by more than this
            many pixels are ignored (0 in the paper); -1 keeps every anchor.
        loss_normalization: ``"sampled"`` (released code): the classification loss is averaged
            over the sampled anchors and the regression sum is divided by the same count;
            ``"paper"`` (Eq. 1): N_cls = batch size per image x images, N_reg = number of
            anchor locations (feature-map positions) over the batch.
        loss_weight_loc: lambda of Eq. 1 (code: 1, paper: 10).
        smooth_l1_beta: beta of the smooth L1 box loss (code: 1/9, i.e. sigma 3).
        pre_nms_topk, post_nms_topk: ``(train, test)`` proposal counts before and after NMS.
        topk_scope: ``"global"`` ranks the anchors of all maps together (the paper's one
            map); ``"per_level"`` keeps ``pre_nms_topk`` per map and runs NMS per map before
            the ``post_nms_topk`` best over all (a feature pyramid).
        nms_thresh: IoU of proposal NMS.
        min_size: minimum proposal side at the original image scale.
        legacy_plus_one: the ``x2 - x1 + 1`` width convention.
        test_use_objectness: False gives the paper's "no cls" ablation at inference: the
            objectness is not used, proposals are ``post_nms_topk`` boxes drawn at random
            (a fixed seed), with no ranking and no NMS.
        test_use_regression: False gives the "no reg" ablation at inference: the proposals
            are the anchors themselves (clipped), the box deltas are not applied.
    """

    def __init__(
        self,
        *,
        in_features: list[str],
        head: nn.Module,
        anchor_generator: AnchorGenerator,
        anchor_matcher: Matcher,
        sampler: Sampler,
        box_coder: BoxCoder,
        boundary_threshold: float = 0,
        loss_normalization: str = "sampled",
        loss_weight_loc: float = 1.0,
        smooth_l1_beta: float = 1.0 / 9,
        pre_nms_topk: tuple[int, int] = (12000, 6000),
        post_nms_topk: tuple[int, int] = (2000, 300),
        topk_scope: str = "global",
        nms_thresh: float = 0.7,
        min_size: float = 16.0,
        legacy_plus_one: bool = False,
        test_use_objectness: bool = True,
        test_use_regression: bool = True,
    ):
        super().__init__()
        if loss_normalization not in _NORMALIZATIONS:
            raise ValueError(
                f"RPN loss normalization must be one of {_NORMALIZATIONS}; got "
                f"'{loss_normalization}' (config key MODEL.RPN.LOSS_NORMALIZATION)."
            )
        if topk_scope not in _TOPK_SCOPES:
            raise ValueError(
                f"MODEL.RPN.TOPK_SCOPE must be one of {_TOPK_SCOPES}; got '{topk_scope}'."
            )
        check_sampler_needs(sampler, "MODEL.RPN.SAMPLER.NAME", "the RPN")
        self.topk_scope = topk_scope
        self.in_features = list(in_features)
        self.head = head
        self.anchor_generator = anchor_generator
        self.anchor_matcher = anchor_matcher
        self.sampler = sampler
        self.box_coder = box_coder
        self.boundary_threshold = boundary_threshold
        self.loss_normalization = loss_normalization
        self.loss_weight_loc = loss_weight_loc
        self.smooth_l1_beta = smooth_l1_beta
        self.pre_nms_topk = tuple(pre_nms_topk)
        self.post_nms_topk = tuple(post_nms_topk)
        self.nms_thresh = nms_thresh
        self.min_size = min_size
        self.legacy_plus_one = legacy_plus_one
        self.test_use_objectness = test_use_objectness
        self.test_use_regression = test_use_regression

    @classmethod
    def from_config(
        cls, cfg: CfgNode, node: CfgNode, input_shape: dict[str, ShapeSpec] | None = None
    ) -> dict[str, Any]:
        """Settings from ``node`` when it holds the RPN's keys (a node shaped like
        ``MODEL.RPN``, e.g. a second RPN's), else from ``MODEL.RPN`` (``build_model`` builds
        the RPN from ``MODEL.PROPOSAL_GENERATOR``, which only names it).

        Reads ``IN_FEATURES``, ``BOUNDARY_THRESH``, the loss keys (``LOSS_NORMALIZATION``,
        ``LOSS_WEIGHT_LOC``, ``SMOOTH_L1_BETA``), the proposal keys (``PRE_NMS_TOPK_*``,
        ``POST_NMS_TOPK_*``, ``TOPK_SCOPE``, ``NMS_THRESH``, ``MIN_SIZE``) and
        ``TEST_USE_OBJECTNESS`` / ``TEST_USE_REGRESSION``; its ``HEAD``, ``MATCHER``,
        ``SAMPLER`` and ``BOX_CODER`` children, ``MODEL.ANCHOR_GENERATOR`` and
        ``MODEL.LEGACY_PLUS_ONE`` give the rest. ``input_shape``: the backbone's
        ``{name: ShapeSpec}``."""
        rpn = node if "IN_FEATURES" in node else cfg.MODEL.RPN
        if input_shape is None:
            raise ValueError("RPN needs input_shape: the backbone's {name: ShapeSpec}.")
        shapes = select_feature_shapes(input_shape, list(rpn.IN_FEATURES), "MODEL.RPN.IN_FEATURES")
        return {
            "in_features": list(rpn.IN_FEATURES),
            "head": build_rpn_head(cfg, rpn.HEAD, input_shape=shapes),
            "anchor_generator": build_anchor_generator(cfg, input_shape=shapes),
            "anchor_matcher": build_matcher(cfg, rpn.MATCHER),
            "sampler": build_sampler(cfg, rpn.SAMPLER),
            "box_coder": build_box_coder(cfg, rpn.BOX_CODER),
            "boundary_threshold": rpn.BOUNDARY_THRESH,
            "loss_normalization": rpn.LOSS_NORMALIZATION,
            "loss_weight_loc": rpn.LOSS_WEIGHT_LOC,
            "smooth_l1_beta": rpn.SMOOTH_L1_BETA,
            "pre_nms_topk": (rpn.PRE_NMS_TOPK_TRAIN, rpn.PRE_NMS_TOPK_TEST),
            "post_nms_topk": (rpn.POST_NMS_TOPK_TRAIN, rpn.POST_NMS_TOPK_TEST),
            "topk_scope": rpn.TOPK_SCOPE,
            "nms_thresh": rpn.NMS_THRESH,
            "min_size": rpn.MIN_SIZE,
            "legacy_plus_one": cfg.MODEL.LEGACY_PLUS_ONE,
            "test_use_objectness": rpn.TEST_USE_OBJECTNESS,
            "test_use_regression": rpn.TEST_USE_REGRESSION,
        }

    def forward(
        self,
        images: ImageList,
        features: dict[str, Tensor],
        gt_instances: list[Instances] | None = None,
        input_proposals: list[Instances] | None = None,
    ) -> tuple[list[Instances], dict[str, Tensor]]:
        """Proposals for each image and, in training, ``loss_rpn_cls`` and ``loss_rpn_loc``.

        In training, when an ``EventStorage`` is current (inside a trainer), it also records
        ``rpn/num_pos_anchors`` and ``rpn/num_neg_anchors``: sampled anchors per image.

        Args:
            images: the padded batch (its sizes and scale factors are used).
            features: backbone outputs by name.
            gt_instances: per image ``Instances(gt_boxes, ...)``, required in training.
            input_proposals: ignored: the RPN makes its own (the registry's contract).
        """
        maps = [features[f] for f in self.in_features]
        anchors_per_level = self.anchor_generator(maps)
        anchors = torch.cat(anchors_per_level, dim=0)
        logits, deltas = self.head(maps)
        num_images = maps[0].shape[0]
        # [B, A, H, W] -> [B, H * W * A]: anchor fastest, then x, then y (the anchor order).
        pred_logits = torch.cat([x.permute(0, 2, 3, 1).reshape(num_images, -1) for x in logits], 1)
        pred_deltas = torch.cat(
            [
                d.view(num_images, -1, 4, d.shape[-2], d.shape[-1])
                .permute(0, 3, 4, 1, 2)
                .reshape(num_images, -1, 4)
                for d in deltas
            ],
            dim=1,
        )
        losses: dict[str, Tensor] = {}
        if self.training:
            if gt_instances is None:
                raise ValueError("RPN in training mode needs gt_instances (one per image).")
            labels, target_boxes = self.label_and_sample_anchors(
                anchors, images.image_sizes, gt_instances, [len(a) for a in anchors_per_level]
            )
            storage = try_get_event_storage()
            if storage is not None:
                # Sampled anchors per image, averaged over the batch.
                num_pos, num_neg = torch.stack([(labels == 1).sum(), (labels == 0).sum()]).tolist()
                storage.put_scalar("rpn/num_pos_anchors", num_pos / num_images)
                storage.put_scalar("rpn/num_neg_anchors", num_neg / num_images)
            num_locations = sum(m.shape[-2] * m.shape[-1] for m in maps) * num_images
            losses = self.losses(
                anchors, pred_logits, pred_deltas, labels, target_boxes, num_locations
            )
        mode = 0 if self.training else 1
        pre_nms_topk, nms_thresh = self.pre_nms_topk[mode], self.nms_thresh
        pred_logits, pred_deltas = pred_logits.detach(), pred_deltas.detach()
        if not self.training and not self.test_use_regression:
            pred_deltas = torch.zeros_like(pred_deltas)  # decoding zero deltas gives the anchors
        if not self.training and not self.test_use_objectness:
            # A random ranking of the boxes, the same for every run; NMS at IoU 1 keeps all.
            generator = torch.Generator().manual_seed(0)
            pred_logits = torch.rand(pred_logits.shape, generator=generator).to(pred_logits)
            pre_nms_topk, nms_thresh = pred_logits.shape[1], 1.0
        proposals = find_top_proposals(
            anchors,
            pred_logits,
            pred_deltas,
            self.box_coder,
            images.image_sizes,
            images.scale_factors(),
            pre_nms_topk=pre_nms_topk,
            post_nms_topk=self.post_nms_topk[mode],
            nms_thresh=nms_thresh,
            min_size=self.min_size,
            legacy_plus_one=self.legacy_plus_one,
            num_anchors_per_level=(
                [len(a) for a in anchors_per_level] if self.topk_scope == "per_level" else None
            ),
        )
        return proposals, losses

    @torch.no_grad()
    def label_and_sample_anchors(
        self,
        anchors: Tensor,
        image_sizes: list[tuple[int, int]],
        gt_instances: list[Instances],
        num_per_level: list[int] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Label every anchor of every image, then keep only the sampled labels
        (:mod:`detkit.modeling.labeling`).

        Args:
            anchors: ``Tensor[N, 4]`` of all maps; num_per_level: anchors of each map.

        Returns:
            labels: ``Tensor[B, N]`` int8: 1 positive, 0 negative, -1 not in the loss.
            target_boxes: ``Tensor[B, N, 4]``: the matched ground-truth box of each anchor
                (meaningful where the label is 1).
        """
        anchor_boxes = Boxes(anchors, self.legacy_plus_one)
        all_labels, all_targets = [], []
        for (height, width), gt in zip(image_sizes, gt_instances):
            gt_boxes = gt.gt_boxes if isinstance(gt.gt_boxes, Boxes) else Boxes(gt.gt_boxes)
            gt_boxes = Boxes(gt_boxes.tensor.to(anchors), self.legacy_plus_one)
            # Paper 3.1.3: only anchors inside the image are labelled; the others are never
            # a best match and are left out of the loss.
            inside = (
                self._inside_image(anchors, height, width) if self.boundary_threshold >= 0 else None
            )
            matches, labels = match_candidates(
                self.anchor_matcher,
                anchor_boxes,
                gt_boxes,
                num_per_level=num_per_level,
                valid=inside,
            )
            positive, negative = sample_candidates(self.sampler, labels)
            all_labels.append(sampled_labels(labels, positive, negative))
            if len(gt_boxes) > 0:
                all_targets.append(gt_boxes.tensor[matches])
            else:
                all_targets.append(torch.zeros_like(anchors))
        return torch.stack(all_labels), torch.stack(all_targets)

    def _inside_image(self, anchors: Tensor, height: int, width: int) -> Tensor:
        """Tensor[N] bool: anchors within the image up to ``boundary_threshold`` pixels.

        Legacy coordinates are pixel indices (x2 <= width - 1 inside, the released code's
        ``x2 < width + border``); modern ones are pixel edges (x2 <= width inside).
        """
        t = self.boundary_threshold
        if self.legacy_plus_one:
            right_ok = (anchors[:, 2] < width + t) & (anchors[:, 3] < height + t)
        else:
            right_ok = (anchors[:, 2] <= width + t) & (anchors[:, 3] <= height + t)
        return (anchors[:, 0] >= -t) & (anchors[:, 1] >= -t) & right_ok

    def losses(
        self,
        anchors: Tensor,
        pred_logits: Tensor,
        pred_deltas: Tensor,
        labels: Tensor,
        target_boxes: Tensor,
        num_locations: int,
    ) -> dict[str, Tensor]:
        """Eq. 1: objectness cross-entropy and smooth-L1 box regression on positives.

        Args:
            anchors: ``Tensor[N, 4]``.
            pred_logits: ``Tensor[B, N]``; pred_deltas: ``Tensor[B, N, 4]``.
            labels: ``Tensor[B, N]`` sampled labels (1, 0, -1).
            target_boxes: ``Tensor[B, N, 4]`` matched ground truth.
            num_locations: anchor locations (feature-map positions) over the batch, the
                paper's N_reg.
        """
        positive = labels == 1
        sampled = labels >= 0
        num_images = labels.shape[0]
        targets = self.box_coder.encode(
            anchors.expand(num_images, -1, -1)[positive], target_boxes[positive]
        )
        loss_loc = smooth_l1_loss(
            pred_deltas[positive], targets, self.smooth_l1_beta, reduction="sum"
        )
        loss_cls = F.binary_cross_entropy_with_logits(
            pred_logits[sampled], labels[sampled].to(pred_logits.dtype), reduction="sum"
        )
        if self.loss_normalization == "sampled":
            normalizer_cls = normalizer_loc = max(int(sampled.sum()), 1)
        else:  # "paper", Eq. 1: N_cls = mini-batch size, N_reg = number of anchor locations.
            normalizer_cls = self.sampler_batch_size() * num_images
            normalizer_loc = num_locations
        return {
            "loss_rpn_cls": loss_cls / normalizer_cls,
            "loss_rpn_loc": self.loss_weight_loc * loss_loc / normalizer_loc,
        }

    def sampler_batch_size(self) -> int:
        """Anchors sampled per image (the paper's N_cls per image)."""
        size = getattr(self.sampler, "batch_size_per_image", None)
        if size is None:
            raise ValueError(
                "MODEL.RPN.LOSS_NORMALIZATION 'paper' divides by the sampler's "
                "batch_size_per_image, which this sampler does not have; use 'sampled'."
            )
        return int(size)
