"""Hooks of the training loop: timing, lr schedule, checkpoints, evaluation, metric writers."""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Sequence

from fvcore.common.checkpoint import PeriodicCheckpointer as _FvcorePeriodicCheckpointer

from detkit.engine.train_loop import HookBase
from detkit.utils import comm
from detkit.utils.events import EventWriter

__all__ = [
    "EvalHook",
    "IterationTimer",
    "LRScheduler",
    "PeriodicCheckpointer",
    "PeriodicWriter",
    "TrainingCurves",
]

logger = logging.getLogger("detkit")


class IterationTimer(HookBase):
    """Records ``time`` (seconds per iteration) and ``train_time`` (cumulative seconds of
    training steps, evaluation excluded: the x axis of the curves)."""

    def __init__(self, warmup_iters: int = 3):
        self._warmup_iters = warmup_iters
        self._train_time = 0.0
        self._step_start = 0.0
        self._train_start = 0.0

    def before_train(self) -> None:
        self._train_start = time.perf_counter()
        self._train_time = 0.0

    def before_step(self) -> None:
        self._step_start = time.perf_counter()

    def after_step(self) -> None:
        seconds = time.perf_counter() - self._step_start
        self._train_time += seconds
        # Raw in metrics.json; the console line shows the median.
        self.trainer.storage.put_scalar("time", seconds, smoothing_hint=False)
        self.trainer.storage.put_scalar("train_time", self._train_time, smoothing_hint=False)

    @property
    def train_time(self) -> float:
        """Seconds spent in training steps so far."""
        return self._train_time

    def after_train(self) -> None:
        done = self.trainer.iter + 1 - self.trainer.start_iter
        if done > 0:
            logger.info(
                f"Training: {done} iterations in {self._train_time:.1f} s of steps "
                f"({self._train_time / done:.3f} s/it), "
                f"{time.perf_counter() - self._train_start:.1f} s wall time with hooks"
            )


class LRScheduler(HookBase):
    """Records the lr of the first parameter group, then steps the scheduler (per update)."""

    def __init__(self, optimizer, scheduler):
        self.optimizer = optimizer
        self.scheduler = scheduler

    def after_step(self) -> None:
        lr = self.optimizer.param_groups[0]["lr"]
        self.trainer.storage.put_scalar("lr", lr, smoothing_hint=False)
        self.scheduler.step()


class PeriodicCheckpointer(_FvcorePeriodicCheckpointer, HookBase):
    """fvcore's periodic checkpointer as a hook: ``model_{iter:07d}.pth`` every period and
    ``model_final.pth`` at the end, each holding the iteration for ``--resume``."""

    def before_train(self) -> None:
        self.max_iter = self.trainer.max_iter

    def after_step(self) -> None:
        self.step(self.trainer.iter)


class EvalHook(HookBase):
    """Runs ``eval_function() -> {task: {metric: value}}`` every ``period`` iterations and
    after the last one; records each numeric metric as ``task/metric`` (e.g. ``bbox/AP50``, a
    fraction in [0, 1] as the evaluators return it) for ``metrics.json`` and TensorBoard."""

    def __init__(self, period: int, eval_function: Callable[[], dict]):
        self.period = period
        self.eval_function = eval_function
        self.latest_results: dict = {}

    def _evaluate(self) -> None:
        results = self.eval_function() or {}
        self.latest_results = results
        flat = {}
        for task, metrics in results.items():
            if isinstance(metrics, dict):
                for name, value in metrics.items():
                    if isinstance(value, (int, float)) and math.isfinite(value):
                        flat[f"{task}/{name}"] = float(value)
        if flat:
            self.trainer.storage.put_scalars(smoothing_hint=False, **flat)
        comm.synchronize()

    def after_step(self) -> None:
        next_iter = self.trainer.iter + 1
        if self.period > 0 and next_iter % self.period == 0 and next_iter != self.trainer.max_iter:
            self._evaluate()

    def after_train(self) -> None:
        # Only when every iteration ran (an exception, even in the last one, leaves nothing
        # worth evaluating).
        if self.trainer.finished:
            self._evaluate()


class PeriodicWriter(HookBase):
    """Calls each writer every ``period`` iterations, after the last one, and closes them."""

    def __init__(self, writers: Sequence[EventWriter], period: int = 20):
        self.writers = list(writers)
        self.period = period

    def after_step(self) -> None:
        it = self.trainer.iter
        if (it + 1) % self.period == 0 or it == self.trainer.max_iter - 1:
            for writer in self.writers:
                writer.write(self.trainer.storage)

    def after_train(self) -> None:
        for writer in self.writers:
            writer.write(self.trainer.storage)
            writer.close()


class TrainingCurves(HookBase):
    """At the end, plots the losses and mAP against training time into a PNG."""

    def __init__(self, metrics_json: str, output_png: str):
        self.metrics_json = metrics_json
        self.output_png = output_png

    def after_train(self) -> None:
        if not comm.is_main_process() or not os.path.exists(self.metrics_json):
            return
        from detkit.utils.curves import plot_training_curves

        try:
            plot_training_curves(self.metrics_json, self.output_png)
            logger.info(f"Loss and mAP curves: {self.output_png}")
        except Exception as e:  # a plot must never cost the user a finished training
            logger.warning(f"Could not plot the training curves: {e}")
