"""Progress lines for the log: counts, percentage, speed and ETA computed from a fake clock;
a bar only on a terminal, and the lines at INFO (console too) only when there is none."""

import logging

import pytest

from detkit.utils import progress as progress_module
from detkit.utils.progress import Progress, track


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = Clock()
    monkeypatch.setattr(progress_module.time, "perf_counter", fake)
    return fake


@pytest.mark.parametrize("interactive, level", [(False, logging.INFO), (True, logging.DEBUG)])
def test_lines_every_period_with_eta(clock, monkeypatch, caplog, interactive, level):
    monkeypatch.setattr(progress_module.sys.stderr, "isatty", lambda: interactive)
    logger = logging.getLogger("test_progress")
    caplog.set_level(logging.DEBUG, logger="test_progress")
    bar = Progress(300, "Inference", "batch", logger, period=30.0)
    assert bar._bar.disable == (not interactive)  # a bar only on a terminal
    for _ in range(121):  # 0.25 s per batch: a line once 30 s have passed, at batch 120
        clock.now += 0.25
        bar.update()
    bar.close()
    records = [r for r in caplog.records if r.name == "test_progress"]
    assert [r.levelno for r in records] == [level, level]
    # 120 of 300 at 0.25 s each: 180 left -> 45 s.
    assert records[0].getMessage() == "Inference: 120/300 batch (40%), 0.25 s/batch, ETA 0:00:45"
    assert records[1].getMessage() == "Inference: 121 batch done in 30.2 s"


def test_unknown_total_and_disabled(clock, caplog):
    logger = logging.getLogger("test_progress")
    caplog.set_level(logging.DEBUG, logger="test_progress")
    items = list(track(range(3), None, "Checking", "image", logger, enabled=False))
    assert items == [0, 1, 2] and not caplog.records  # disabled: nothing logged
    bar = Progress(None, "Checking", "image", logger, initial=5)
    clock.now += 2.0
    bar.update(4)
    assert bar.line() == "Checking: 9 image, 0.5 s/image"  # resumed at 5: 4 done in 2 s
