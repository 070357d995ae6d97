"""peak_increase_mb: the rise of resident memory while a function runs (Linux)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from detkit.utils.memory import peak_increase_mb

linux_proc = pytest.mark.skipif(
    not os.path.exists("/proc/self/clear_refs"), reason="needs Linux's /proc/self/clear_refs"
)


@linux_proc
def test_peak_counts_memory_freed_before_the_end():
    def allocate_and_free():
        block = np.ones(200 * 2**20 // 8)  # 200 MiB, touched, then freed
        del block

    rise = peak_increase_mb(allocate_and_free)
    assert rise is not None and 190 <= rise < 300
    # A function that allocates nothing raises the peak by almost nothing.
    assert peak_increase_mb(lambda: None) < 20
