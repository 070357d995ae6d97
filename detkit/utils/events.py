"""Training metrics: a storage that hooks write scalars into, and writers that read it out.

The trainer owns one ``EventStorage`` and puts the losses the model returns into it. While
it trains, that storage is *current*: model code may add statistics of its own through
:func:`try_get_event_storage` (which gives None outside training, so the model runs the same
without a trainer) or :func:`get_event_storage` (which raises outside training). Writers
print a console line, append ``metrics.json`` lines and write TensorBoard events.
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
    "get_event_storage",
    "try_get_event_storage",
]

# Storages entered with ``with storage:``, innermost last (a trainer nested in another's hook
# sees its own).
_CURRENT_STORAGES: list[EventStorage] = []


def get_event_storage() -> EventStorage:
    """The storage of the training running now (the innermost ``with storage:``).

    Raises:
        RuntimeError: outside training. Code that also runs outside a trainer (a model
            called for inference or in a test) should use :func:`try_get_event_storage`.
    """
    if not _CURRENT_STORAGES:
        raise RuntimeError(
            "get_event_storage() was called outside training: no EventStorage is current. "
            "A trainer makes its storage current while it trains; elsewhere enter one with "
            "`with EventStorage() as storage:`, or use try_get_event_storage(), which returns "
            "None instead of raising."
        )
    return _CURRENT_STORAGES[-1]


def try_get_event_storage() -> EventStorage | None:
    """The storage of the training running now, or None outside training."""
    return _CURRENT_STORAGES[-1] if _CURRENT_STORAGES else None


class EventStorage:
    """Scalars by name, each with the iteration it was recorded at.

    Only the newest ``history_length`` values of each scalar are kept (what the writers,
    which run every few iterations, and the running medians need), so a run of a million
    iterations holds no more than one of a thousand.

    ``with storage:`` makes it the storage :func:`get_event_storage` returns until the block
    ends (the trainer does this around training).

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

    def latest_with_smoothing_hint(self, window: int = 20) -> dict[str, tuple[float, int]]:
        """Like :meth:`latest`, but a scalar recorded with ``smoothing_hint=True`` gives the
        median of its last ``window`` values instead of its newest value."""
        return {
            name: (self.median(name, window) if self.smoothing_hint(name) else value, it)
            for name, (value, it) in self._latest.items()
        }

    def __enter__(self) -> EventStorage:
        _CURRENT_STORAGES.append(self)
        return self

    def __exit__(self, *exc_info) -> None:
        if not _CURRENT_STORAGES or _CURRENT_STORAGES[-1] is not self:
            raise RuntimeError("EventStorage contexts were left in a different order than entered.")
        _CURRENT_STORAGES.pop()

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

    Each line holds ``"iteration"`` and every scalar recorded since the last write, grouped
    by the iteration it was last recorded at. The values are those of the console line:

    - a scalar recorded with ``smoothing_hint=True`` (losses, ``grad_norm``, the model's
      statistics such as ``fast_rcnn/cls_accuracy``) is the median of its last
      ``window_size`` values up to that iteration;
    - the others are the raw value of that iteration (``lr``, ``time``, ``data_time``,
      ``train_time``, evaluation metrics such as ``bbox/AP50``).

    A scalar recorded later at an iteration already written (an evaluation after the last
    step) gets a line of its own with the same iteration; readers merge lines by iteration.

    Args:
        json_file: the file appended to.
        window_size: values in the median of smoothed scalars (20, as the console line).
    """

    def __init__(self, json_file: str, window_size: int = 20):
        os.makedirs(os.path.dirname(os.path.abspath(json_file)), exist_ok=True)
        self._file = open(json_file, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._written: dict[str, int] = {}
        self._window_size = window_size

    def write(self, storage: EventStorage) -> None:
        by_iter: dict[int, dict[str, float]] = defaultdict(dict)
        for name, (value, it) in storage.latest_with_smoothing_hint(self._window_size).items():
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
    """Console line: ETA, iteration, time and data time per iteration, the losses, a few
    training statistics (running medians over 20 iterations) and the lr.

    The statistics shown are those that tell at a glance whether detection is learning:
    ``fast_rcnn/cls_accuracy``, ``fast_rcnn/fg_cls_accuracy``, ``fast_rcnn/false_negative``,
    ``rpn/num_pos_anchors`` and ``roi_head/num_fg_samples`` (when the model records them).
    Everything else (e.g. ``rpn/num_neg_anchors``, ``roi_head/num_bg_samples``) is in
    metrics.json and TensorBoard only. One line per iteration at most: writing the same
    iteration again (the end of training right after its last periodic write) prints nothing.

    Args:
        max_iter: the iteration count of the run, for ``iter: N/max_iter`` and the ETA.
        logger: where the line goes (default the "detkit" logger).
        statistics: scalar names shown after the losses, if recorded.
    """

    DEFAULT_STATISTICS = (
        "fast_rcnn/cls_accuracy",
        "fast_rcnn/fg_cls_accuracy",
        "fast_rcnn/false_negative",
        "rpn/num_pos_anchors",
        "roi_head/num_fg_samples",
    )

    def __init__(
        self,
        max_iter: int,
        logger: logging.Logger | None = None,
        statistics: tuple[str, ...] = DEFAULT_STATISTICS,
    ):
        self.max_iter = max_iter
        self.logger = logger or logging.getLogger("detkit")
        self.statistics = tuple(statistics)
        self._last_printed_iter: int | None = None

    def write(self, storage: EventStorage) -> None:
        it = storage.iter
        if it == self._last_printed_iter:
            return
        self._last_printed_iter = it
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
        parts.extend(
            f"{name}: {storage.median(name, 20):.4g}" for name in self.statistics if name in latest
        )
        if "lr" in latest:
            parts.append(f"lr: {latest['lr'][0]:.5g}")
        self.logger.info("  ".join(parts))
