"""The meta-architecture registry and ``build_model``."""

from __future__ import annotations

import torch
from torch import nn

from detkit.registry import Registry, build_from_config

__all__ = ["META_ARCH_REGISTRY", "build_model", "resolve_device"]

META_ARCH_REGISTRY = Registry("META_ARCH")
META_ARCH_REGISTRY.__doc__ = """
Meta-architectures: whole detectors assembled from the other registries.

A member is an ``nn.Module``. ``forward(batched_inputs: list[dict])`` takes one dict per
image with ``"image": Tensor[C, H, W]`` (and, in training, ``"instances"`` holding
``gt_boxes`` and ``gt_classes``; optionally ``"height"``/``"width"`` of the original
image). In training it returns a dict of scalar losses; in inference a list with one dict
per image, ``{"instances": Instances(pred_boxes, scores, pred_classes)}`` (or
``{"proposals": ...}`` for proposal-only models) in original image coordinates.
"""


def resolve_device(name: str) -> torch.device:
    """``MODEL.DEVICE`` to a device: "auto" is CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"MODEL.DEVICE is '{name}' but CUDA is not available on this machine; "
            "set MODEL.DEVICE to 'auto' or 'cpu'."
        )
    return device


def build_model(cfg, **overrides) -> nn.Module:
    """Build ``cfg.MODEL.META_ARCHITECTURE`` and move it to ``MODEL.DEVICE``."""
    model = build_from_config(
        META_ARCH_REGISTRY, cfg, cfg.MODEL, None, nn.Module, name_key="META_ARCHITECTURE",
        **overrides,
    )
    return model.to(resolve_device(cfg.MODEL.DEVICE))
