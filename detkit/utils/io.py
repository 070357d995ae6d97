"""Writing files so that a crash never leaves a half-written one under the final name."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from typing import IO

__all__ = ["atomic_write", "atomic_write_text"]


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
