"""Learning-rate schedules: optional warm-up, then a step decay or a cosine decay.

PAPER.md "Training": the VOC07 recipe runs 70k updates at lr 0.001 and multiplies it by
0.1 at 50k; the released code has no warm-up. A short linear warm-up is the usual guard
against early NaN losses with larger learning rates or batches (SOLVER.WARMUP_ITERS).
For short fixed budgets, a cosine decay to 0 at SOLVER.MAX_ITER spends more updates at
useful learning rates than a step decay (SOLVER.LR_SCHEDULER_NAME).
"""

from __future__ import annotations

import bisect
import logging
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler

__all__ = [
    "LR_SCHEDULERS",
    "WARMUP_METHODS",
    "WarmupCosineLR",
    "WarmupMultiStepLR",
    "build_lr_scheduler",
    "warmup_factor_at_iter",
]

logger = logging.getLogger(__name__)

WARMUP_METHODS = ("linear", "constant")  # SOLVER.WARMUP_METHOD values


def warmup_factor_at_iter(method: str, iteration: int, warmup_iters: int, factor: float) -> float:
    """The lr multiplier of warm-up at ``iteration`` (0-based update index).

    ``"linear"`` goes from ``factor`` at iteration 0 to 1 at ``warmup_iters``:
    ``factor * (1 - a) + a`` with ``a = iteration / warmup_iters``. ``"constant"`` is
    ``factor`` throughout the warm-up. From ``warmup_iters`` on (or with
    ``warmup_iters == 0``) the multiplier is 1.
    """
    if iteration >= warmup_iters:
        return 1.0
    if method == "constant":
        return factor
    if method == "linear":
        alpha = iteration / warmup_iters
        return factor * (1.0 - alpha) + alpha
    raise ValueError(
        f"Unknown warm-up method '{method}' (SOLVER.WARMUP_METHOD); valid: "
        f"{', '.join(repr(m) for m in WARMUP_METHODS)}."
    )


