"""Importing plugin modules named in the ``IMPORTS`` config key."""

from __future__ import annotations

import importlib
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
    for name in names:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            # Only when the listed module itself (or its package) is missing; a missing
            # dependency of the plugin is the plugin's own error and propagates unchanged.
            if e.name is not None and (name == e.name or name.startswith(e.name + ".")):
                raise ModuleNotFoundError(
                    f"{source} lists module '{name}', which cannot be imported: {e}. "
                    "Check the spelling and run from the directory that contains it "
                    "(for projects/, the repository root), or install it.",
                    name=e.name,
                ) from e
            raise
    return names
