"""The training loop: a trainer that runs hooks around each step, and the plain SGD step."""

from __future__ import annotations

import logging
import math
import time
from abc import ABCMeta, abstractmethod
from collections.abc import Iterable

import torch
from torch import nn

from detkit.solver import clip_gradients
from detkit.utils.events import EventStorage

__all__ = [
    "HookBase",
    "SimpleTrainer",
    "TrainerBase",
    "amp_dtype",
    "build_grad_scaler",
    "model_device_type",
]

logger = logging.getLogger("detkit")


class HookBase:
    """Runs code around training; ``self.trainer`` is set when registered.

    Override any of ``before_train``, ``after_train``, ``before_step``, ``after_step``.
    """

    trainer: TrainerBase

    def before_train(self) -> None:
        """Called once before the first iteration."""

    def after_train(self) -> None:
        """Called once after the last iteration (also after an exception)."""

    def before_step(self) -> None:
        """Called before each iteration."""

    def after_step(self) -> None:
        """Called after each successful iteration."""


class TrainerBase(metaclass=ABCMeta):
    """Iterates ``run_step`` from ``start_iter`` to ``max_iter`` and calls the hooks.

    ``self.iter`` is the iteration being run (0-based); after training it is ``max_iter - 1``.
    ``self.storage`` is the run's ``EventStorage``, current (``get_event_storage()``) from
    ``before_train`` to ``after_train``, so the model may record statistics in it.
    ``self.finished`` is True once every iteration has run (False while running and after
    an exception, also one raised in the last iteration).
    """

    def __init__(self) -> None:
        self._hooks: list[HookBase] = []
        self.iter = 0
        self.start_iter = 0
        self.max_iter = 0
        self.finished = False
        self.storage = EventStorage(0)

    def register_hooks(self, hooks: Iterable[HookBase | None]) -> None:
        for hook in hooks:
            if hook is not None:
                hook.trainer = self
                self._hooks.append(hook)

    def train(self, start_iter: int, max_iter: int) -> None:
        self.start_iter, self.max_iter = start_iter, max_iter
        self.iter = start_iter
        self.finished = False
        logger.info(f"Starting training from iteration {start_iter} (of {max_iter})")
        # The storage is current (get_event_storage) for the hooks and the model throughout.
        with EventStorage(start_iter) as self.storage:
            try:
                for hook in self._hooks:
                    hook.before_train()
                for self.iter in range(start_iter, max_iter):
                    self.storage.iter = self.iter
                    for hook in self._hooks:
                        hook.before_step()
                    self.run_step()
                    for hook in self._hooks:
                        hook.after_step()
                # So that after_train hooks see the last iteration, not one past it.
                self.iter = max(start_iter, max_iter - 1)
                self.finished = True
            finally:
                for hook in self._hooks:
                    hook.after_train()

    @abstractmethod
    def run_step(self) -> None:
        """One iteration: typically a forward, a backward and an optimizer step."""


def amp_dtype(device_type: str) -> torch.dtype:
    """The autocast type of mixed precision: float16 on CUDA (tensor cores, with a gradient
    scaler), bfloat16 elsewhere (the CPU's; float32's range, no scaler needed)."""
    return torch.float16 if device_type == "cuda" else torch.bfloat16


def build_grad_scaler(amp: bool, device_type: str) -> torch.amp.GradScaler | None:
    """A gradient scaler for float16 mixed precision on CUDA, else None."""
    if amp and amp_dtype(device_type) == torch.float16:
        return torch.amp.GradScaler(device_type)
    return None


def model_device_type(model: nn.Module) -> str:
    """``"cuda"`` or ``"cpu"``: where the model's parameters are."""
    parameter = next(model.parameters(), None)
    return parameter.device.type if parameter is not None else "cpu"


class SimpleTrainer(TrainerBase):
    """One update per iteration: ``iter_size`` batches forward and backward, then one SGD step.

    Gradients of the ``iter_size`` batches are accumulated, each loss divided by
    ``iter_size``, so an update equals one step on their union (released code: iter size 2).
    A non-finite loss stops training with an error naming the iteration and every loss.

    Args:
        model: returns a dict of scalar losses in training mode.
        data_loader: an iterable of batches (infinite for training).
        optimizer: steps the model's parameters.
        iter_size: batches accumulated per update.
        clip_gradients: maximum total gradient norm; 0 disables clipping.
        amp: mixed precision (``SOLVER.AMP.ENABLED``): the forward runs under
            ``torch.autocast`` in :func:`amp_dtype` of the model's device (float16 on CUDA,
            bfloat16 on the CPU); losses are summed and differentiated in float32.
        grad_scaler: scales float16 losses so small gradients do not underflow (CUDA;
            :func:`build_grad_scaler`); None for bfloat16, whose range is float32's.
    """

    def __init__(
        self,
        model: nn.Module,
        data_loader: Iterable,
        optimizer: torch.optim.Optimizer,
        iter_size: int = 1,
        clip_gradients: float = 0.0,
        amp: bool = False,
        grad_scaler: torch.amp.GradScaler | None = None,
    ):
        super().__init__()
        if iter_size < 1:
            raise ValueError(f"SOLVER.ITER_SIZE must be >= 1; got {iter_size}.")
        self.model = model
        self.data_loader = data_loader
        self._data_iter = iter(data_loader)
        self.optimizer = optimizer
        self.iter_size = iter_size
        self.clip_gradients = clip_gradients
        self.amp = amp
        self.grad_scaler = grad_scaler
        self.device_type = model_device_type(model)

    def run_step(self) -> None:
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        data_time = 0.0
        summed: dict[str, float] = {}
        for _ in range(self.iter_size):
            start = time.perf_counter()
            batch = next(self._data_iter)
            data_time += time.perf_counter() - start
            with torch.autocast(self.device_type, amp_dtype(self.device_type), enabled=self.amp):
                loss_dict = self.model(batch)
            losses = sum(v.float() for v in loss_dict.values())
            # One host transfer for every logged loss (each float() would wait for the
            # device again); the finiteness check reads the same numbers.
            if not loss_dict:
                raise ValueError(
                    f"The model returned no losses in training mode (iteration {self.iter}); "
                    "its forward must return a dict of scalar losses when model.training."
                )
            stacked = torch.stack([v.detach().float() for v in loss_dict.values()])
            values = dict(zip(loss_dict, stacked.tolist()))
            if not all(math.isfinite(v) for v in values.values()):
                raise FloatingPointError(
                    f"Loss became infinite or NaN at iteration {self.iter}: {values}. "
                    "Training stopped; the last checkpoint is unaffected. Usual causes: a "
                    "learning rate too high for the batch size (lower SOLVER.BASE_LR or add "
                    "SOLVER.WARMUP_ITERS), or broken boxes in the data."
                )
            scaled = losses / self.iter_size
            (self.grad_scaler.scale(scaled) if self.grad_scaler else scaled).backward()
            for k, v in values.items():
                summed[k] = summed.get(k, 0.0) + v / self.iter_size
        if self.clip_gradients > 0:
            if self.grad_scaler is not None:
                self.grad_scaler.unscale_(self.optimizer)  # clip the true gradients
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            self.storage.put_scalar("grad_norm", clip_gradients(params, self.clip_gradients))
        if self.grad_scaler is not None:
            self.grad_scaler.step(self.optimizer)  # skipped when a gradient overflowed
            self.grad_scaler.update()
        else:
            self.optimizer.step()
        self.storage.put_scalars(total_loss=sum(summed.values()), **summed)
        self.storage.put_scalar("data_time", data_time, smoothing_hint=False)
