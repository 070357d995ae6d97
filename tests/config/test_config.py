"""Tests of detkit.config: defaults, _BASE_ inheritance, strict typed merges, IMPORTS."""

from __future__ import annotations

import ast
import importlib
import io
import os
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest
import yaml

import detkit.config.defaults as defaults_module
from detkit.config import CfgNode, ConfigError, get_cfg

REPO_ROOT = Path(__file__).resolve().parents[2]

PLUGIN_WITH_KEYS = """
    from detkit.config import CfgNode as CN
    from detkit.config import register_config_extension

    @register_config_extension
    def add_testplug_config(cfg):
        cfg.TESTPLUG = CN()
        cfg.TESTPLUG.ALPHA = 1.0
        cfg.TESTPLUG.NAMES = ["a"]
"""


def write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return str(path)


def flat_keys(node: CfgNode, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in node.items():
        keys.add(prefix + key)
        if isinstance(value, CfgNode):
            keys |= flat_keys(value, f"{prefix}{key}.")
    return keys


# --------------------------------------------------------------------------------------------
# Defaults
# --------------------------------------------------------------------------------------------


def test_get_cfg_returns_a_fresh_copy_each_time():
    first = get_cfg()
    first.MODEL.RPN.NMS_THRESH = 0.1
    first.MODEL.PIXEL_MEAN.append(7.0)  # a nested mutable value must not be shared either
    first.MODEL.RPN.MATCHER.NAME = "Changed"

    second = get_cfg()
    assert second.MODEL.RPN.NMS_THRESH == 0.7
    assert second.MODEL.PIXEL_MEAN == [102.9801, 115.9465, 122.7717]
    assert second.MODEL.RPN.MATCHER.NAME == "IoUMatcher"
    assert second == defaults_module._C
    assert second is not defaults_module._C


def _assigned_keys_and_lines(source: str) -> dict[str, int]:
    """Dotted key (``MODEL.RPN.NMS_THRESH``) -> line of every ``_C...`` assignment."""

    def dotted(target: ast.expr) -> str | None:
        parts = []
        while isinstance(target, ast.Attribute):
            parts.append(target.attr)
            target = target.value
        if isinstance(target, ast.Name) and target.id == "_C":
            return ".".join(reversed(parts))
        return None

    found = {}
    for stmt in ast.walk(ast.parse(source)):
        if isinstance(stmt, (ast.Assign, ast.AnnAssign)):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            for target in targets:
                key = dotted(target)
                if key is not None:
                    found[key] = stmt.lineno
    return found


def test_every_default_key_is_assigned_on_a_line_with_a_comment():
    source = Path(defaults_module.__file__).read_text(encoding="utf-8")
    comment_lines = {
        tok.start[0]: tok.string
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type == tokenize.COMMENT
    }
    assigned = _assigned_keys_and_lines(source)
    # Every key of the config is declared by such an assignment (none slipped in otherwise)...
    assert set(assigned) - {""} == flat_keys(defaults_module._C)  # "" is `_C = CN()` itself
    # ...and every such line, the root included, carries a comment with words in it.
    lines = source.splitlines()
    uncommented = [
        lines[n - 1]
        for n in assigned.values()
        if len(comment_lines.get(n, "").lstrip("#").strip()) < 2
    ]
    assert uncommented == []


def value_keys(node: CfgNode, prefix: str = "") -> set[str]:
    """The keys that hold a value, not a group of keys."""
    keys = set()
    for key, value in node.items():
        if isinstance(value, CfgNode):
            keys |= value_keys(value, f"{prefix}{key}.")
        else:
            keys.add(prefix + key)
    return keys


def _names_read_in(paths: list[Path]) -> set[str]:
    """Every attribute name (``node.KEY``) and string constant (``node["KEY"]``) in the
    Python files under ``paths``, except the defaults file that declares the keys."""
    names: set[str] = set()
    for root in paths:
        for path in root.rglob("*.py"):
            if path.resolve() == Path(defaults_module.__file__).resolve():
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Attribute):
                    names.add(node.attr)
                elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                    names.add(node.value)
    return names


