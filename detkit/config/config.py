"""Strict yacs configs: ``_BASE_`` inheritance, typed merges and errors that suggest keys."""

from __future__ import annotations

import ast
import difflib
import os
import re
from collections.abc import Callable, Sequence
from typing import Any

import yaml
from yacs.config import CfgNode as _YacsCfgNode

__all__ = [
    "CfgNode",
    "ConfigError",
    "get_cfg",
    "register_config_extension",
]

BASE_KEY = "_BASE_"
_CONFIG_EXTENSIONS: dict[str, Callable[[CfgNode], None]] = {}


# "SOME.KEY=value": a dotted upper-case config key, then "=".
_KEY_EQUALS = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)*=")


class ConfigError(ValueError):
    """A config file or command-line override that cannot be merged."""


def register_config_extension(fn: Callable[[CfgNode], None]) -> Callable[[CfgNode], None]:
    """Register ``fn(cfg)``, a plugin's ``add_<project>_config``, that adds new keys.

    When a config lists the plugin's module in ``IMPORTS``, merging that config imports the
    module and then applies every registered extension (each once per config) before the
    rest of the file is merged, so the plugin's keys are known. Use as a decorator.
    """
    _CONFIG_EXTENSIONS[f"{fn.__module__}.{fn.__qualname__}"] = fn
    return fn


class CfgNode(_YacsCfgNode):
    """A yacs ``CfgNode`` whose merges are strict and whose errors name key, file and fix.

    * ``merge_from_file`` follows ``_BASE_`` (a path or a list of paths, relative to the
      including file, any depth); a cycle is an error naming the files.
    * An unknown key is an error naming the key, its file and the closest known keys.
    * A value of the wrong type is an error naming the key and both types; an int is
      accepted for a float key and a tuple for a list key.
    * Only YAML is read: a ``.py`` config is refused, and no code in a config is executed.
    """

    def merge_from_file(self, cfg_filename: str, _chain: Sequence[str] = ()) -> None:
        """Merge a YAML file (and its ``_BASE_`` files first) into this config."""
        path = os.path.abspath(os.fspath(cfg_filename))
        if path.endswith(".py"):
            raise ConfigError(
                f"Config file {cfg_filename} is a Python file. detkit reads only YAML configs "
                "(.yaml/.yml) and never executes code from a config; write the values as YAML."
            )
        if path in _chain:
            cycle = " -> ".join([*_chain[_chain.index(path) :], path])
            raise ConfigError(f"_BASE_ cycle in config files: {cycle}")
        if not os.path.isfile(path):
            included = f" (included as _BASE_ from {_chain[-1]})" if _chain else ""
            raise FileNotFoundError(f"Config file {path} does not exist{included}.")
        with open(path, encoding="utf-8") as f:
            try:
                data = yaml.safe_load(f)
            except yaml.YAMLError as e:
                raise ConfigError(f"Config file {path} is not valid YAML: {e}") from e
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(
                f"Config file {path} must hold a mapping of keys, not a {type(data).__name__}."
            )
        bases = data.pop(BASE_KEY, None)
        if bases is not None:
            if isinstance(bases, str):
                bases = [bases]
            if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
                raise ConfigError(f"{BASE_KEY} in {path} must be a path or a list of paths.")
            for base in bases:
                base_path = os.path.expanduser(base)
                if not os.path.isabs(base_path):
                    base_path = os.path.join(os.path.dirname(path), base_path)
                self.merge_from_file(base_path, (*_chain, path))
        self._merge_mapping(data, source=path)

    def merge_from_list(self, cfg_list: Sequence[str]) -> None:
        """Merge ``[KEY, VALUE, KEY, VALUE, ...]`` pairs, e.g. from the command line;
        ``KEY=VALUE`` in one item is accepted too (``SOLVER.BASE_LR=0.01``).

        Values are parsed as Python literals (``0.01``, ``[1, 2]``, ``True``), then as
        YAML scalars (``true``); anything else is a string.
        """
        items: list = []
        for item in cfg_list:
            # A KEY=VALUE item where a key is expected (a value may hold "=" itself).
            if len(items) % 2 == 0 and isinstance(item, str) and _KEY_EQUALS.match(item):
                items += item.split("=", 1)
            else:
                items.append(item)
        if len(items) % 2 != 0:
            raise ConfigError(
                f"Command-line overrides must be KEY VALUE pairs (or KEY=VALUE); the last "
                f"key, {items[-1]!r}, has no value. Overrides: {items}"
            )
        pairs = list(zip(items[0::2], items[1::2]))
        # IMPORTS first, wherever it stands: plugins may define keys the other pairs set.
        pairs.sort(key=lambda pair: pair[0] != "IMPORTS")
        for key, raw in pairs:
            value = raw if isinstance(self._lookup(key), str) else _parse_value(raw)
            data: dict[str, Any] = {}
            node = data
            parts = key.split(".")
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = value
            self._merge_mapping(data, source="the command line")

    def _lookup(self, key: str) -> Any:
        """The current value at a dotted key, or None when there is no such key."""
        node: Any = self
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    def _merge_mapping(self, data: dict[str, Any], source: str) -> None:
        if "IMPORTS" in data:
            # Plugins first: they may register config keys that the rest of the file uses.
            # A file adds to the IMPORTS of its bases: their plugin keys must stay loadable.
            data = dict(data)
            previous = list(self.IMPORTS)
            self._merge_into(self, {"IMPORTS": data.pop("IMPORTS")}, "", source)
            self.IMPORTS = previous + [m for m in self.IMPORTS if m not in previous]
            from detkit.utils.imports import import_plugins

            import_plugins(self.IMPORTS, source=f"IMPORTS in {source}")
            self.apply_extensions()
        self._merge_into(self, data, "", source)

    def apply_extensions(self) -> None:
        """Apply the config extensions of the modules in ``IMPORTS`` (each once), in the
        order ``IMPORTS`` lists the modules, so a plugin listed after another can extend the
        other's keys whatever the process imported first.

        Only extensions defined in a listed module (or a submodule of it) apply, so a config
        accepts a plugin's keys exactly when it names the plugin, and its dump reloads.
        """
        applied = self.__dict__.setdefault("_applied_extensions", set())
        for module in self.IMPORTS:
            for name, fn in list(_CONFIG_EXTENSIONS.items()):
                listed = fn.__module__ == module or fn.__module__.startswith(module + ".")
                if listed and name not in applied:
                    was_frozen = self.is_frozen()
                    self.defrost()
                    fn(self)
                    if was_frozen:
                        self.freeze()
                    applied.add(name)

    def _merge_into(self, node: CfgNode, data: dict[str, Any], prefix: str, source: str) -> None:
        for key, value in data.items():
            full_key = f"{prefix}{key}"
            if key not in node:
                raise ConfigError(self._unknown_key_message(full_key, source))
            old = node[key]
            if isinstance(old, CfgNode):
                if not isinstance(value, dict):
                    raise ConfigError(
                        f"Config key {full_key} (from {source}) is a group of keys; got a "
                        f"{type(value).__name__} ({value!r}). Give it a mapping of sub-keys."
                    )
                self._merge_into(old, value, f"{full_key}.", source)
            else:
                setattr(node, key, _check_type(full_key, old, value, source))

    def _unknown_key_message(self, full_key: str, source: str) -> str:
        known = list(_flat_keys(self))
        parent, _, leaf = full_key.rpartition(".")
        siblings = [k for k in known if k.rpartition(".")[0] == parent]
        # A typo is most often in the last part: compare it with its siblings' last parts.
        by_leaf = {k.rpartition(".")[2]: k for k in siblings}
        close = [by_leaf[c] for c in difflib.get_close_matches(leaf, list(by_leaf), 3, 0.6)]
        if not close:
            close = difflib.get_close_matches(full_key, known, n=3, cutoff=0.75)
        msg = f"Unknown config key '{full_key}' (from {source})."
        if close:
            msg += " Did you mean " + " or ".join(f"'{c}'" for c in close) + "?"
        elif siblings:
            msg += " Known keys there: " + ", ".join(siblings[:20]) + "."
        msg += (
            " Keys from a plugin exist once its module is listed in IMPORTS and defines them "
            "with register_config_extension."
        )
        return msg


