"""Importing plugin modules named in the ``IMPORTS`` config key."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable

__all__ = ["import_plugins"]


def import_plugins(module_names: Iterable[str], source: str = "IMPORTS") -> list[str]:
    """Import each module so that it registers its components (idempotent).

    Args:
        module_names: dotted module names, e.g. ``["projects.light_head"]``.
        source: where the names came from, for the error message.

    Returns:
        The module names, in the order imported.
    """
    names = list(module_names)
    cwd = os.getcwd()
    for name in names:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            # A missing dependency of the plugin is the plugin's own error: unchanged.
            if not _is_missing(name, e):
                raise
            if cwd in sys.path:
                raise _not_found(name, source, cwd, e) from e
            # A script's own folder, not the current one, is on sys.path: a plugin beside
            # the user (``python path/to/tools/train_net.py`` run from the plugin's parent
            # folder) is looked for there too, after everything installed.
            sys.path.append(cwd)
            importlib.invalidate_caches()
            try:
                importlib.import_module(name)
            except ModuleNotFoundError as again:
                if not _is_missing(name, again):
                    raise
                raise _not_found(name, source, cwd, again) from again
    return names


def _is_missing(name: str, error: ModuleNotFoundError) -> bool:
    """Whether ``error`` is about ``name`` itself (or its package), not a dependency."""
    return error.name is not None and (name == error.name or name.startswith(error.name + "."))


def _not_found(name: str, source: str, cwd: str, error: ModuleNotFoundError) -> Exception:
    top = name.split(".")[0]
    return ModuleNotFoundError(
        f"{source} lists module '{name}', which cannot be imported: {error}. Check the "
        f"spelling. A plugin is found in the current folder ({cwd}: there as {top}.py or "
        f"{top}/), in the detkit repository (projects.*), on PYTHONPATH, or installed.",
        name=error.name,
    )
