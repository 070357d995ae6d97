"""IMPORTS plugins: a module in the current folder is found even when, as for a script run
as ``python path/to/tools/train_net.py``, that folder is not on sys.path; a wrong name says
where plugins are looked for; a plugin's own missing dependency is reported unchanged."""

import os
import sys
import uuid

import pytest

from detkit.utils.imports import import_plugins


@pytest.fixture
def plugin_folder(tmp_path, monkeypatch):
    """The current folder is ``tmp_path`` and is not on sys.path (as for a script)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    created = []
    yield tmp_path, created
    for name in created:
        sys.modules.pop(name, None)


def test_a_plugin_in_the_current_folder_is_found(plugin_folder):
    folder, created = plugin_folder
    name = f"my_plugin_{uuid.uuid4().hex[:8]}"
    (folder / f"{name}.py").write_text("LOADED = 'from the current folder'\n")
    created.append(name)
    assert import_plugins([name]) == [name]
    assert sys.modules[name].LOADED == "from the current folder"
    assert str(folder) in sys.path and sys.path[-1] == str(folder)  # after the installed ones


def test_a_wrong_name_says_where_plugins_are_looked_for(plugin_folder):
    folder, _ = plugin_folder
    with pytest.raises(
        ModuleNotFoundError,
        match=(
            rf"IMPORTS lists module 'no_such_plugin.heads', which cannot be imported.*"
            rf"current folder \({folder}: there as no_such_plugin.py or no_such_plugin/\)"
        ),
    ):
        import_plugins(["no_such_plugin.heads"])


def test_a_missing_dependency_of_the_plugin_is_its_own_error(plugin_folder):
    folder, created = plugin_folder
    name = f"my_plugin_{uuid.uuid4().hex[:8]}"
    (folder / f"{name}.py").write_text("import dependency_not_installed_xyz\n")
    created.append(name)
    with pytest.raises(ModuleNotFoundError) as error:
        import_plugins([name])
    assert error.value.name == "dependency_not_installed_xyz"  # not reworded as a bad name
    assert "IMPORTS lists" not in str(error.value)
    assert os.getcwd() == str(folder)
