"""Gradient accumulation over several passes (SOLVER.ITER_SIZE) and gradient-norm clipping.

Accumulation (PAPER.md choice 8; the released recipe uses iter size 2): one update
consumes ``ITER_SIZE`` batches. The train loop zeroes the gradients, then for each batch
calls ``(loss / ITER_SIZE).backward()``, so the accumulated gradient is the mean over the
passes, then clips (optional) and steps the optimizer once. With a loss that is a mean
over its batch and equal batch sizes, this equals one step on the union of the batches;
the learning rate and weight decay stay per update.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

__all__ = ["clip_gradients"]


def clip_gradients(parameters: Iterable[nn.Parameter], max_norm: float) -> float | None:
    """Scale the gradients so that their total L2 norm is at most ``max_norm``.

    The norm is taken over all gradients together (``torch.nn.utils.clip_grad_norm_``),
    so clipping shrinks every gradient by the same factor and keeps its direction.
    Call it after the last backward of an update and before ``optimizer.step()``.

    Args:
        parameters: the trained parameters, e.g. those of the optimizer's param groups;
            parameters without a gradient are ignored.
        max_norm: ``SOLVER.CLIP_GRADIENTS``; 0 (or less) disables clipping.

    Returns:
        The total gradient norm before clipping, or None when clipping is disabled.
    """
    if max_norm <= 0:
        return None
    params = [p for p in parameters if p.grad is not None]
    if not params:
        return 0.0
    return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