def test_every_default_key_is_read_somewhere():
    # A key that nothing reads is a promise the code does not keep (setting it changes
    # nothing). Oracle: the key's last name is read as an attribute or a string somewhere in
    # detkit/, tools/ or projects/. Names shared by several keys (NAME, MAX_ITER) pass if any
    # reads them; a key no code mentions at all fails.
    read = _names_read_in([REPO_ROOT / "detkit", REPO_ROOT / "tools", REPO_ROOT / "projects"])
    unread = sorted(k for k in value_keys(defaults_module._C) if k.rsplit(".", 1)[-1] not in read)
    assert unread == []


# --------------------------------------------------------------------------------------------
# _BASE_
# --------------------------------------------------------------------------------------------


def test_base_paths_are_relative_to_the_including_file_at_any_depth(tmp_path, monkeypatch):
    write(
        tmp_path / "bases/deep/root.yaml",
        "OUTPUT_DIR: root_out\nMODEL:\n  RPN:\n    NMS_THRESH: 0.4\n    POST_NMS_TOPK_TEST: 50\n",
    )
    write(
        tmp_path / "bases/mid.yaml",
        "_BASE_: deep/root.yaml\n"
        "MODEL:\n  RPN:\n    NMS_THRESH: 0.5\n    POST_NMS_TOPK_TEST: 100\n",
    )
    child = write(
        tmp_path / "configs/child.yaml",
        "_BASE_: ../bases/mid.yaml\nMODEL:\n  RPN:\n    NMS_THRESH: 0.6\n",
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # relative to the files, not to the working directory

    cfg = get_cfg()
    cfg.merge_from_file(child)
    assert cfg.MODEL.RPN.NMS_THRESH == 0.6  # child overrides mid overrides root
    assert cfg.MODEL.RPN.POST_NMS_TOPK_TEST == 100  # mid overrides root
    assert cfg.OUTPUT_DIR == "root_out"  # only root sets it
    assert cfg.MODEL.RPN.PRE_NMS_TOPK_TEST == 6000  # nobody sets it: the default


def test_base_list_is_merged_in_order_before_the_file(tmp_path):
    write(tmp_path / "a.yaml", "SEED: 1\nOUTPUT_DIR: from_a\nMODEL:\n  DEVICE: cuda\n")
    write(tmp_path / "b.yaml", "SEED: 2\nMODEL:\n  DEVICE: cuda:1\n")
    child = write(tmp_path / "child.yaml", "_BASE_: [a.yaml, b.yaml]\nMODEL:\n  DEVICE: cpu\n")
    cfg = get_cfg()
    cfg.merge_from_file(child)
    assert cfg.SEED == 2  # the later base wins over the earlier one
    assert cfg.OUTPUT_DIR == "from_a"
    assert cfg.MODEL.DEVICE == "cpu"  # the file wins over its bases


def test_base_cycle_is_an_error_naming_the_files(tmp_path):
    a = write(tmp_path / "a.yaml", "_BASE_: b.yaml\nSEED: 1\n")
    b = write(tmp_path / "b.yaml", "_BASE_: a.yaml\nSEED: 2\n")
    with pytest.raises(ConfigError) as excinfo:
        get_cfg().merge_from_file(a)
    assert str(excinfo.value) == f"_BASE_ cycle in config files: {a} -> {b} -> {a}"


def test_base_self_cycle_is_an_error(tmp_path):
    a = write(tmp_path / "a.yaml", "_BASE_: a.yaml\n")
    with pytest.raises(ConfigError) as excinfo:
        get_cfg().merge_from_file(a)
    assert str(excinfo.value) == f"_BASE_ cycle in config files: {a} -> {a}"


def test_diamond_bases_are_not_a_cycle(tmp_path):
    write(tmp_path / "root.yaml", "SEED: 5\n")
    write(tmp_path / "left.yaml", "_BASE_: root.yaml\nOUTPUT_DIR: left\n")
    write(tmp_path / "right.yaml", "_BASE_: root.yaml\n")
    top = write(tmp_path / "top.yaml", "_BASE_: [left.yaml, right.yaml]\n")
    cfg = get_cfg()
    cfg.merge_from_file(top)
    assert (cfg.SEED, cfg.OUTPUT_DIR) == (5, "left")


def test_missing_base_names_the_including_file(tmp_path):
    child = write(tmp_path / "child.yaml", "_BASE_: nope.yaml\n")
    with pytest.raises(FileNotFoundError) as excinfo:
        get_cfg().merge_from_file(child)
    msg = str(excinfo.value)
    assert str(tmp_path / "nope.yaml") in msg
    assert f"included as _BASE_ from {child}" in msg


# --------------------------------------------------------------------------------------------
# merge_from_list
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "raw", "expected"),
    [
        ("MODEL.RPN.NMS_THRESH", "0.5", 0.5),
        ("MODEL.RPN.SMOOTH_L1_BETA", "1e-3", 0.001),
        ("MODEL.RPN.MIN_SIZE", "8", 8.0),  # an int for a float key becomes a float
        ("MODEL.RPN.POST_NMS_TOPK_TEST", "150", 150),
        ("MODEL.ANCHOR_GENERATOR.SIZES", "[64, 128]", [64, 128]),
        ("MODEL.RPN.IN_FEATURES", "['res4']", ["res4"]),
        ("MODEL.ROI_HEADS.CLS_AGNOSTIC_BBOX_REG", "True", True),
        ("MODEL.ROI_HEADS.CLS_AGNOSTIC_BBOX_REG", "true", True),
        ("MODEL.RPN.MATCHER.ALLOW_LOW_QUALITY_MATCHES", "False", False),
        ("MODEL.RPN.MATCHER.ALLOW_LOW_QUALITY_MATCHES", "false", False),
        ("MODEL.DEVICE", "cuda:0", "cuda:0"),
        ("MODEL.WEIGHTS", "/data/models/vgg16.pth", "/data/models/vgg16.pth"),
        ("OUTPUT_DIR", "output/run-1", "output/run-1"),
    ],
)
def test_merge_from_list_parses_command_line_strings(key, raw, expected):
    cfg = get_cfg()
    cfg.merge_from_list([key, raw])
    node = cfg
    for part in key.split("."):
        node = node[part]
    assert node == expected
    assert type(node) is type(expected)


