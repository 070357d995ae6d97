"""The folder a docs page runs in (``example_folder``), and everything the page registers
undone afterwards; running the page itself is :mod:`doc_pages`."""

from __future__ import annotations

import importlib
import logging
import sys

import pytest
import torch
from doc_pages import REPO_ROOT  # tests/docs/doc_pages.py

from detkit.config import config as config_module
from detkit.data import DatasetCatalog, MetadataCatalog
from detkit.modeling import ALL_REGISTRIES


@pytest.fixture
def one_thread():
    """torch on one thread while a page runs: its tensors are small, and on a 2-core machine
    shared with other jobs two threads per process ran a page 6x slower (122 s against 19)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def example_folder(tmp_path, monkeypatch):
    """The working folder of a page (``configs/`` linked in); undoes afterwards what running
    it registers: datasets, registry entries, config extensions, the modules imported from
    the folder, the folder on ``sys.path`` (added by IMPORTS) and ``setup_logger``'s handlers."""
    (tmp_path / "configs").symlink_to(REPO_ROOT / "configs", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    registries = {name: dict(reg._obj_map) for name, reg in ALL_REGISTRIES.items()}
    extensions = dict(config_module._CONFIG_EXTENSIONS)
    datasets, metadata = set(DatasetCatalog.list()), set(MetadataCatalog.list())
    modules = set(sys.modules)
    detkit_logger = logging.getLogger("detkit")
    handlers, level = list(detkit_logger.handlers), detkit_logger.level
    sys_path = list(sys.path)
    yield tmp_path
    for name in set(DatasetCatalog.list()) - datasets:
        DatasetCatalog.remove(name)
    for name in set(MetadataCatalog.list()) - metadata:
        MetadataCatalog.remove(name)
    for name, registry in ALL_REGISTRIES.items():
        registry._obj_map.clear()
        registry._obj_map.update(registries[name])
    config_module._CONFIG_EXTENSIONS.clear()
    config_module._CONFIG_EXTENSIONS.update(extensions)
    for module in set(sys.modules) - modules:
        origin = getattr(sys.modules[module], "__file__", None) or ""
        if origin.startswith(str(tmp_path)):
            del sys.modules[module]
    sys.path[:] = sys_path
    importlib.invalidate_caches()
    for handler in detkit_logger.handlers:
        if handler not in handlers:
            detkit_logger.removeHandler(handler)
            handler.close()
    detkit_logger.setLevel(level)
