"""The plugins as a user runs them: tools/list_components.py shows their components,
tools/train_net.py trains their configs (a few iterations on a tiny shapes dataset), and a
config that forgets IMPORTS fails with the known names and the hint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
LIGHT_HEAD_CONFIG = "projects/light_head/configs/shapes_light_head.yaml"
RETINANET_CONFIG = "projects/retinanet/configs/shapes_retinanet.yaml"
# A few iterations of a small model: these runs check the plumbing, not what it learns.
SHORT = [
    "SOLVER.MAX_ITER",
    "3",
    "SOLVER.STEPS",
    "[2]",
    "SOLVER.WARMUP_ITERS",
    "1",
    "SOLVER.CHECKPOINT_PERIOD",
    "100",
    "SOLVER.IMS_PER_BATCH",
    "2",
    "TEST.EVAL_PERIOD",
    "0",
    "MODEL.TINY.CHANNELS",
    "[8, 16, 16, 32]",
    "DATALOADER.NUM_WORKERS",
    "0",
]


def run(args: list[str], datasets_root: str | None = None) -> subprocess.CompletedProcess:
    """``python <args>`` from the repository root, as a user runs it."""
    env = dict(os.environ)
    if datasets_root is not None:
        env["DETKIT_DATASETS"] = datasets_root
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def check(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    if proc.returncode != 0:
        pytest.fail(
            f"{proc.args} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


def member_line(output: str, registry: str, name: str) -> str:
    """The line of ``name`` in the ``<registry>_REGISTRY`` section of list_components."""
    lines = output.splitlines()
    start = lines.index(next(x for x in lines if x.startswith(f"{registry}_REGISTRY (")))
    for line in lines[start + 1 :]:
        if not line.startswith("    "):
            break
        if line.split()[0] == name:
            return line.strip()
    raise AssertionError(f"{name} not listed under {registry}_REGISTRY:\n{output}")


def test_list_components_shows_each_plugin_and_where_it_is_defined():
    output = check(
        run(
            [
                "tools/list_components.py",
                "--import",
                "projects.light_head",
                "--import",
                "projects.retinanet",
            ]
        )
    ).stdout
    assert member_line(output, "ROI_BOX_HEAD", "LightConvHead").endswith(
        "projects.light_head.box_head (projects/light_head/box_head.py)"
    )
    assert member_line(output, "META_ARCH", "RetinaNet").endswith(
        "projects.retinanet.meta_arch (projects/retinanet/meta_arch.py)"
    )
    # detkit's own components are still listed from detkit.
    assert member_line(output, "ROI_BOX_HEAD", "ConvFCHead").endswith(
        "(detkit/modeling/roi_heads/box_head.py)"
    )
    without = check(run(["tools/list_components.py"])).stdout
    assert "LightConvHead" not in without and "RetinaNet" not in without


@pytest.mark.parametrize(
    "config, model_name, own_weight",
    [
        (LIGHT_HEAD_CONFIG, "GeneralizedRCNN", "roi_heads.box_head.reduce.weight"),
        (RETINANET_CONFIG, "RetinaNet", "head.cls_score.weight"),
    ],
    ids=["light_head", "retinanet"],
)
def test_train_net_trains_and_evaluates_the_project_config(
    config, model_name, own_weight, tiny_shapes_root, tmp_path
):
    out = tmp_path / "out"
    proc = check(
        run(
            ["tools/train_net.py", "--config-file", config, *SHORT, "OUTPUT_DIR", str(out)],
            tiny_shapes_root,
        )
    )
    assert f"Model: {model_name} with" in proc.stdout
    assert "Final VOC mAP@0.5 (11-point) on shapes_test" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["iterations"] == 3 and 0.0 <= summary["mAP@0.5"] <= 1.0
    assert summary["evaluator"] == "voc" and summary["unit"] == "fraction"
    # The plugin's own layers were trained and saved (the config really used it).
    state = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)
    assert own_weight in state["model"]
    # The merged config written at start names the plugin and loads back.
    from detkit.config import get_cfg

    cfg = get_cfg()
    cfg.merge_from_file(str(out / "config.yaml"))
    assert cfg.IMPORTS and cfg.SOLVER.MAX_ITER == 3


def test_config_without_imports_fails_with_known_names_and_the_hint(tiny_shapes_root, tmp_path):
    config = tmp_path / "forgot_imports.yaml"
    config.write_text(
        f"_BASE_: {REPO_ROOT / 'configs/quickstart/shapes.yaml'}\n"
        "MODEL:\n  ROI_BOX_HEAD:\n    NAME: LightConvHead\n"
    )
    proc = run(
        [
            "tools/train_net.py",
            "--config-file",
            str(config),
            *SHORT,
            "OUTPUT_DIR",
            str(tmp_path / "out"),
        ],
        tiny_shapes_root,
    )
    assert proc.returncode != 0
    assert (
        "MODEL.ROI_BOX_HEAD.NAME: No component named 'LightConvHead' in the ROI_BOX_HEAD "
        "registry." in proc.stderr
    )
    registered = proc.stderr.split("Registered: ")[1].split(".")[0].split(", ")
    assert "ConvFCHead" in registered and "LightConvHead" not in registered
    assert "list the module in the IMPORTS config key" in proc.stderr