def test_merge_from_list_sets_several_pairs_and_leaves_the_rest():
    cfg = get_cfg()
    cfg.merge_from_list(["SEED", "3", "MODEL.RPN.NMS_THRESH", "0.6", "SEED", "4"])
    expected = get_cfg()
    expected.SEED = 4  # the last occurrence wins
    expected.MODEL.RPN.NMS_THRESH = 0.6
    assert cfg == expected


def test_merge_from_list_odd_count_is_an_error():
    with pytest.raises(ConfigError) as excinfo:
        get_cfg().merge_from_list(["SEED", "3", "MODEL.RPN.NMS_THRESH"])
    msg = str(excinfo.value)
    assert "KEY VALUE pairs" in msg
    assert "the last key, 'MODEL.RPN.NMS_THRESH', has no value" in msg


def test_merge_from_list_accepts_key_equals_value():
    cfg = get_cfg()
    cfg.merge_from_list([
        "SOLVER.BASE_LR=0.5", "OUTPUT_DIR", "runs/lr=0.5", "SOLVER.STEPS=[10, 20]", "SEED", "7",
    ])  # fmt: skip
    assert cfg.SOLVER.BASE_LR == 0.5 and cfg.SOLVER.STEPS == [10, 20] and cfg.SEED == 7
    assert cfg.OUTPUT_DIR == "runs/lr=0.5"  # a value holding "=" is a value


# --------------------------------------------------------------------------------------------
# Unknown keys and wrong types
# --------------------------------------------------------------------------------------------


def test_unknown_key_in_a_file_names_key_file_and_closest_key(tmp_path):
    path = write(tmp_path / "typo.yaml", "MODEL:\n  WETGHTS: model.pth\n")
    with pytest.raises(ConfigError) as excinfo:
        get_cfg().merge_from_file(path)
    msg = str(excinfo.value)
    assert f"Unknown config key 'MODEL.WETGHTS' (from {path})" in msg
    assert "Did you mean 'MODEL.WEIGHTS'?" in msg


def test_unknown_key_in_a_base_names_the_base_file(tmp_path):
    base = write(tmp_path / "base.yaml", "MODEL:\n  RPN:\n    NMS_TRESH: 0.5\n")
    child = write(tmp_path / "child.yaml", "_BASE_: base.yaml\n")
    with pytest.raises(ConfigError) as excinfo:
        get_cfg().merge_from_file(child)
    msg = str(excinfo.value)
    assert f"Unknown config key 'MODEL.RPN.NMS_TRESH' (from {base})" in msg
    assert "'MODEL.RPN.NMS_THRESH'" in msg


