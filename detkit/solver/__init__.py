"""Optimizer (Caffe-style parameter groups), lr schedule, and gradient clipping."""

from detkit.solver.build import NORM_MODULE_TYPES, build_optimizer, get_param_groups
from detkit.solver.gradients import clip_gradients
from detkit.solver.lr_scheduler import (
    WARMUP_METHODS,
    WarmupCosineLR,
    WarmupMultiStepLR,
    build_lr_scheduler,
    warmup_factor_at_iter,
)

__all__ = [
    "NORM_MODULE_TYPES",
    "WARMUP_METHODS",
    "WarmupCosineLR",
    "WarmupMultiStepLR",
    "build_lr_scheduler",
    "build_optimizer",
    "clip_gradients",
    "get_param_groups",
    "warmup_factor_at_iter",
]
