"""Shared fixtures: throwaway plugin modules whose registrations are undone afterwards."""

from __future__ import annotations

import importlib
import sys
import textwrap
import uuid
from collections.abc import Callable

import pytest

from detkit.config import config as config_module
from detkit.modeling import ALL_REGISTRIES


@pytest.fixture
def plugin_module(tmp_path, monkeypatch) -> Callable[[str], str]:
    """``make(source, name=None) -> module name``: a module file on ``sys.path``.

    Everything the modules register is undone at teardown: config extensions, entries of
    detkit's registries, and the modules themselves in ``sys.modules``.
    """
    monkeypatch.syspath_prepend(str(tmp_path))
    extensions_before = dict(config_module._CONFIG_EXTENSIONS)
    registries_before = {name: dict(reg._obj_map) for name, reg in ALL_REGISTRIES.items()}
    created: list[str] = []

    def make(source: str, name: str | None = None) -> str:
        name = name or f"detkit_test_plugin_{uuid.uuid4().hex[:8]}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
        created.append(name)
        importlib.invalidate_caches()  # the directory changed after sys.path was set
        return name

    yield make

    config_module._CONFIG_EXTENSIONS.clear()
    config_module._CONFIG_EXTENSIONS.update(extensions_before)
    for reg_name, registry in ALL_REGISTRIES.items():
        registry._obj_map.clear()
        registry._obj_map.update(registries_before[reg_name])
    for name in created:
        sys.modules.pop(name, None)
