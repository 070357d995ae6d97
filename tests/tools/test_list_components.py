"""Tests of tools/list_components.py, run as a user runs it: a separate process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "tools" / "list_components.py"
REGISTRY_NAMES = [
    "META_ARCH",
    "BACKBONE",
    "ANCHOR_GENERATOR",
    "BOX_CODER",
    "MATCHER",
    "SAMPLER",
    "PROPOSAL_GENERATOR",
    "RPN_HEAD",
    "ROI_HEADS",
    "ROI_BOX_HEAD",
    "ROI_POOLER",
]


def run_tool(*args: str, extra_path: Path | None = None) -> str:
    env = dict(os.environ)
    if extra_path is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(extra_path), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=REPO_ROOT, capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def section(output: str, registry: str) -> list[str]:
    """The member lines printed under ``<registry>_REGISTRY (n)``."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{registry}_REGISTRY ("))
    members = []
    for line in lines[start + 1 :]:
        if not line.startswith("    "):
            break
        members.append(line.strip())
    return members


@pytest.fixture(scope="module")
def plugin_output(tmp_path_factory) -> str:
    """One run (the tool starts torch, a few seconds): plugins by --import and by config."""
    tmp_path = tmp_path_factory.mktemp("list_components")
    (tmp_path / "detkit_listtest_backbone.py").write_text(
        textwrap.dedent(
            """
            from detkit.modeling import BACKBONE_REGISTRY

            @BACKBONE_REGISTRY.register()
            class ListTestBackbone:
                pass
            """
        )
    )
    (tmp_path / "detkit_listtest_heads.py").write_text(
        textwrap.dedent(
            """
            from detkit.modeling import ROI_HEADS_REGISTRY

            @ROI_HEADS_REGISTRY.register()
            class ListTestROIHeads:
                pass
            """
        )
    )
    config = tmp_path / "plugin.yaml"
    config.write_text("IMPORTS: [detkit_listtest_heads]\n")
    return run_tool(
        "--import", "detkit_listtest_backbone", "--config-file", str(config), extra_path=tmp_path
    )


def test_prints_every_registry_in_order(plugin_output):
    headers = [line.split(" ")[0] for line in plugin_output.splitlines() if line[:1] != " "]
    assert headers == [f"{name}_REGISTRY" for name in REGISTRY_NAMES]
    for name in REGISTRY_NAMES:  # the count in each header is the number of lines below it
        members = [m for m in section(plugin_output, name) if m != "(none registered)"]
        assert f"{name}_REGISTRY ({len(members)})" in plugin_output


def test_lists_plugin_components_with_their_module(plugin_output):
    output = plugin_output
    backbone_lines = [m for m in section(output, "BACKBONE") if m.startswith("ListTestBackbone ")]
    assert len(backbone_lines) == 1
    assert "detkit_listtest_backbone (" in backbone_lines[0]  # the defining module...
    assert backbone_lines[0].endswith("detkit_listtest_backbone.py)")  # ...and its file
    heads_lines = [m for m in section(output, "ROI_HEADS") if m.startswith("ListTestROIHeads ")]
    assert len(heads_lines) == 1  # from the config's IMPORTS
    assert "detkit_listtest_heads (" in heads_lines[0]
    assert "ListTestBackbone" not in "\n".join(section(output, "ROI_HEADS"))
