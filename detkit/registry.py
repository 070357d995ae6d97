"""Registries of swappable components and the one function that builds them from a config.

Every registered class follows one pattern:

* ``__init__`` takes explicit keyword arguments (built children included) and never sees a
  config, so the class can be built by hand inside any detector;
* a classmethod ``from_config(cls, cfg, node, input_shape=None) -> dict`` is the only place
  config keys are read;
* :func:`build_from_config` reads ``node.NAME``, calls ``from_config``, merges overrides,
  builds the object and checks its type.
"""

from __future__ import annotations

import difflib
from typing import Any

from fvcore.common.registry import Registry as _FvcoreRegistry

__all__ = ["ComponentNotFoundError", "Registry", "build_from_config", "node_path"]


class ComponentNotFoundError(KeyError):
    """A registry look-up for a name nobody registered."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class Registry(_FvcoreRegistry):
    """An fvcore registry whose failed look-ups say what is known and how plugins load."""

    def get(self, name: str) -> Any:
        obj = self._obj_map.get(name)
        if obj is not None:
            return obj
        known = sorted(self._obj_map)
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ComponentNotFoundError(
            f"No component named '{name}' in the {self._name} registry.{hint} "
            f"Registered: {', '.join(known) if known else '(none)'}. "
            "Components from plugins are registered when their module is imported: "
            "list the module in the IMPORTS config key (e.g. IMPORTS: ['projects.my_head'])."
        )

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._obj_map)


def node_path(cfg: Any, node: Any, prefix: str = "") -> str:
    """Dotted key of ``node`` inside ``cfg`` (found by identity), for error messages."""
    if node is cfg:
        return prefix or "<root>"
    if isinstance(cfg, dict):
        for key, value in cfg.items():
            if isinstance(value, dict):
                found = node_path(value, node, f"{prefix}{key}.")
                if found:
                    return found.rstrip(".")
    return ""


def build_from_config(
    registry: Registry,
    cfg: Any,
    node: Any,
    input_shape: Any = None,
    expected_type: type | tuple[type, ...] | None = None,
    *,
    name_key: str = "NAME",
    **overrides: Any,
) -> Any:
    """Build the component that ``node.NAME`` names in ``registry``.

    Modules listed in ``cfg.IMPORTS`` are imported first, so plugin names resolve.

    Args:
        registry: where ``node.NAME`` is looked up.
        cfg: the whole config (a component may read keys outside its node).
        node: the config node of this component; it must have a ``NAME`` key.
        input_shape: what the component receives (e.g. a ShapeSpec), or None.
        expected_type: the built object must be an instance of this type.
        name_key: the key of ``node`` that holds the registered name.
        **overrides: keyword arguments that replace what ``from_config`` returned.

    Returns:
        The built component.
    """
    from detkit.utils.imports import import_plugins

    import_plugins(getattr(cfg, "IMPORTS", []) or [])
    where = node_path(cfg, node) or "<config node>"
    if name_key not in node:
        raise KeyError(f"Config node {where} has no {name_key} naming a {registry._name} entry.")
    name = node[name_key]
    key = f"{where}.{name_key}"
    try:
        cls = registry.get(name)
    except ComponentNotFoundError as e:
        raise ComponentNotFoundError(f"{key}: {e}") from None
    if not hasattr(cls, "from_config"):
        raise TypeError(
            f"{key} = '{name}' names {cls.__module__}.{cls.__qualname__}, which has "
            "no from_config classmethod; registered components must define one."
        )
    kwargs = cls.from_config(cfg, node, input_shape)
    kwargs.update(overrides)
    try:
        obj = cls(**kwargs)
    except TypeError as e:
        raise TypeError(
            f"Building {key} = '{name}' ({cls.__module__}.{cls.__qualname__}) "
            f"failed: {e}. from_config returned keys {sorted(kwargs)}."
        ) from e
    if expected_type is not None and not isinstance(obj, expected_type):
        names = (
            expected_type.__name__
            if isinstance(expected_type, type)
            else " or ".join(t.__name__ for t in expected_type)
        )
        raise TypeError(
            f"{key} = '{name}' built a {type(obj).__name__}, but the "
            f"{registry._name} registry requires a {names}."
        )
    return obj