def test_unknown_key_on_the_command_line():
    with pytest.raises(ConfigError) as excinfo:
        get_cfg().merge_from_list(["MODEL.WETGHTS", "model.pth"])
    msg = str(excinfo.value)
    assert "Unknown config key 'MODEL.WETGHTS' (from the command line)" in msg
    assert "Did you mean 'MODEL.WEIGHTS'?" in msg


def test_unknown_key_with_no_close_match_lists_the_sibling_keys():
    with pytest.raises(ConfigError) as excinfo:
        get_cfg().merge_from_list(["INPUT.ZZZZZZZZ", "1"])
    msg = str(excinfo.value)
    assert "Unknown config key 'INPUT.ZZZZZZZZ'" in msg
    assert "INPUT.FORMAT" in msg and "INPUT.SIZE_DIVISIBILITY" in msg
    assert "IMPORTS" in msg  # the hint for plugin keys


def test_wrong_type_names_key_and_both_types(tmp_path):
    path = write(tmp_path / "bad.yaml", "MODEL:\n  RPN:\n    NMS_THRESH: abc\n")
    with pytest.raises(ConfigError) as excinfo:
        get_cfg().merge_from_file(path)
    msg = str(excinfo.value)
    assert "MODEL.RPN.NMS_THRESH" in msg
    assert path in msg
    assert "expects a float" in msg
    assert "got a str" in msg


def test_wrong_type_on_the_command_line():
    with pytest.raises(ConfigError) as excinfo:
        get_cfg().merge_from_list(["MODEL.RPN.NMS_THRESH", "abc"])
    msg = str(excinfo.value)
    assert "MODEL.RPN.NMS_THRESH (from the command line)" in msg
    assert "expects a float" in msg and "got a str" in msg


def test_int_is_accepted_for_a_float_key_and_becomes_a_float(tmp_path):
    path = write(tmp_path / "int.yaml", "MODEL:\n  RPN:\n    NMS_THRESH: 1\n")
    cfg = get_cfg()
    cfg.merge_from_file(path)
    assert cfg.MODEL.RPN.NMS_THRESH == 1.0
    assert type(cfg.MODEL.RPN.NMS_THRESH) is float


@pytest.mark.parametrize(
    ("yaml_text", "key", "got"),
    [
        ("SEED: true\n", "SEED", "bool"),  # bool is an int subclass in Python, not here
        ("MODEL:\n  RPN:\n    NMS_THRESH: false\n", "MODEL.RPN.NMS_THRESH", "bool"),
        ("MODEL:\n  LEGACY_PLUS_ONE: 1\n", "MODEL.LEGACY_PLUS_ONE", "int"),
        ("MODEL:\n  RPN:\n    POST_NMS_TOPK_TEST: 1.5\n", "MODEL.RPN.POST_NMS_TOPK_TEST", "float"),
        ("MODEL:\n  ANCHOR_GENERATOR:\n    SIZES: 128\n", "MODEL.ANCHOR_GENERATOR.SIZES", "int"),
    ],
)
def test_wrong_scalar_types_are_rejected(tmp_path, yaml_text, key, got):
    path = write(tmp_path / "bad.yaml", yaml_text)
    with pytest.raises(ConfigError) as excinfo:
        get_cfg().merge_from_file(path)
    msg = str(excinfo.value)
    assert f"Config key {key} (from {path})" in msg
    article = "an" if got[0] in "aeiou" else "a"
    assert f"got {article} {got} (" in msg


def test_a_scalar_for_a_group_of_keys_is_an_error(tmp_path):
    path = write(tmp_path / "bad.yaml", "MODEL:\n  RPN: 3\n")
    with pytest.raises(ConfigError) as excinfo:
        get_cfg().merge_from_file(path)
    msg = str(excinfo.value)
    assert "MODEL.RPN" in msg and "group of keys" in msg


# --------------------------------------------------------------------------------------------
# Only YAML; nothing executed
# --------------------------------------------------------------------------------------------


def test_python_config_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / "executed.marker"
    py_cfg = write(tmp_path / "evil.py", f"open({str(marker)!r}, 'w').close()\n")
    with pytest.raises(ConfigError) as excinfo:
        get_cfg().merge_from_file(py_cfg)
    msg = str(excinfo.value)
    assert "Python file" in msg and "YAML" in msg
    assert not marker.exists()


