"""tools/benchmark.py --inference: each phase's time lands in its own row (a box head made
slow by a known delay shows it in the box_head row only), and the printed table adds up."""

from __future__ import annotations

import importlib.util
import os
import re
import time

import pytest

from detkit.config import get_cfg

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHAPES = os.path.join(ROOT, "configs/quickstart/shapes.yaml")
DELAY = 0.5  # seconds added to each box head call


def _tool():
    spec = importlib.util.spec_from_file_location(
        "benchmark", os.path.join(ROOT, "tools/benchmark.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_slow_box_head_shows_in_its_own_row(monkeypatch):
    from detkit.modeling.roi_heads import ConvFCHead

    forward = ConvFCHead.forward

    def slow_forward(self, x):
        time.sleep(DELAY)
        return forward(self, x)

    monkeypatch.setattr(ConvFCHead, "forward", slow_forward)
    cfg = get_cfg()
    cfg.merge_from_file(SHAPES)
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TEST", "160"])
    times = _tool().profile_inference(cfg, iters=2, warmup=1)
    assert all(len(values) == 2 for values in times.values())
    assert min(times["box_head"]) >= DELAY
    # The delay is not counted twice: the other phases of the ROI heads (about a
    # millisecond each on a 160 x 213 image) stay well below it, even on a busy machine.
    for phase in ("pooler", "predictor", "postprocess"):
        assert 0 <= max(times[phase]) < DELAY / 2


def test_printed_table_adds_up(capsys):
    assert _tool().main(
        ["--config-file", SHAPES, "--inference", "--iters", "2", "--warmup", "1",
         "MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TEST", "160"]
    ) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "inference on a 160x213 image" in out
    shares = [float(s) for s in re.findall(r"^\w+ +[\d.]+ +[\d.]+ +([\d.]+)%$", out, re.M)]
    assert len(shares) == 8 and sum(shares) == pytest.approx(100.0, abs=0.5)
    overheads = re.findall(r"overhead \((.*)\): ([\d.]+) ms, ([\d.]+)% of the total", out)
    assert [label for label, _, _ in overheads] == ["all but backbone and box head", "glue"]
    # The glue is part of the larger overhead.
    assert 0 < float(overheads[1][2]) < float(overheads[0][2]) < 100
