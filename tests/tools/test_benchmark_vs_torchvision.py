"""tools/benchmark_vs_torchvision.py: torchvision's FasterRCNN built from detkit's settings and
weights detects what detkit detects (an independent implementation as the oracle), with
RoIPool and with RoIAlign, and the timings are printed as paired ratios."""

from __future__ import annotations

import importlib.util
import os
import re

import pytest
import torch

from detkit.structures import Boxes, Instances

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _tool():
    spec = importlib.util.spec_from_file_location(
        "benchmark_vs_torchvision", os.path.join(ROOT, "tools/benchmark_vs_torchvision.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("pooler", ["ROIPool", "ROIAlign"])
def test_torchvision_twin_detects_the_same_boxes(pooler, capsys):
    argv = ["--pooler", pooler, "--size", "160", "224", "--runs", "1", "--skip-training"]
    argv += ["--config-file", os.path.join(ROOT, "configs/faster_rcnn_vgg16.yaml")]
    assert _tool().main(argv) == 0
    out = capsys.readouterr().out
    counts = re.search(r"detections: detkit (\d+), torchvision (\d+)", out)
    assert counts and counts.group(1) == counts.group(2) and int(counts.group(1)) > 0
    iou = float(re.search(r"worst matched IoU ([\d.]+)", out).group(1))
    gap = float(re.search(r"largest score gap ([\d.e+-]+)", out).group(1))
    assert iou > 0.999 and gap < 1e-4, out
    assert re.search(r"inference: detkit [\d.]+ ms .* detkit / torchvision [\d.]+", out)
    if os.path.exists("/proc/self/clear_refs"):
        assert re.search(r"peak memory above the loaded models: detkit \d+ MiB", out)


def test_compare_detections_by_hand():
    ours = Instances(
        (100, 100),
        pred_boxes=Boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 40.0, 40.0]])),
        scores=torch.tensor([0.9, 0.5]),
        pred_classes=torch.tensor([2, 0]),
    )
    theirs = {  # torchvision's labels count the background as 0
        "boxes": torch.tensor([[20.0, 20.0, 40.0, 40.0], [0.0, 0.0, 10.0, 5.0]]),
        "scores": torch.tensor([0.5, 0.8]),
        "labels": torch.tensor([1, 3]),
    }
    result = _tool().compare_detections(ours, theirs, num_classes=3)
    # Box 0 matches the half-height box of its class (IoU 0.5, score gap 0.1).
    assert result["detkit"] == result["torchvision"] == 2
    assert result["min_iou"] == pytest.approx(0.5)
    assert result["max_score_gap"] == pytest.approx(0.1)