def _flat_keys(node: CfgNode, prefix: str = ""):
    for key, value in node.items():
        yield f"{prefix}{key}"
        if isinstance(value, CfgNode):
            yield from _flat_keys(value, f"{prefix}{key}.")


def _type_name(value: Any) -> str:
    name = type(value).__name__
    return f"an {name}" if name[0] in "aeiou" else f"a {name}"


def _check_type(full_key: str, old: Any, new: Any, source: str) -> Any:
    if old is None:
        return list(new) if isinstance(new, tuple) else new
    ok: bool
    if isinstance(old, bool):
        ok = isinstance(new, bool)
    elif isinstance(old, int):
        ok = isinstance(new, int) and not isinstance(new, bool)
    elif isinstance(old, float):
        ok = isinstance(new, (int, float)) and not isinstance(new, bool)
        if ok:
            new = float(new)
    elif isinstance(old, str):
        ok = isinstance(new, str)
    elif isinstance(old, (list, tuple)):
        ok = isinstance(new, (list, tuple))
        if ok:
            new = list(new)
    else:
        ok = type(new) is type(old)
    if not ok:
        raise ConfigError(
            f"Config key {full_key} (from {source}) expects {_type_name(old)} "
            f"(default {old!r}), got {_type_name(new)} ({new!r})."
        )
    return new


def _parse_value(raw: Any) -> Any:
    if not isinstance(raw, str):
        return raw
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        pass
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    return value if isinstance(value, (bool, int, float, list, dict)) or value is None else raw


def get_cfg() -> CfgNode:
    """A fresh, mutable copy of detkit's defaults (``detkit/config/defaults.py``)."""
    from detkit.config.defaults import _C

    return _C.clone()
