"""Progress of long loops (evaluation, dataset generation and checks) that reaches the log.

On a terminal a tqdm bar shows it live, and ``log.txt`` receives a line every ``period``
seconds (at DEBUG level, which only the log file records). Elsewhere (output redirected to a
file, a batch job) there is no bar, whose carriage returns would fill the file, and the lines
go to the console too (INFO). Each line says how far, how fast and the ETA::

    Inference: 120/300 batch (40%), 0.21 s/batch, ETA 0:00:38
"""

from __future__ import annotations

import datetime
import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

__all__ = ["Progress", "track"]

T = TypeVar("T")


class Progress:
    """A counter shown as a bar on a terminal and logged every ``period`` seconds.

    Args:
        total: expected count (None if unknown: no percentage or ETA).
        desc: what is counted, e.g. "Inference".
        unit: one item, e.g. "batch".
        logger: where the lines go.
        enabled: False shows and logs nothing (e.g. off the main process).
        period: seconds between two log lines.
        initial: items already done (a resumed job).
    """

    def __init__(
        self,
        total: int | None,
        desc: str,
        unit: str,
        logger: logging.Logger,
        *,
        enabled: bool = True,
        period: float = 30.0,
        initial: int = 0,
    ):
        self.total, self.desc, self.unit, self.logger = total, desc, unit, logger
        self.enabled, self.period = enabled, period
        self.count = self.initial = initial
        self._interactive = sys.stderr.isatty()
        self._level = logging.DEBUG if self._interactive else logging.INFO
        self._bar = tqdm(
            total=total,
            initial=initial,
            desc=desc,
            unit=unit,
            dynamic_ncols=True,
            disable=not (enabled and self._interactive),
        )
        self._start = self._last_log = time.perf_counter()

    def line(self) -> str:
        """``"<desc>: <count>/<total> <unit> (<pct>), <s>/<unit>, ETA <h:mm:ss>"``."""
        elapsed = time.perf_counter() - self._start
        done = self.count - self.initial
        text = f"{self.desc}: {self.count}"
        if self.total:
            text += f"/{self.total} {self.unit} ({self.count / self.total:.0%})"
        else:
            text += f" {self.unit}"
        if done > 0:
            per_item = elapsed / done
            text += f", {per_item:.3g} s/{self.unit}"
            if self.total:
                remaining = max(self.total - self.count, 0) * per_item
                text += f", ETA {datetime.timedelta(seconds=round(remaining))}"
        return text

    def update(self, n: int = 1) -> None:
        self.count += n
        self._bar.update(n)
        now = time.perf_counter()
        if self.enabled and now - self._last_log >= self.period:
            self._last_log = now
            self.logger.log(self._level, self.line())

    def close(self) -> None:
        self._bar.close()
        if self.enabled:
            elapsed = time.perf_counter() - self._start
            self.logger.log(
                self._level, f"{self.desc}: {self.count} {self.unit} done in {elapsed:.1f} s"
            )


def track(
    iterable: Iterable[T],
    total: int | None,
    desc: str,
    unit: str,
    logger: logging.Logger,
    **kwargs,
) -> Iterator[T]:
    """Yield from ``iterable``, counting each item in a :class:`Progress`."""
    progress = Progress(total, desc, unit, logger, **kwargs)
    try:
        for item in iterable:
            yield item
            progress.update()
    finally:
        progress.close()
