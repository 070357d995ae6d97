"""Normalization layers by name, and freezing a module (which turns its BatchNorm into FrozenBN).

Backbones name their normalization in the config (``MODEL.BACKBONE.NORM``,
``MODEL.RESNETS.NORM``); :func:`get_norm` turns that name into a layer. Frozen stages of a
backbone go through :func:`freeze_module`: their parameters stop requiring gradients and
their BatchNorm layers stop updating running statistics, so a frozen stage computes the
same function in training and in inference.
"""

from __future__ import annotations

from torch import nn
from torchvision.ops import FrozenBatchNorm2d

__all__ = ["NORM_NAMES", "convert_frozen_batchnorm", "freeze_module", "get_norm"]

NORM_NAMES = ("", "BN", "FrozenBN", "GN")  # every name get_norm accepts

_MAX_GROUPS = 32  # GroupNorm groups (Wu & He 2018 use 32)


def _num_groups(channels: int) -> int:
    """The largest number of groups <= 32 that divides ``channels``."""
    return max(g for g in range(1, _MAX_GROUPS + 1) if channels % g == 0)


def get_norm(name: str, channels: int) -> nn.Module | None:
    """Build the normalization layer ``name`` for ``channels`` feature channels.

    Args:
        name: ``""`` (no normalization), ``"BN"`` (``nn.BatchNorm2d``), ``"FrozenBN"``
            (``torchvision.ops.FrozenBatchNorm2d``: fixed statistics and affine, the usual
            choice for detection fine-tuning with 1-2 images per GPU) or ``"GN"``
            (``nn.GroupNorm`` with 32 groups, or the largest divisor of ``channels`` below 32).
        channels: number of channels C of the ``[N, C, H, W]`` input.

    Returns:
        The layer, or None for ``""`` (the caller then gives its conv a bias).

    Raises:
        ValueError: ``name`` is not one of :data:`NORM_NAMES`, or ``channels`` < 1.
    """
    if name not in NORM_NAMES:
        raise ValueError(
            f"Unknown normalization '{name}'. Valid names: "
            f"{', '.join(repr(n) for n in NORM_NAMES)} (set MODEL.BACKBONE.NORM or "
            "MODEL.RESNETS.NORM to one of them)."
        )
    if channels < 1:
        raise ValueError(f"get_norm('{name}', channels={channels}): channels must be >= 1.")
    if name == "":
        return None
    if name == "BN":
        return nn.BatchNorm2d(channels)
    if name == "FrozenBN":
        return FrozenBatchNorm2d(channels)
    return nn.GroupNorm(_num_groups(channels), channels)


def convert_frozen_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` in ``module`` by a ``FrozenBatchNorm2d`` with its values.

    The affine parameters and running statistics are copied, so the converted module computes
    what the original computed in eval mode. Children are replaced in place.

    Returns:
        ``module`` itself, or a new ``FrozenBatchNorm2d`` when ``module`` is a BatchNorm2d.
    """
    if isinstance(module, nn.BatchNorm2d):
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        if module.affine:
            frozen.weight.copy_(module.weight.detach())
            frozen.bias.copy_(module.bias.detach())
        if module.track_running_stats:
            frozen.running_mean.copy_(module.running_mean)
            frozen.running_var.copy_(module.running_var)
        return frozen
    for name, child in module.named_children():
        converted = convert_frozen_batchnorm(child)
        if converted is not child:
            setattr(module, name, converted)
    return module


def _stay_in_eval_mode(module: nn.Module, inputs: tuple) -> None:
    module.training = False  # a forward pre-hook: runs before every forward, in any mode


def freeze_module(module: nn.Module) -> nn.Module:
    """Freeze ``module``: no parameter requires a gradient, its BatchNorm stops learning.

    ``BatchNorm2d`` becomes ``FrozenBatchNorm2d`` (fixed statistics and affine, as buffers);
    other BatchNorm layers (e.g. ``BatchNorm1d`` after a box head's fc) keep their type and
    are held in eval mode at every forward, so they normalize with their running statistics
    and never update them.

    Returns:
        The frozen module (a new object only when ``module`` itself is a BatchNorm2d); assign
        it back to where ``module`` came from.
    """
    module = convert_frozen_batchnorm(module)
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    for layer in module.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm) and not getattr(
            layer, "_detkit_frozen", False
        ):
            layer._detkit_frozen = True
            layer.register_forward_pre_hook(_stay_in_eval_mode)
    return module
