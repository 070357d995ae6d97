"""Two-stage detectors: ``GeneralizedRCNN`` (Faster R-CNN by config) and ``ProposalNetwork``."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from detkit.config import CfgNode
from detkit.layers import ShapeSpec
from detkit.modeling.backbone import Backbone, build_backbone
from detkit.modeling.meta_arch.build import META_ARCH_REGISTRY
from detkit.modeling.preprocessing import ImagePreprocessor, padding_multiple
from detkit.modeling.proposal_generator import build_proposal_generator
from detkit.modeling.roi_heads import build_roi_heads
from detkit.structures import Boxes, Instances

__all__ = ["GeneralizedRCNN", "ProposalNetwork", "detector_postprocess"]


def detector_postprocess(
    results: Instances, output_height: int, output_width: int, box_field: str = "pred_boxes"
) -> Instances:
    """Rescale boxes from the resized input to the original image size, and clip them."""
    scale_x = output_width / results.image_size[1]
    scale_y = output_height / results.image_size[0]
    out = Instances((output_height, output_width), **results.get_fields())
    boxes: Boxes = out.get(box_field).clone()
    boxes.scale(scale_x, scale_y)
    boxes.clip((output_height, output_width))
    out.set(box_field, boxes)
    return out


@META_ARCH_REGISTRY.register()
class GeneralizedRCNN(nn.Module):
    """Backbone -> proposal generator -> ROI heads. Faster R-CNN is the config with an RPN
    and ``StandardROIHeads`` sharing one backbone.

    Args:
        backbone: shared features.
        proposal_generator: e.g. the RPN.
        roi_heads: e.g. ``StandardROIHeads``.
        pixel_mean, pixel_std: per-channel normalization of the input images.
        size_divisibility: pad each batch to a multiple of this (``INPUT.SIZE_DIVISIBILITY``;
            0 = no padding beyond the largest image and the backbone's own requirement).

    ``self.preprocessor`` (:class:`~detkit.modeling.preprocessing.ImagePreprocessor`)
    normalizes and pads the inputs to a multiple of both the backbone's
    ``size_divisibility`` and ``size_divisibility``.
    """

    #: What inference returns per image; evaluators are chosen by it (detection AP here).
    output_kind = "instances"
    #: The config key of the number of classes (checked against the datasets').
    num_classes_key = "MODEL.ROI_HEADS.NUM_CLASSES"

    def __init__(
        self,
        *,
        backbone: Backbone,
        proposal_generator: nn.Module,
        roi_heads: nn.Module,
        pixel_mean: list[float],
        pixel_std: list[float],
        size_divisibility: int = 0,
    ):
        super().__init__()
        self.backbone = backbone
        self.proposal_generator = proposal_generator
        self.roi_heads = roi_heads
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
        this class). Reads ``MODEL.PIXEL_MEAN``, ``MODEL.PIXEL_STD`` and
        ``INPUT.SIZE_DIVISIBILITY``, and builds the parts from ``MODEL.BACKBONE``,
        ``MODEL.PROPOSAL_GENERATOR`` and ``MODEL.ROI_HEADS``. ``input_shape``: unused (the
        backbone's input is ``len(MODEL.PIXEL_MEAN)`` channels)."""
        backbone = build_backbone(cfg, input_shape=ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN)))
        shapes = backbone.output_shape()
        return {
            "backbone": backbone,
            "proposal_generator": build_proposal_generator(cfg, input_shape=shapes),
            "roi_heads": build_roi_heads(cfg, input_shape=shapes),
            "pixel_mean": list(cfg.MODEL.PIXEL_MEAN),
            "pixel_std": list(cfg.MODEL.PIXEL_STD),
            "size_divisibility": cfg.INPUT.SIZE_DIVISIBILITY,
        }

    def forward(self, batched_inputs: list[dict[str, Any]]):
        """Training: dict of losses. Inference: ``[{"instances": Instances}]`` per image.

        Args:
            batched_inputs: per image ``{"image": Tensor[C, H, W]`` (resized, in
                ``INPUT.FORMAT``, 0-255), ``"instances": Instances(gt_boxes, gt_classes)``
                (training), ``"height"``, ``"width"`` (original size, optional),
                ``"proposals"`` (precomputed, for ``PrecomputedProposals``; optional)``}``.
        """
        images = self.preprocessor(batched_inputs)
        features = self.backbone(images.tensor)
        given = self.preprocessor.proposals(batched_inputs)
        if self.training:
            gt = self.preprocessor.ground_truth(batched_inputs)
            proposals, proposal_losses = self.proposal_generator(images, features, gt, given)
            _, detector_losses = self.roi_heads(images, features, proposals, gt)
            return {**proposal_losses, **detector_losses}
        proposals, _ = self.proposal_generator(images, features, None, given)
        detections, _ = self.roi_heads(images, features, proposals, None)
        return [
            {"instances": detector_postprocess(det, h, w)}
            for det, (h, w) in zip(detections, images.original_sizes)
        ]


@META_ARCH_REGISTRY.register()
class ProposalNetwork(nn.Module):
    """Backbone -> RPN only: proposals as the output (the paper's RPN stages).

    Inference returns ``[{"proposals": Instances(proposal_boxes, objectness_logits)}]`` in
    original image coordinates. Arguments as :class:`GeneralizedRCNN`'s, without the ROI heads.
    """

    #: What inference returns per image; evaluators are chosen by it (proposal recall here).
    output_kind = "proposals"
    num_classes_key = None  # class-agnostic

    def __init__(
        self,
        *,
        backbone: Backbone,
        proposal_generator: nn.Module,
        pixel_mean: list[float],
        pixel_std: list[float],
        size_divisibility: int = 0,
    ):
        super().__init__()
        self.backbone = backbone
        self.proposal_generator = proposal_generator
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
        this class). Reads ``MODEL.PIXEL_MEAN``, ``MODEL.PIXEL_STD`` and
        ``INPUT.SIZE_DIVISIBILITY``, and builds the parts from ``MODEL.BACKBONE`` and
        ``MODEL.PROPOSAL_GENERATOR``. ``input_shape``: unused (the backbone's input is
        ``len(MODEL.PIXEL_MEAN)`` channels)."""
        backbone = build_backbone(cfg, input_shape=ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN)))
        return {
            "backbone": backbone,
            "proposal_generator": build_proposal_generator(
                cfg, input_shape=backbone.output_shape()
            ),
            "pixel_mean": list(cfg.MODEL.PIXEL_MEAN),
            "pixel_std": list(cfg.MODEL.PIXEL_STD),
            "size_divisibility": cfg.INPUT.SIZE_DIVISIBILITY,
        }

    def forward(self, batched_inputs: list[dict[str, Any]]):
        images = self.preprocessor(batched_inputs)
        features = self.backbone(images.tensor)
        gt = self.preprocessor.ground_truth(batched_inputs) if self.training else None
        given = self.preprocessor.proposals(batched_inputs)
        proposals, losses = self.proposal_generator(images, features, gt, given)
        if self.training:
            return losses
        return [
            {"proposals": detector_postprocess(p, h, w, box_field="proposal_boxes")}
            for p, (h, w) in zip(proposals, images.original_sizes)
        ]
