"""SGD with Caffe-style parameter groups: bias lr x2 and weight decay also on biases.

PAPER.md "Training" and choice 9: the released recipe trains with SGD (momentum 0.9,
weight decay 0.0005, lr 0.001) and, as Caffe's prototxts do, gives every bias twice the
learning rate while still decaying it. Normalization layers (BatchNorm, GroupNorm) are not
in the paper; they get their own weight decay, usually none.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["NORM_MODULE_TYPES", "build_optimizer", "get_param_groups"]

# Modules whose parameters are normalization affine parameters (SOLVER.WEIGHT_DECAY_NORM).
# FrozenBatchNorm2d holds buffers only, so it never contributes a parameter.
NORM_MODULE_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.modules.instancenorm._InstanceNorm,
)


def get_param_groups(
    model: nn.Module,
    *,
    base_lr: float,
    weight_decay: float,
    bias_lr_factor: float = 1.0,
    weight_decay_bias: float | None = None,
    weight_decay_norm: float | None = None,
) -> list[dict[str, Any]]:
    """Split the trainable parameters of ``model`` into optimizer parameter groups.

    Every parameter with ``requires_grad`` is in exactly one group (a parameter shared by
    several modules is counted once, under the first module that holds it); frozen
    parameters are left out. Three kinds, in this order of precedence:

    - ``"norm"``: weight and bias of a normalization layer (:data:`NORM_MODULE_TYPES`):
      lr ``base_lr``, weight decay ``weight_decay_norm``;
    - ``"bias"``: any other parameter named ``bias``: lr ``base_lr * bias_lr_factor``,
      weight decay ``weight_decay_bias`` (Caffe: lr x2, decay kept; PAPER.md choice 9);
    - ``"weight"``: everything else: lr ``base_lr``, weight decay ``weight_decay``.

    Args:
        model: the model whose parameters are trained.
        base_lr: learning rate of weights (``SOLVER.BASE_LR``).
        weight_decay: L2 weight decay of weights (``SOLVER.WEIGHT_DECAY``).
        bias_lr_factor: bias lr = ``base_lr`` x this (``SOLVER.BIAS_LR_FACTOR``).
        weight_decay_bias: weight decay of biases; None = ``weight_decay``.
        weight_decay_norm: weight decay of normalization parameters; None =
            ``weight_decay``.

    Returns:
        One dict per non-empty kind: ``{"name", "params": list[Parameter], "lr",
        "weight_decay", "lr_factor"}``. ``lr_factor`` is the group's lr relative to
        ``base_lr``; the scheduler multiplies every group's initial lr by the same
        schedule factor, so these ratios hold throughout training.

    Raises:
        ValueError: the model has no trainable parameter.
    """
    if weight_decay_bias is None:
        weight_decay_bias = weight_decay
    if weight_decay_norm is None:
        weight_decay_norm = weight_decay
    settings = {
        "weight": (1.0, weight_decay),
        "bias": (bias_lr_factor, weight_decay_bias),
        "norm": (1.0, weight_decay_norm),
    }
    params: dict[str, list[nn.Parameter]] = {kind: [] for kind in settings}
    seen: set[int] = set()
    for module in model.modules():
        for name, parameter in module.named_parameters(recurse=False):
            if not parameter.requires_grad or id(parameter) in seen:
                continue
            seen.add(id(parameter))
            if isinstance(module, NORM_MODULE_TYPES):
                kind = "norm"
            elif name == "bias":
                kind = "bias"
            else:
                kind = "weight"
            params[kind].append(parameter)
    if not seen:
        raise ValueError(
            f"{type(model).__name__} has no parameter with requires_grad=True: nothing to "
            "train. Check MODEL.BACKBONE.FREEZE_AT and any freezing done by hand."
        )
    groups = []
    for kind, (lr_factor, decay) in settings.items():
        if params[kind]:
            groups.append(
                {
                    "name": kind,
                    "params": params[kind],
                    "lr": base_lr * lr_factor,
                    "weight_decay": decay,
                    "lr_factor": lr_factor,
                }
            )
    return groups


def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    """``SOLVER.OPTIMIZER`` over :func:`get_param_groups` of ``model``: "SGD" (the paper's:
    ``SOLVER.MOMENTUM``, no Nesterov) or "AdamW" (betas (``SOLVER.MOMENTUM``, 0.999),
    decoupled weight decay per group; it trains small models from scratch in fewer steps).

    Keys read: ``SOLVER.BASE_LR, MOMENTUM, WEIGHT_DECAY, WEIGHT_DECAY_BIAS,
    WEIGHT_DECAY_NORM, BIAS_LR_FACTOR``. The learning rate is per update: with
    ``SOLVER.ITER_SIZE`` > 1 the train loop divides each pass's loss by ``ITER_SIZE`` so an
    update sees the mean gradient (see :mod:`detkit.solver.gradients`).

    PyTorch's SGD applies the lr after the momentum buffer (``v = m v + g; w -= lr v``),
    Caffe before it (``v = m v + lr g; w -= v``): identical while the lr is constant, and
    different only in the few updates after an lr step.
    """
    solver = cfg.SOLVER
    if solver.BASE_LR <= 0:
        raise ValueError(f"SOLVER.BASE_LR must be > 0, got {solver.BASE_LR}.")
    if not 0 <= solver.MOMENTUM < 1:
        raise ValueError(f"SOLVER.MOMENTUM must be in [0, 1), got {solver.MOMENTUM}.")
    groups = get_param_groups(
        model,
        base_lr=solver.BASE_LR,
        weight_decay=solver.WEIGHT_DECAY,
        bias_lr_factor=solver.BIAS_LR_FACTOR,
        weight_decay_bias=solver.WEIGHT_DECAY_BIAS,
        weight_decay_norm=solver.WEIGHT_DECAY_NORM,
    )
    if solver.OPTIMIZER == "AdamW":
        return torch.optim.AdamW(
            groups,
            lr=solver.BASE_LR,
            betas=(solver.MOMENTUM, 0.999),
            weight_decay=solver.WEIGHT_DECAY,
        )
    if solver.OPTIMIZER != "SGD":
        raise ValueError(f"SOLVER.OPTIMIZER must be 'SGD' or 'AdamW'; got '{solver.OPTIMIZER}'.")
    return torch.optim.SGD(
        groups,
        lr=solver.BASE_LR,
        momentum=solver.MOMENTUM,
        weight_decay=solver.WEIGHT_DECAY,
        nesterov=False,
    )