def test_python_config_as_a_base_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / "executed.marker"
    write(tmp_path / "evil.py", f"open({str(marker)!r}, 'w').close()\n")
    child = write(tmp_path / "child.yaml", "_BASE_: evil.py\n")
    with pytest.raises(ConfigError, match="Python file"):
        get_cfg().merge_from_file(child)
    assert not marker.exists()


def test_yaml_python_tags_are_not_executed(tmp_path):
    marker = tmp_path / "executed.marker"
    path = write(
        tmp_path / "tagged.yaml",
        f"OUTPUT_DIR: !!python/object/apply:os.system ['touch {marker}']\n",
    )
    with pytest.raises(ConfigError, match="not valid YAML"):
        get_cfg().merge_from_file(path)
    assert not marker.exists()


# --------------------------------------------------------------------------------------------
# Dump and reload
# --------------------------------------------------------------------------------------------


def test_dump_loads_back_equal(tmp_path):
    cfg = get_cfg()
    cfg.merge_from_list(
        [
            "MODEL.RPN.NMS_THRESH", "0.65",
            "MODEL.ANCHOR_GENERATOR.SIZES", "[32, 64]",
            "MODEL.ROI_HEADS.CLS_AGNOSTIC_BBOX_REG", "True",
            "MODEL.WEIGHTS", "torchvision://vgg16",
            "SEED", "42",
        ]
    )  # fmt: skip
    assert cfg != get_cfg()  # so the comparison below is not trivially true
    dumped = write(tmp_path / "dumped.yaml", cfg.dump())
    reloaded = get_cfg()
    reloaded.merge_from_file(dumped)
    assert reloaded == cfg


# --------------------------------------------------------------------------------------------
# IMPORTS and plugin config extensions
# --------------------------------------------------------------------------------------------


def test_imports_are_imported_while_merging(tmp_path, plugin_module):
    mod = plugin_module("IMPORTED_BY_TEST = True\n")
    assert mod not in sys.modules
    path = write(tmp_path / "cfg.yaml", f"IMPORTS: [{mod}]\n")
    cfg = get_cfg()
    cfg.merge_from_file(path)
    assert sys.modules[mod].IMPORTED_BY_TEST is True
    assert cfg.IMPORTS == [mod]


def test_plugin_config_extension_adds_keys_the_same_file_sets(tmp_path, plugin_module):
    mod = plugin_module(PLUGIN_WITH_KEYS)
    path = write(
        tmp_path / "cfg.yaml",
        f"TESTPLUG:\n  ALPHA: 2.5\n  NAMES: [x, y]\nIMPORTS: [{mod}]\n",  # keys before IMPORTS
    )
    cfg = get_cfg()
    cfg.merge_from_file(path)
    assert cfg.TESTPLUG.ALPHA == 2.5
    assert cfg.TESTPLUG.NAMES == ["x", "y"]
    assert "TESTPLUG" not in get_cfg()  # the defaults themselves are unchanged


def test_plugin_keys_are_type_checked_and_suggested(tmp_path, plugin_module):
    mod = plugin_module(PLUGIN_WITH_KEYS)
    path = write(tmp_path / "cfg.yaml", f"IMPORTS: [{mod}]\nTESTPLUG:\n  ALPHE: 2.5\n")
    with pytest.raises(ConfigError) as excinfo:
        get_cfg().merge_from_file(path)
    assert "Did you mean 'TESTPLUG.ALPHA'" in str(excinfo.value)  # the closest comes first
    path = write(tmp_path / "cfg2.yaml", f"IMPORTS: [{mod}]\nTESTPLUG:\n  ALPHA: high\n")
    with pytest.raises(ConfigError, match="expects a float"):
        get_cfg().merge_from_file(path)


def test_plugin_keys_from_the_command_line(plugin_module):
    mod = plugin_module(PLUGIN_WITH_KEYS)
    cfg = get_cfg()
    cfg.merge_from_list(["TESTPLUG.ALPHA", "0.25", "IMPORTS", f"['{mod}']"])
    assert cfg.TESTPLUG.ALPHA == 0.25
    assert cfg.IMPORTS == [mod]


def test_plugin_keys_without_imports_are_unknown_and_the_error_says_imports(tmp_path):
    path = write(tmp_path / "cfg.yaml", "TESTPLUG:\n  ALPHA: 2.5\n")
    with pytest.raises(ConfigError) as excinfo:
        get_cfg().merge_from_file(path)
    msg = str(excinfo.value)
    assert f"Unknown config key 'TESTPLUG' (from {path})" in msg
    assert "IMPORTS" in msg and "register_config_extension" in msg


