"""tools/analyze_model.py: parameter counts equal the modules' own sums, and the FLOPs of a
convolution equal the hand count (one multiply-add = one FLOP, fvcore's convention)."""

from __future__ import annotations

import importlib.util
import os

import pytest

from detkit.config import get_cfg
from detkit.modeling import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = "configs/quickstart/faster_rcnn_tiny.yaml"


@pytest.fixture(scope="module")
def tool():
    path = os.path.join(ROOT, "tools", "analyze_model.py")
    spec = importlib.util.spec_from_file_location("analyze_model_tool", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def model():
    cfg = get_cfg()
    cfg.merge_from_file(CONFIG)
    cfg.merge_from_list(["MODEL.DEVICE", "cpu"])
    return build_model(cfg)


def test_parameter_counts_are_the_sums_of_the_modules_parameters(tool, model):
    counts = tool.parameter_counts(model, depth=2)
    modules = dict(model.named_modules())
    assert {"", "backbone", "backbone.stage1", "roi_heads.box_predictor"} <= set(counts)
    assert all(name.count(".") < 2 for name in counts)  # depth 2: no "backbone.stage1.0"
    for name, count in counts.items():
        assert count == sum(p.numel() for p in modules[name].parameters()), name
    # By hand: stage1's strided conv 3->16 (3x3, no bias: BN follows) and its BN (weight, bias).
    assert (
        counts["backbone.stage1"]
        - sum(p.numel() for p in modules["backbone.stage1.1"].parameters())
        == 16 * 3 * 3 * 3 + 2 * 16
    )


def test_flops_of_the_first_conv_match_the_hand_count(tool, model):
    height, width = 64, 96
    flops = tool.flop_counts(model, (height, width))
    # backbone.stage1.0.conv: 3x3, stride 2, padding 1, 3 -> 16 channels (MODEL.TINY.CHANNELS)
    # gives a 32x48 map; each output value is 3 * 3 * 3 multiply-adds.
    assert flops["backbone.stage1.0.conv"] == (height // 2) * (width // 2) * 16 * 3 * 3 * 3
    # The next one: 16 -> 16 channels at stride 1 on the 32x48 map.
    assert flops["backbone.stage1.1.conv"] == (height // 2) * (width // 2) * 16 * 16 * 3 * 3
    assert flops[""] >= flops["backbone"] > flops["backbone.stage1"]


def test_main_prints_both_tables(tool, capsys):
    code = tool.main([
        "--config-file", CONFIG, "MODEL.DEVICE=cpu", "--tasks", "parameter", "flop",
        "--input-size", "64", "96", "--depth", "1",
    ])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "(model)" in out and "backbone " in out and "roi_heads " in out
    assert "backbone.stage1 " not in out.split("FLOPs")[0]  # --depth 1 in the parameter table
    assert "on one 64x96 image" in out and "| model." not in out
