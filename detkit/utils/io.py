"""Writing files so that a crash never leaves a half-written one under the final name."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable
from typing import IO

__all__ = ["atomic_write", "atomic_write_text", "detkit_cache_dir", "remove_orphaned_temporaries"]

# ".<final name>.<12 hex digits>.tmp", the temporary files of atomic_write.
_TEMPORARY = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$")


def detkit_cache_dir() -> str:
    """Where detkit caches what it measured or checked on this machine: ``$DETKIT_CACHE``,
    else ``$XDG_CACHE_HOME/detkit``, else ``~/.cache/detkit`` (absolute)."""
    root = os.environ.get("DETKIT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "detkit",
    )
    return os.path.abspath(os.path.expanduser(root))


def atomic_write(path: str, write: Callable[[IO[bytes]], None]) -> None:
    """Write a file so that ``path`` is either its old version or the complete new one.

    ``write`` fills a temporary file in the same directory (``.<name>.<random>.tmp``, so
    it is never taken for a ``.pth`` checkpoint); the file is flushed to disk and then
    renamed over ``path`` with ``os.replace``, which is atomic on POSIX and Windows. If
    ``write`` raises, the temporary file is removed and ``path`` is untouched.

    Args:
        path: final local file path; its directory must exist.
        write: called with the temporary file opened in binary write mode.
    """
    directory, name = os.path.split(os.path.abspath(path))
    tmp_path = os.path.join(directory, f".{name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp_path, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable (POSIX)
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_text(path: str, text: str) -> None:
    """:func:`atomic_write` of UTF-8 text."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def remove_orphaned_temporaries(directory: str) -> list[str]:
    """Delete the temporary files that :func:`atomic_write` left in ``directory`` when its
    process was killed mid-write (they are never complete). Call it only while no other
    process writes there (e.g. holding the folder's run lock). Returns the names removed."""
    if not os.path.isdir(directory):
        return []
    removed = []
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if _TEMPORARY.match(name) and os.path.isfile(path):
            os.remove(path)
            removed.append(name)
    return removed
