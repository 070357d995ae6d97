"""One run per ``OUTPUT_DIR``: a lock file naming its owner, and no silent overwrite of a
finished or interrupted run.

A training run writes its checkpoints, ``last_checkpoint``, ``metrics.json``, ``log.txt``
and ``config.yaml`` into ``OUTPUT_DIR``. Two runs sharing the folder would interleave the
metrics and overwrite each other's checkpoints, and a new run started into the folder of a
week-long run would replace its checkpoints. :func:`claim_output_dir` prevents both:

- the folder is locked by ``OUTPUT_DIR/.detkit_run.lock``, created atomically and holding
  the owner's pid, host, start time and command line; a lock whose process no longer runs
  on this host is stale and taken over with a warning; a lock of another host is respected
  (its liveness cannot be checked from here) and the error says how to remove it;
- a training run into a folder that already holds checkpoints of another run is refused
  unless ``--resume`` (continue it) or ``--overwrite`` (start again: the old checkpoints,
  ``last_checkpoint``, metrics and summary are deleted, and the deletion logged);
- leftover temporary files of interrupted atomic writes are removed.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import json
import logging
import os
import socket
import sys
import time

from detkit.utils.io import remove_orphaned_temporaries

__all__ = ["LOCK_NAME", "OutputDirError", "OutputDirLock", "claim_output_dir"]

logger = logging.getLogger("detkit")

LOCK_NAME = ".detkit_run.lock"
# Files of a training run that --overwrite removes (a new run would mix with or resume them);
# "*/" for runs made of steps in subfolders (SOLVER.SCHEME alternating).
_RUN_FILES = (
    "last_checkpoint",
    "metrics.json",
    "summary.json",
    "model_*.pth",
    "*/last_checkpoint",
    "*/metrics.json",
    "*/summary.json",
    "*/model_*.pth",
)


class OutputDirError(RuntimeError):
    """``OUTPUT_DIR`` is in use by another run or holds a run that would be overwritten."""


def _process_start_time(pid: int) -> str | None:
    """The start time of ``pid`` in clock ticks since boot (Linux), to tell a reused pid."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            # The command name (field 2) may hold spaces: fields after its ")" are fixed.
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


class OutputDirLock:
    """An exclusive, stale-aware lock on a folder (``<folder>/.detkit_run.lock``).

    ``acquire()`` creates the lock file with ``O_EXCL`` (atomic on local file systems)
    holding ``{"pid", "host", "process_start", "started", "command"}``. An existing lock of
    this process is re-entered; one of a process that no longer runs on this host (killed,
    crashed, machine rebooted) is stale and replaced with a warning. Otherwise
    :class:`OutputDirError` names the owner and what to do. ``release()`` removes the file
    if it is still this process's; it is also registered to run at exit.
    """

    def __init__(self, directory: str):
        self.directory = directory
        self.path = os.path.join(directory, LOCK_NAME)
        self._held = False

    def _owner(self) -> dict | None:
        try:
            with open(self.path, encoding="utf-8") as f:
                return json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # unreadable: a lock being written, or garbage; treated below

    def _is_mine(self, owner: dict) -> bool:
        return owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname()

    def _is_stale(self, owner: dict) -> bool:
        if owner.get("host") != socket.gethostname():
            return False
        pid = owner.get("pid")
        if not isinstance(pid, int) or not _pid_alive(pid):
            return True
        recorded = owner.get("process_start")
        return recorded is not None and _process_start_time(pid) not in (None, recorded)

    def acquire(self) -> None:
        os.makedirs(self.directory, exist_ok=True)
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "process_start": _process_start_time(os.getpid()),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "command": " ".join(sys.argv),
        }
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner is None:
                    continue  # removed meanwhile: try again
                if owner and self._is_mine(owner):
                    self._held = True
                    return
                if owner and self._is_stale(owner):
                    logger.warning(
                        f"{self.path}: the run that locked this folder (pid {owner.get('pid')}, "
                        f"started {owner.get('started')}) no longer runs; taking the folder over."
                    )
                    self._remove()
                    continue
                raise OutputDirError(self._busy_message(owner)) from None
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(record, f)
            self._held = True
            atexit.register(self.release)
            return
        raise OutputDirError(f"Could not create the lock file {self.path}; try again.")

    def _busy_message(self, owner: dict) -> str:
        if not owner:
            who = "an unreadable lock file"
        else:
            who = (
                f"pid {owner.get('pid')} on host {owner.get('host')}, started "
                f"{owner.get('started')}: {owner.get('command')}"
            )
        return (
            f"OUTPUT_DIR '{self.directory}' is in use by another run ({who}). Two runs in one "
            "folder would interleave metrics.json and overwrite each other's checkpoints. "
            "Wait for that run to end, or give this one another folder (OUTPUT_DIR "
            f"path/to/new_dir). If that run is certainly dead, delete {self.path}."
        )

    def _remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.path)

    def release(self) -> None:
        if not self._held:
            return
        owner = self._owner()
        if owner and self._is_mine(owner):
            self._remove()
        self._held = False

    def __enter__(self) -> OutputDirLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


_LOCKS: dict[str, OutputDirLock] = {}


def _previous_run_files(directory: str) -> list[str]:
    found: list[str] = []
    for pattern in _RUN_FILES:
        found += sorted(glob.glob(os.path.join(directory, pattern)))
    return found


def claim_output_dir(
    directory: str, *, resume: bool = False, overwrite: bool = False, training: bool = True
) -> OutputDirLock:
    """Lock ``directory`` for this process (see :class:`OutputDirLock`) and check that a
    training run does not silently replace a previous one.

    Args:
        directory: the run's ``OUTPUT_DIR``.
        resume: ``--resume``: the previous run's checkpoints are what this run continues.
        overwrite: ``--overwrite``: delete the previous run's checkpoints,
            ``last_checkpoint``, ``metrics.json`` and ``summary.json`` and start again.
        training: False for evaluation only, which reads checkpoints and never replaces them.

    Raises:
        OutputDirError: the folder is locked by a live run, or holds a previous training run
            and neither ``resume`` nor ``overwrite`` is given.
    """
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise OutputDirError(
            f"OUTPUT_DIR '{directory}' is a file, not a folder. Give a folder path (it is "
            "created if missing)."
        )
    key = os.path.abspath(directory)
    lock = _LOCKS.get(key) or OutputDirLock(directory)
    lock.acquire()
    _LOCKS[key] = lock
    removed = remove_orphaned_temporaries(directory)
    if removed:
        logger.info(f"Removed {len(removed)} temporary files of interrupted writes: {removed}")
    if not training or resume:
        return lock
    previous = _previous_run_files(directory)
    has_checkpoint = any(p.endswith((".pth", "last_checkpoint")) for p in previous)
    if not has_checkpoint:
        return lock
    if not overwrite:
        lock.release()
        _LOCKS.pop(key, None)
        state = (
            "a finished run (model_final.pth)"
            if os.path.isfile(os.path.join(directory, "model_final.pth"))
            else "an interrupted run (checkpoints but no model_final.pth)"
        )
        raise OutputDirError(
            f"OUTPUT_DIR '{directory}' holds {state}; starting a new run there would "
            "overwrite its checkpoints. Add --resume to continue it (a finished run is "
            "evaluated again), --overwrite to delete it and start again, or choose another "
            "folder with OUTPUT_DIR path/to/new_dir."
        )
    for path in previous:
        os.remove(path)
    logger.warning(
        f"--overwrite: deleted {len(previous)} files of the previous run in {directory}: "
        + ", ".join(os.path.relpath(p, directory) for p in previous)
    )
    return lock
