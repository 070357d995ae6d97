"""Resident memory of this process and its children (data-loader workers), for benchmarks.

Read from ``/proc`` on Linux (current resident set, not the peak); elsewhere only this
process's peak from ``resource`` is available and the children are not counted.
"""

from __future__ import annotations

import os
import sys

__all__ = ["child_pids", "peak_increase_mb", "release_free_memory", "resident_mb"]

_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_mb(pid: int | None = None) -> float:
    """Current resident set size of ``pid`` (default: this process) in MiB."""
    pid = os.getpid() if pid is None else pid
    try:
        with open(f"/proc/{pid}/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * _PAGE_BYTES / 2**20
    except OSError:
        if pid != os.getpid():
            return 0.0  # exited meanwhile, or no /proc
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB (bytes on macOS)
        return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def child_pids(pid: int | None = None) -> list[int]:
    """Direct children of ``pid`` (default: this process); [] without ``/proc``."""
    pid = os.getpid() if pid is None else pid
    children: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return children
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as f:
                children += [int(c) for c in f.read().split()]
        except OSError:
            continue
    return sorted(set(children))


def release_free_memory() -> bool:
    """Ask the C allocator to return its free pages to the system (glibc's
    ``malloc_trim(0)``), so that the resident set shows the memory in use rather than what
    the allocator keeps for reuse. Returns False where there is no glibc."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name or not sys.platform.startswith("linux"):
        return False
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return False  # not glibc (e.g. musl)
    trim(0)
    return True


def peak_increase_mb(fn) -> float | None:
    """How far this process's resident memory rises above its level at the start while
    ``fn()`` runs, in MiB: the allocator's free pages are returned first
    (:func:`release_free_memory`), then Linux's peak counter is reset (``/proc/self/
    clear_refs``) and read back after ``fn`` (``VmHWM``). None where that is not possible."""
    release_free_memory()
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")  # resets VmHWM to the current resident set
    except OSError:
        return None
    start = resident_mb()
    fn()
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024 - start
    except OSError:
        pass
    return None
