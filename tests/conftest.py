"""Shared fixtures: detkit's log captured, throwaway plugin modules whose registrations are
undone afterwards, and a tiny shapes dataset on disk for training tests."""

from __future__ import annotations

import importlib
import logging
import os
import sys
import textwrap
import uuid
from collections.abc import Callable

import pytest

from detkit.config import config as config_module
from detkit.data import DatasetCatalog, MetadataCatalog
from detkit.data.datasets.shapes import SHAPE_CLASSES, generate_shapes
from detkit.data.datasets.voc import register_pascal_voc
from detkit.modeling import ALL_REGISTRIES

TINY_TRAIN, TINY_TEST = "tiny_shapes_train", "tiny_shapes_test"


@pytest.fixture(scope="session", autouse=True)
def detkit_cache(tmp_path_factory) -> str:
    """``$DETKIT_CACHE`` for the whole session (subprocesses inherit it): the image-check
    cache of the loaders goes to a temporary directory, not the user's ~/.cache."""
    path = str(tmp_path_factory.mktemp("detkit_cache"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DETKIT_CACHE", path)
        yield path


@pytest.fixture
def log(caplog):
    """caplog, attached to detkit's logger itself: once ``setup_logger`` has run (another
    test may run it), that logger no longer propagates to the root logger caplog watches."""
    detkit_logger = logging.getLogger("detkit")
    propagate = detkit_logger.propagate
    detkit_logger.propagate = False  # each record reaches caplog once
    detkit_logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="detkit")
    yield caplog
    detkit_logger.removeHandler(caplog.handler)
    detkit_logger.propagate = propagate


@pytest.fixture(scope="session")
def tiny_shapes_root(tmp_path_factory) -> str:
    """``<root>/shapes`` holds 16 training and 4 test images; ``<root>`` can serve as
    ``$DETKIT_DATASETS`` for subprocesses (the built-in shapes names find it there)."""
    root = str(tmp_path_factory.mktemp("datasets"))
    generate_shapes(os.path.join(root, "shapes"), num_train=16, num_test=4, progress=False)
    return root


@pytest.fixture(scope="session")
def tiny_shapes(tiny_shapes_root) -> tuple[str, str]:
    """(train name, test name) of the tiny dataset, registered in this process."""
    dirname = os.path.join(tiny_shapes_root, "shapes")
    for name, split in ((TINY_TRAIN, "train"), (TINY_TEST, "test")):
        if name not in DatasetCatalog:
            register_pascal_voc(name, dirname, split, 2007, SHAPE_CLASSES)
    yield TINY_TRAIN, TINY_TEST
    for name in (TINY_TRAIN, TINY_TEST):
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


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
