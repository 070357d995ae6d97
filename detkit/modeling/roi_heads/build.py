"""The ROI heads and ROI box head registries and their builders."""

from __future__ import annotations

import logging

from torch import nn

from detkit.layers import QUANTIZE_MODES, ShapeSpec, factorize_linears, quantize_linears
from detkit.registry import Registry, build_from_config

__all__ = [
    "ROI_BOX_HEAD_REGISTRY",
    "ROI_HEADS_REGISTRY",
    "build_roi_box_head",
    "build_roi_heads",
    "quantize_box_head",
]

logger = logging.getLogger(__name__)

ROI_HEADS_REGISTRY = Registry("ROI_HEADS")
ROI_HEADS_REGISTRY.__doc__ = """
ROI heads: per-region classification and box refinement (Fast R-CNN).

A member is an ``nn.Module`` built with ``input_shape`` the backbone's
``{name: ShapeSpec}``. ``forward(images: ImageList, features: dict[str, Tensor],
proposals: list[Instances], targets: list[Instances] | None)`` returns
``(detections, losses)``: in training, ``([], {"loss_cls", "loss_box_reg"})``; in
inference, one ``Instances(pred_boxes, scores, pred_classes)`` per image in the padded
input's pixels, and ``{}``.
"""

ROI_BOX_HEAD_REGISTRY = Registry("ROI_BOX_HEAD")
ROI_BOX_HEAD_REGISTRY.__doc__ = """
ROI box heads: pooled region features to one vector per region (e.g. VGG fc6/fc7).

A member is an ``nn.Module`` built with ``input_shape`` a ``ShapeSpec`` of one pooled
region (channels, height, width). ``forward(x: Tensor[R, C, P, P])`` returns
``Tensor[R, D]``; ``output_shape()`` returns ``ShapeSpec(channels=D)``.
"""


def build_roi_heads(cfg, node=None, input_shape=None, **overrides) -> nn.Module:
    """Build ``node.NAME`` (default ``cfg.MODEL.ROI_HEADS``)."""
    node = cfg.MODEL.ROI_HEADS if node is None else node
    return build_from_config(ROI_HEADS_REGISTRY, cfg, node, input_shape, nn.Module, **overrides)


def build_roi_box_head(
    cfg, node=None, input_shape: ShapeSpec | None = None, **overrides
) -> nn.Module:
    """Build ``node.NAME`` (default ``cfg.MODEL.ROI_BOX_HEAD``).

    With ``node.SVD_RANKS`` (e.g. ``[1024, 256]``), the head's first fully connected layers
    are truncated-SVD pairs of those ranks (:class:`~detkit.layers.LowRankLinear`), to load
    a checkpoint converted by ``tools/compress_model.py``.
    """
    node = cfg.MODEL.ROI_BOX_HEAD if node is None else node
    head = build_from_config(ROI_BOX_HEAD_REGISTRY, cfg, node, input_shape, nn.Module, **overrides)
    ranks = list(node.get("SVD_RANKS", []) or [])
    if ranks:
        factorize_linears(head, ranks)
    return head


def quantize_box_head(cfg, model: nn.Module) -> nn.Module:
    """``MODEL.ROI_BOX_HEAD.QUANTIZE "int8"``: the fully connected layers of the trained
    model's box head (fc6, fc7; both halves of SVD pairs) become dynamically quantized int8
    layers (:func:`~detkit.layers.quantize_linears`), in place, for CPU inference. Call it
    after the weights are loaded, on the model in eval mode. "" leaves the model as it is.

    Raises:
        ValueError: an unknown mode, or a model without ``roi_heads.box_head``.
    """
    mode = cfg.MODEL.ROI_BOX_HEAD.QUANTIZE
    if mode not in QUANTIZE_MODES:
        raise ValueError(
            f"Unknown MODEL.ROI_BOX_HEAD.QUANTIZE '{mode}'; valid: "
            f"{', '.join(repr(m) for m in QUANTIZE_MODES)}."
        )
    if not mode:
        return model
    box_head = getattr(getattr(model, "roi_heads", None), "box_head", None)
    if box_head is None:
        raise ValueError(
            f"MODEL.ROI_BOX_HEAD.QUANTIZE '{mode}': {type(model).__name__} has no "
            "roi_heads.box_head to quantize; set the key to '' for this model."
        )
    count = quantize_linears(box_head)
    logger.info(f"MODEL.ROI_BOX_HEAD.QUANTIZE int8: {count} fully connected layers quantized")
    return model
