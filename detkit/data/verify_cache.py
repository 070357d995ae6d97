"""The cache of image checks (:mod:`detkit.data.verify`): what decoding each file found,
keyed by (path, size, mtime_ns), so that a second run decodes nothing and a replaced or edited
file is checked again.

One JSON file per image directory, in ``$DETKIT_CACHE/verify`` (default
``$XDG_CACHE_HOME/detkit/verify``, i.e. ``~/.cache/detkit/verify``), written atomically and
merged with what another process may have written meanwhile. A file that cannot be written
only costs the time to decode again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import NamedTuple

from detkit.utils.io import atomic_write_text, detkit_cache_dir

__all__ = ["ImageFacts", "ResultCache", "default_cache_dir"]

logger = logging.getLogger(__name__)

_CACHE_FORMAT = 1  # bump when the checks change, so that older results are not trusted


def default_cache_dir() -> str:
    """``verify`` under :func:`detkit.utils.io.detkit_cache_dir` (``$DETKIT_CACHE``, else
    ``$XDG_CACHE_HOME/detkit``, else ``~/.cache/detkit``)."""
    return os.path.join(detkit_cache_dir(), "verify")


class ImageFacts(NamedTuple):
    """What decoding one file found: its size, or the kind and reason of its problem."""

    height: int
    width: int
    kind: str | None
    reason: str | None


class ResultCache:
    """Facts of checked files, keyed by (size, mtime_ns), one JSON file per image directory:
    ``{"format": 1, "directory": ..., "files": {name: [size, mtime_ns, h, w, kind, reason]}}``.
    ``directory=None`` keeps nothing."""

    def __init__(self, directory: str | None):
        self.directory = directory
        self._entries: dict[str, dict[str, list]] = {}  # image directory -> name -> entry
        self._changed: dict[str, dict[str, list]] = {}

    def _path(self, image_dir: str) -> str:
        digest = hashlib.sha1(image_dir.encode("utf-8")).hexdigest()[:20]
        return os.path.join(self.directory, f"{digest}.json")

    def _read(self, image_dir: str) -> dict[str, list]:
        try:
            with open(self._path(image_dir), encoding="utf-8") as f:
                content = json.load(f)
        except (OSError, ValueError):
            return {}
        if not isinstance(content, dict) or content.get("format") != _CACHE_FORMAT:
            return {}
        return content.get("files", {}) if content.get("directory") == image_dir else {}

    def get(self, path: str, size: int, mtime_ns: int) -> ImageFacts | None:
        """The facts stored for ``path`` if its size and mtime are still these, else None."""
        if self.directory is None:
            return None
        image_dir, name = os.path.split(os.path.abspath(path))
        if image_dir not in self._entries:
            self._entries[image_dir] = self._read(image_dir)
        entry = self._entries[image_dir].get(name)
        if entry is None or entry[0] != size or entry[1] != mtime_ns:
            return None
        return ImageFacts(*entry[2:])

    def put(self, path: str, size: int, mtime_ns: int, facts: ImageFacts) -> None:
        """Remember ``facts`` of ``path`` at this size and mtime (written by :meth:`save`)."""
        if self.directory is not None:
            image_dir, name = os.path.split(os.path.abspath(path))
            self._changed.setdefault(image_dir, {})[name] = [size, mtime_ns, *facts]

    def save(self) -> None:
        """Write the new entries, merged into what is on disk now (another process may have
        added its own since this one read the file)."""
        if self.directory is None or not self._changed:
            return
        try:
            os.makedirs(self.directory, exist_ok=True)
            for image_dir, new in self._changed.items():
                files = {**self._read(image_dir), **new}
                content = {"format": _CACHE_FORMAT, "directory": image_dir, "files": files}
                atomic_write_text(self._path(image_dir), json.dumps(content))
        except OSError as e:
            logger.warning(
                "Cannot write the image-check cache in %s (%s): the next run decodes the images "
                "again. Set $DETKIT_CACHE to a writable directory to keep it.",
                self.directory,
                e,
            )
        self._changed.clear()