class WarmupMultiStepLR(LRScheduler):
    """``lr(it) = initial_lr * warmup(it) * gamma ** (number of steps <= it)``, per group.

    Stepped once per update (after ``optimizer.step()``); ``it`` is the 0-based index of the
    update about to run, so the update with index ``steps[0]`` is the first one at
    ``gamma`` x the lr (Caffe's "multistep" policy). Each parameter group keeps its own
    initial lr (e.g. bias lr x2), and all are scaled by the same factor.

    Only the progress (``last_epoch``, base lrs) is saved in ``state_dict``: the shape of
    the schedule comes from the config at construction, so a resumed run follows the
    current config (e.g. a ``SOLVER.STEPS`` changed to train longer).

    Args:
        optimizer: the optimizer whose groups' ``lr`` this sets.
        steps: strictly increasing, non-negative update indices (``SOLVER.STEPS``).
        gamma: lr multiplier at each step (``SOLVER.GAMMA``).
        warmup_factor: warm-up multiplier at update 0 (``SOLVER.WARMUP_FACTOR``).
        warmup_iters: warm-up length in updates; 0 disables it (``SOLVER.WARMUP_ITERS``).
        warmup_method: ``"linear"`` or ``"constant"`` (``SOLVER.WARMUP_METHOD``).
        max_iter: total updates (``SOLVER.MAX_ITER``), only to warn about unreachable steps.
        last_epoch: index of the last update done; -1 for a new run.

    Raises:
        ValueError: steps not strictly increasing or negative, a negative warm-up length or
            factor, or an unknown warm-up method; each message names the config key.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        steps: Sequence[int],
        gamma: float = 0.1,
        warmup_factor: float = 0.001,
        warmup_iters: int = 0,
        warmup_method: str = "linear",
        max_iter: int | None = None,
        last_epoch: int = -1,
    ):
        steps = [int(s) for s in steps]
        if any(b <= a for a, b in zip(steps, steps[1:])) or any(s < 0 for s in steps):
            raise ValueError(
                f"SOLVER.STEPS must be non-negative and strictly increasing, got {steps}; "
                "e.g. [50000] or [60000, 80000]."
            )
        if max_iter is not None and steps and steps[-1] >= max_iter:
            unreachable = [s for s in steps if s >= max_iter]
            logger.warning(
                f"SOLVER.STEPS {unreachable} are >= SOLVER.MAX_ITER = {max_iter}: the lr "
                "never decays at them. Lower them or raise SOLVER.MAX_ITER if unintended."
            )
        if warmup_iters < 0:
            raise ValueError(f"SOLVER.WARMUP_ITERS must be >= 0, got {warmup_iters}.")
        if warmup_factor < 0:
            raise ValueError(f"SOLVER.WARMUP_FACTOR must be >= 0, got {warmup_factor}.")
        if warmup_method not in WARMUP_METHODS:
            raise ValueError(
                f"Unknown warm-up method '{warmup_method}' (SOLVER.WARMUP_METHOD); valid: "
                f"{', '.join(repr(m) for m in WARMUP_METHODS)}."
            )
        self.steps = steps
        self.gamma = gamma
        self.warmup_factor = warmup_factor
        self.warmup_iters = warmup_iters
        self.warmup_method = warmup_method
        super().__init__(optimizer, last_epoch)

    def lr_factor(self, iteration: int) -> float:
        """The multiplier of every group's initial lr at update ``iteration``."""
        warmup = warmup_factor_at_iter(
            self.warmup_method, iteration, self.warmup_iters, self.warmup_factor
        )
        return warmup * self.gamma ** bisect.bisect_right(self.steps, iteration)

    def get_lr(self) -> list[float]:
        factor = self.lr_factor(self.last_epoch)
        return [base_lr * factor for base_lr in self.base_lrs]

    def _get_closed_form_lr(self) -> list[float]:
        return self.get_lr()

    def state_dict(self) -> dict[str, Any]:
        """Progress only: ``last_epoch`` (last update index), ``base_lrs`` and ``_last_lr``."""
        return {
            "last_epoch": self.last_epoch,
            "base_lrs": list(self.base_lrs),
            "_last_lr": list(self._last_lr),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the progress and set every group's lr to this schedule's value there."""
        self.last_epoch = int(state_dict["last_epoch"])
        self.base_lrs = list(state_dict["base_lrs"])
        if len(self.base_lrs) != len(self.optimizer.param_groups):
            raise ValueError(
                f"The saved lr schedule has {len(self.base_lrs)} parameter groups, the "
                f"optimizer {len(self.optimizer.param_groups)}: the checkpoint comes from a "
                "different model or solver setup."
            )
        lrs = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self._last_lr = lrs


class WarmupCosineLR(WarmupMultiStepLR):
    """``lr(it) = initial_lr * warmup(it) * (1 + cos(pi * it / max_iter)) / 2``, per group.

    Decays from the initial lr to 0 at ``max_iter`` (and stays at 0 after). Warm-up, state
    and stepping are those of :class:`WarmupMultiStepLR`; there are no steps.

    Args:
        optimizer: the optimizer whose groups' ``lr`` this sets.
        max_iter: total updates (``SOLVER.MAX_ITER``), > 0.
        warmup_factor, warmup_iters, warmup_method: as in :class:`WarmupMultiStepLR`.
        last_epoch: index of the last update done; -1 for a new run.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        max_iter: int,
        warmup_factor: float = 0.001,
        warmup_iters: int = 0,
        warmup_method: str = "linear",
        last_epoch: int = -1,
    ):
        if max_iter <= 0:
            raise ValueError(f"SOLVER.MAX_ITER must be > 0 for a cosine schedule, got {max_iter}.")
        self.max_iter = int(max_iter)
        super().__init__(
            optimizer,
            steps=[],
            warmup_factor=warmup_factor,
            warmup_iters=warmup_iters,
            warmup_method=warmup_method,
            last_epoch=last_epoch,
        )

    def lr_factor(self, iteration: int) -> float:
        """The multiplier of every group's initial lr at update ``iteration``."""
        warmup = warmup_factor_at_iter(
            self.warmup_method, iteration, self.warmup_iters, self.warmup_factor
        )
        progress = min(iteration, self.max_iter) / self.max_iter
        return warmup * 0.5 * (1.0 + math.cos(math.pi * progress))


LR_SCHEDULERS = ("WarmupMultiStepLR", "WarmupCosineLR")  # SOLVER.LR_SCHEDULER_NAME values


def build_lr_scheduler(cfg, optimizer: torch.optim.Optimizer) -> WarmupMultiStepLR:
    """The schedule ``SOLVER.LR_SCHEDULER_NAME``: :class:`WarmupMultiStepLR` from
    ``SOLVER.STEPS, GAMMA``, or :class:`WarmupCosineLR`; both with ``WARMUP_FACTOR,
    WARMUP_ITERS, WARMUP_METHOD, MAX_ITER``. Step it once per update."""
    solver = cfg.SOLVER
    if solver.LR_SCHEDULER_NAME not in LR_SCHEDULERS:
        raise ValueError(
            f"Unknown SOLVER.LR_SCHEDULER_NAME '{solver.LR_SCHEDULER_NAME}'; valid: "
            f"{', '.join(repr(n) for n in LR_SCHEDULERS)}."
        )
    if solver.LR_SCHEDULER_NAME == "WarmupCosineLR":
        return WarmupCosineLR(
            optimizer,
            max_iter=solver.MAX_ITER,
            warmup_factor=solver.WARMUP_FACTOR,
            warmup_iters=solver.WARMUP_ITERS,
            warmup_method=solver.WARMUP_METHOD,
        )
    return WarmupMultiStepLR(
        optimizer,
        steps=list(solver.STEPS),
        gamma=solver.GAMMA,
        warmup_factor=solver.WARMUP_FACTOR,
        warmup_iters=solver.WARMUP_ITERS,
        warmup_method=solver.WARMUP_METHOD,
        max_iter=solver.MAX_ITER,
    )
