"""Two-stage detectors: ``GeneralizedRCNN`` (Faster R-CNN by config) and ``ProposalNetwork``."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from detkit.layers import ShapeSpec
from detkit.modeling.backbone import Backbone, build_backbone
from detkit.modeling.meta_arch.build import META_ARCH_REGISTRY
from detkit.modeling.proposal_generator import build_proposal_generator
from detkit.modeling.roi_heads import build_roi_heads
from detkit.structures import Boxes, ImageList, Instances

__all__ = ["GeneralizedRCNN", "ImageBatchMixin", "ProposalNetwork", "detector_postprocess"]


class ImageBatchMixin:
    """Input handling shared by meta-architectures, for ``nn.Module`` subclasses with a
    ``backbone``: call ``set_normalization(pixel_mean, pixel_std)`` in ``__init__``, then
    ``preprocess_image`` (normalize, pad to the backbone's size divisibility, checked
    inputs) and ``ground_truth`` (the ``instances`` of each input, checked, on the device).
    Detectors outside detkit (e.g. ``projects/retinanet``) subclass it too."""

    backbone: Backbone
    pixel_mean: Tensor
    pixel_std: Tensor
    #: Batches are padded to a multiple of this too (``INPUT.SIZE_DIVISIBILITY``; 0: only to
    #: the backbone's ``size_divisibility``).
    input_size_divisibility: int = 0

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def set_normalization(self, pixel_mean: list[float], pixel_std: list[float]) -> None:
        if len(pixel_mean) != len(pixel_std):
            raise ValueError(
                f"MODEL.PIXEL_MEAN has {len(pixel_mean)} values but MODEL.PIXEL_STD has "
                f"{len(pixel_std)}; give one of each per input channel."
            )
        # Not saved in checkpoints (persistent=False): they come from the config.
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    def preprocess_image(self, batched_inputs: list[dict[str, Any]]) -> ImageList:
        """Normalize each ``"image"`` and pad the batch (bottom/right, after normalization)."""
        images = []
        for i, x in enumerate(batched_inputs):
            image = x.get("image")
            where = f"Input {i} (image_id {x.get('image_id', '?')})"
            if not isinstance(image, Tensor) or image.dim() != 3:
                shape = tuple(image.shape) if isinstance(image, Tensor) else ""
                raise ValueError(
                    f"{where} needs 'image': a Tensor[C, H, W]; got {type(image).__name__}{shape}."
                )
            if image.shape[0] != self.pixel_mean.shape[0]:
                raise ValueError(
                    f"{where} has {image.shape[0]} channels; MODEL.PIXEL_MEAN has "
                    f"{self.pixel_mean.shape[0]}."
                )
            images.append((image.to(self.device, torch.float32) - self.pixel_mean) / self.pixel_std)
        original_sizes = [
            (int(x.get("height", im.shape[-2])), int(x.get("width", im.shape[-1])))
            for x, im in zip(batched_inputs, images)
        ]
        batch = ImageList.from_tensors(images, self.padding_divisibility())
        batch.tensor = batch.tensor.contiguous(memory_format=self.input_memory_format())
        batch.original_sizes = original_sizes
        return batch

    def set_input_size_divisibility(self, size_divisibility: int) -> None:
        """Pad batches to a multiple of ``size_divisibility`` (``INPUT.SIZE_DIVISIBILITY``)."""
        if size_divisibility < 0:
            raise ValueError(
                "INPUT.SIZE_DIVISIBILITY must be >= 0 (0 = no extra padding); got "
                f"{size_divisibility}."
            )
        self.input_size_divisibility = int(size_divisibility)

    def padding_divisibility(self) -> int:
        """The padded batch's height and width are multiples of this (0: no constraint): the
        least common multiple of the backbone's ``size_divisibility`` and
        ``input_size_divisibility``, those that are set."""
        sizes = (self.backbone.size_divisibility, self.input_size_divisibility)
        sizes = [s for s in sizes if s > 0]
        return math.lcm(*sizes) if sizes else 0

    def input_memory_format(self) -> torch.memory_format:
        """The backbone's memory format (``channels_last`` when its first 4-D weight has
        that layout, e.g. after ``model.to(memory_format=torch.channels_last)`` by
        ``build_model``), which the image batch gets so the first conv need not convert."""
        for weight in self.backbone.parameters():
            if weight.dim() == 4 and weight.shape[-2:] != (1, 1):
                if weight.is_contiguous(memory_format=torch.channels_last):
                    return torch.channels_last
                break
        return torch.contiguous_format

    def input_proposals(self, batched_inputs: list[dict[str, Any]]) -> list[Instances] | None:
        """The ``"proposals"`` that came with the inputs (precomputed proposal files), on the
        device, or None when the inputs have none."""
        if not any("proposals" in x for x in batched_inputs):
            return None
        missing = [x.get("image_id", i) for i, x in enumerate(batched_inputs)
                   if "proposals" not in x]
        if missing:
            raise ValueError(
                f"Inputs with image_id {missing} have no 'proposals' while others of the batch "
                "do; every image needs its precomputed proposals."
            )
        return [x["proposals"].to(self.device) for x in batched_inputs]

    def ground_truth(self, batched_inputs: list[dict[str, Any]]) -> list[Instances]:
        gt = []
        for i, x in enumerate(batched_inputs):
            if "instances" not in x:
                raise ValueError(
                    f"Training input {i} (image_id {x.get('image_id', '?')}) has no 'instances' "
                    "with gt_boxes and gt_classes; an image without objects needs an empty "
                    "Instances, not a missing one."
                )
            gt.append(x["instances"].to(self.device))
        return gt


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
class GeneralizedRCNN(ImageBatchMixin, nn.Module):
    """Backbone -> proposal generator -> ROI heads. Faster R-CNN is the config with an RPN
    and ``StandardROIHeads`` sharing one backbone.

    Args:
        backbone: shared features.
        proposal_generator: e.g. the RPN.
        roi_heads: e.g. ``StandardROIHeads``.
        pixel_mean, pixel_std: per-channel normalization of the input images.
        size_divisibility: pad each batch to a multiple of this (``INPUT.SIZE_DIVISIBILITY``;
            0 = no padding beyond the largest image and the backbone's own requirement).
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
        self.set_normalization(pixel_mean, pixel_std)
        self.set_input_size_divisibility(size_divisibility)

    @classmethod
    def from_config(cls, cfg, node, input_shape=None) -> dict:
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
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        given = self.input_proposals(batched_inputs)
        if self.training:
            gt = self.ground_truth(batched_inputs)
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
class ProposalNetwork(ImageBatchMixin, nn.Module):
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
        self.set_normalization(pixel_mean, pixel_std)
        self.set_input_size_divisibility(size_divisibility)

    @classmethod
    def from_config(cls, cfg, node, input_shape=None) -> dict:
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
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        gt = self.ground_truth(batched_inputs) if self.training else None
        given = self.input_proposals(batched_inputs)
        proposals, losses = self.proposal_generator(images, features, gt, given)
        if self.training:
            return losses
        return [
            {"proposals": detector_postprocess(p, h, w, box_field="proposal_boxes")}
            for p, (h, w) in zip(proposals, images.original_sizes)
        ]