def test_plugin_config_with_extension_dumps_and_loads_back_equal(tmp_path, plugin_module):
    mod = plugin_module(PLUGIN_WITH_KEYS)
    path = write(tmp_path / "cfg.yaml", f"IMPORTS: [{mod}]\nTESTPLUG:\n  ALPHA: 3.0\n")
    cfg = get_cfg()
    cfg.merge_from_file(path)
    dumped = write(tmp_path / "dumped.yaml", cfg.dump())
    reloaded = get_cfg()
    reloaded.merge_from_file(dumped)
    assert reloaded == cfg


def test_missing_import_names_the_module_and_the_file(tmp_path):
    path = write(tmp_path / "cfg.yaml", "IMPORTS: [detkit_no_such_plugin_xyz]\n")
    with pytest.raises(ModuleNotFoundError) as excinfo:
        get_cfg().merge_from_file(path)
    msg = str(excinfo.value)
    assert "'detkit_no_such_plugin_xyz'" in msg
    assert f"IMPORTS in {path}" in msg


def test_missing_dependency_of_a_plugin_is_not_blamed_on_the_plugin(tmp_path, plugin_module):
    # The plugin exists; what is missing is a module it imports, whose name happens to be a
    # prefix of the plugin's name. The error must name the missing dependency as missing.
    mod = plugin_module("import detkit_tp_dep\n", name="detkit_tp_dep_plugin")
    path = write(tmp_path / "cfg.yaml", f"IMPORTS: [{mod}]\n")
    with pytest.raises(ModuleNotFoundError) as excinfo:
        get_cfg().merge_from_file(path)
    assert excinfo.value.name == "detkit_tp_dep"


def test_imports_of_bases_survive_in_the_merged_config(tmp_path, plugin_module):
    """A dumped config must reload in a fresh process (e.g. OUTPUT_DIR/config.yaml, DDP).

    The base imports a plugin and sets its keys; the child lists another module in IMPORTS.
    The merged IMPORTS must still name the base's plugin, otherwise the dump holds keys
    that no listed module defines.
    """
    plugin = plugin_module(PLUGIN_WITH_KEYS)
    other = plugin_module("X = 1\n")
    write(tmp_path / "base.yaml", f"IMPORTS: [{plugin}]\nTESTPLUG:\n  ALPHA: 4.0\n")
    child = write(tmp_path / "child.yaml", f"_BASE_: base.yaml\nIMPORTS: [{other}]\n")
    cfg = get_cfg()
    cfg.merge_from_file(child)
    assert cfg.TESTPLUG.ALPHA == 4.0
    dumped = write(tmp_path / "dumped.yaml", cfg.dump())
    reload_script = (
        "import sys\n"
        "from detkit.config import get_cfg\n"
        "cfg = get_cfg()\n"
        "cfg.merge_from_file(sys.argv[1])\n"
        "print(cfg.dump())\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), str(tmp_path)]))
    proc = subprocess.run(
        [sys.executable, "-c", reload_script, dumped],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert yaml.safe_load(proc.stdout) == yaml.safe_load(cfg.dump())


def test_extensions_apply_in_imports_order_whatever_was_imported_first(tmp_path, plugin_module):
    # The extending plugin adds a key to the base plugin's node: it needs the base applied
    # first. Importing the extending module first (e.g. an earlier config) must not matter.
    base = plugin_module(
        "from detkit.config import CfgNode, register_config_extension\n"
        "@register_config_extension\n"
        "def add_base(cfg):\n"
        "    cfg.BASEPLUG = CfgNode()\n"
        "    cfg.BASEPLUG.A = 1\n"
    )
    extending = plugin_module(
        "from detkit.config import register_config_extension\n"
        "@register_config_extension\n"
        "def add_extension(cfg):\n"
        "    cfg.BASEPLUG.B = 2\n"
    )
    importlib.import_module(extending)  # registered before the base's extension
    importlib.import_module(base)
    path = write(tmp_path / "cfg.yaml", f"IMPORTS: [{base}, {extending}]\nBASEPLUG:\n  B: 5\n")
    cfg = get_cfg()
    cfg.merge_from_file(path)
    assert (cfg.BASEPLUG.A, cfg.BASEPLUG.B) == (1, 5)
