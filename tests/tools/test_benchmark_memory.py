"""tools/benchmark_memory.py's figures: the resident-memory readings against a known
allocation, the children found, and the flatness summary on series with a known trend."""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

from detkit.utils.memory import child_pids, resident_mb

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _tool():
    spec = importlib.util.spec_from_file_location(
        "benchmark_memory", os.path.join(ROOT, "tools", "benchmark_memory.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc (Linux)")
def test_resident_memory_grows_by_a_touched_allocation():
    before = resident_mb()
    block = np.ones(256 * 2**20, dtype=np.uint8)  # 256 MiB, every page written
    grown = resident_mb() - before
    del block
    assert 256 * 0.9 <= grown <= 256 * 1.1


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc (Linux)")
def test_children_are_found_with_their_memory():
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "up"  # the interpreter has started
        assert child.pid in child_pids()
        assert resident_mb(child.pid) > 1.0  # a Python interpreter
    finally:
        child.kill()
        child.wait()
    assert resident_mb(child.pid) == 0.0  # gone


def test_flatness_summary_reports_a_leak_and_ignores_one_dip():
    summary = _tool().flatness_summary
    # 0.1 MiB per iteration from 1,000 MiB: +100 MiB per 1,000 iterations; halves' medians
    # 1,000 + 0.1 * 500 = 1,050 (iterations 350-650) and 1,085 (700-1000).
    leak = summary([(i, 1000 + 0.1 * i) for i in range(350, 1001, 50)], "total")
    assert "median 1050 MiB in the first half, 1085 MiB in the second (+3.3%)" in leak
    assert "trend +100 MiB per 1,000 iterations" in leak
    # Flat at 1,800 MiB with one sample where the allocator gave 500 MiB back: trend 0.
    flat = [(i, 1300.0 if i == 900 else 1800.0) for i in range(350, 1001, 50)]
    assert "trend +0 MiB per 1,000 iterations (+0.0%)" in summary(flat, "total")
