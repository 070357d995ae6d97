"""Training metrics: a storage that hooks write scalars into, and writers that read it out.

Model code never needs this: the trainer owns one ``EventStorage`` and puts the losses the
model returns into it. Writers print a console line, append ``metrics.json`` lines and
write TensorBoard events.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import statistics
from abc import ABCMeta, abstractmethod
from collections import defaultdict, deque

__all__ = [
    "CommonMetricPrinter",
    "EventStorage",
    "EventWriter",
    "JSONWriter",
    "TensorboardWriter",
]


class EventStorage:
    """Scalars by name, each with the iteration it was recorded at.

    Only the newest ``history_length`` values of each scalar are kept (what the writers,
    which run every few iterations, and the running medians need), so a run of a million
    iterations holds no more than one of a thousand.

    Args:
        start_iter: the iteration the first ``put_scalar`` belongs to.
        history_length: values kept per scalar.
    """

    def __init__(self, start_iter: int = 0, history_length: int = 1000):
        self.iter = start_iter
        self._history: dict[str, deque[tuple[int, float]]] = defaultdict(
            lambda: deque(maxlen=history_length)
        )
        self._latest: dict[str, tuple[float, int]] = {}
        self._smoothing_hint: dict[str, bool] = {}

    def put_scalar(self, name: str, value: float, smoothing_hint: bool = True) -> None:
        """Record ``value`` at the current iteration; ``smoothing_hint`` asks writers to
        show a running median (losses) rather than the raw value (lr, mAP)."""
        value = float(value)
        self._history[name].append((self.iter, value))
        self._latest[name] = (value, self.iter)
        self._smoothing_hint.setdefault(name, smoothing_hint)

    def put_scalars(self, *, smoothing_hint: bool = True, **kwargs: float) -> None:
        for name, value in kwargs.items():
            self.put_scalar(name, value, smoothing_hint)

    def history(self, name: str) -> list[tuple[int, float]]:
        """``[(iteration, value), ...]`` of one scalar, oldest first (at most
        ``history_length``); KeyError naming the known ones."""
        if name not in self._history:
            raise KeyError(f"No scalar named '{name}'; recorded: {sorted(self._history)}")
        return list(self._history[name])

    def latest(self) -> dict[str, tuple[float, int]]:
        """``{name: (value, iteration)}`` of the newest value of each scalar."""
        return dict(self._latest)

    def median(self, name: str, window: int = 20) -> float:
        """Median of the last ``window`` values of one scalar."""
        return statistics.median(v for _, v in self.history(name)[-window:])

    def smoothing_hint(self, name: str) -> bool:
        return self._smoothing_hint.get(name, True)

    def step(self) -> None:
        """Advance to the next iteration."""
        self.iter += 1


class EventWriter(metaclass=ABCMeta):
    """Writes what is in an ``EventStorage`` somewhere."""

    @abstractmethod
    def write(self, storage: EventStorage) -> None:
        """Write what was recorded since the last call."""

    def close(self) -> None:  # noqa: B027 - optional override, not abstract
        """Release files; the default has none."""


class JSONWriter(EventWriter):
    """Appends one JSON line per written iteration to ``json_file`` (e.g. metrics.json).

    Each line holds ``"iteration"`` and the newest value of every scalar recorded since
    the last write, grouped by the iteration it was recorded at. A scalar recorded later at
    an iteration already written (an evaluation after the last step) gets a line of its own
    with the same iteration; readers merge lines by iteration.
    """

    def __init__(self, json_file: str):
        os.makedirs(os.path.dirname(os.path.abspath(json_file)), exist_ok=True)
        self._file = open(json_file, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._written: dict[str, int] = {}

    def write(self, storage: EventStorage) -> None:
        by_iter: dict[int, dict[str, float]] = defaultdict(dict)
        for name, (value, it) in storage.latest().items():
            if it > self._written.get(name, -1):
                by_iter[it][name] = value
                self._written[name] = it
        for it in sorted(by_iter):
            self._file.write(json.dumps({"iteration": it, **by_iter[it]}, sort_keys=True) + "\n")
        if by_iter:
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


class TensorboardWriter(EventWriter):
    """Writes every scalar recorded since the last write as TensorBoard events."""

    def __init__(self, log_dir: str):
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(log_dir)
        self._written: dict[str, int] = {}

    def write(self, storage: EventStorage) -> None:
        for name, (_, newest) in storage.latest().items():
            written = self._written.get(name, -1)
            if newest <= written:
                continue
            for it, value in storage.history(name):
                if it > written:
                    self._writer.add_scalar(name, value, it)
            self._written[name] = newest
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class CommonMetricPrinter(EventWriter):
    """Console line: iteration, ETA, losses (running medians), time per iteration, lr."""

    def __init__(self, max_iter: int, logger: logging.Logger | None = None):
        self.max_iter = max_iter
        self.logger = logger or logging.getLogger("detkit")

    def write(self, storage: EventStorage) -> None:
        it = storage.iter
        latest = storage.latest()
        parts = [f"iter: {it + 1}/{self.max_iter}"]
        if "time" in latest:
            seconds = storage.median("time", 20)
            eta = datetime.timedelta(seconds=int(seconds * (self.max_iter - it - 1)))
            parts.insert(0, f"eta: {eta}")
            parts.append(f"time: {seconds:.3f}")
        if "data_time" in latest:
            parts.append(f"data_time: {storage.median('data_time', 20):.3f}")
        losses = [
            f"{name}: {storage.median(name, 20):.4g}" for name in sorted(latest) if "loss" in name
        ]
        parts.extend(losses)
        if "lr" in latest:
            parts.append(f"lr: {latest['lr'][0]:.5g}")
        self.logger.info("  ".join(parts))
