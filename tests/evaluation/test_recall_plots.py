"""Figure 4 of several methods (tools/plot_recall.py) from ProposalEvaluator's reports."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from detkit.evaluation import ProposalEvaluator
from detkit.evaluation.recall_plots import load_recall_report, plot_recall_comparison
from detkit.structures import Boxes, Instances

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def report(tmp_path, name, topk, num_proposals):
    """A report of one image with one object, whose k-th proposal is shifted by k px."""
    dicts = [{"image_id": 1, "annotations": [{"bbox": [0, 0, 20, 20], "category_id": 0}]}]
    boxes = torch.tensor([[float(k), 0.0, 20.0 + k, 20.0] for k in range(num_proposals)])
    out = Instances(
        (40, 40),
        proposal_boxes=Boxes(boxes),
        objectness_logits=-torch.arange(num_proposals, dtype=torch.float32),
    )
    evaluator = ProposalEvaluator(dataset_dicts=dicts, topk=topk, output_dir=str(tmp_path / name))
    evaluator.process([{"image_id": 1}], [{"proposals": out}])
    evaluator.evaluate()
    return str(tmp_path / name / "proposal_metrics.json")


def record_y_limits(monkeypatch) -> list[tuple[float, float]]:
    """The y limits of every axes of each figure saved from now on."""
    import matplotlib.figure

    limits: list[tuple[float, float]] = []
    savefig = matplotlib.figure.Figure.savefig

    def recording_savefig(figure, *args, **kwargs):
        limits.extend(tuple(ax.get_ylim()) for ax in figure.axes)
        return savefig(figure, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", recording_savefig)
    return limits


def test_panels_hold_the_methods_that_have_that_many_proposals(tmp_path, monkeypatch):
    a = load_recall_report(report(tmp_path, "a", [1, 3], 3))
    b = load_recall_report(report(tmp_path, "b", [1], 1))
    # The first proposal matches exactly: recall 1 up to IoU 1.0 for both at N = 1.
    assert a["recall_fine"]["1"][-1] == pytest.approx(1.0)
    limits = record_y_limits(monkeypatch)
    drawn = plot_recall_comparison({"A": a, "B": b}, str(tmp_path / "f.png"), topk=(1, 3))
    assert drawn == {1: ["A", "B"], 3: ["A"]}
    assert cv2.imread(str(tmp_path / "f.png")) is not None
    assert limits == [(0.0, 1.0), (0.0, 1.0)]  # recall as a fraction on both panels


def test_the_evaluators_pictures_show_recall_as_a_fraction(tmp_path, monkeypatch):
    limits = record_y_limits(monkeypatch)
    report(tmp_path, "a", [1, 3], 3)
    assert limits == [(0.0, 1.0), (0.0, 1.0)]  # recall_vs_iou.png, recall_vs_proposals.png


def test_a_report_in_percent_is_read_as_fractions(tmp_path):
    # A report written when recalls were in percent has no "unit": its curves are scaled.
    path = report(tmp_path, "a", [1, 3], 3)
    current = json.loads(open(path).read())
    old = {k: v for k, v in current.items() if k != "unit"}
    for key in ("recall_fine", "average_recall", "recall_at_0.5"):
        old[key] = json.loads(json.dumps(old[key]), parse_float=lambda v: 100 * float(v))
    old_path = tmp_path / "old.json"
    old_path.write_text(json.dumps(old))
    loaded = load_recall_report(str(old_path))
    assert loaded["unit"] == "fraction"
    for key in ("recall_fine", "average_recall", "recall_at_0.5"):
        expected = leaves(current[key])
        assert any(v for v in expected) and leaves(loaded[key]) == pytest.approx(expected), key


def leaves(value) -> list:
    """The numbers (and None) of nested dicts and lists, in order."""
    if isinstance(value, dict):
        return [x for v in value.values() for x in leaves(v)]
    if isinstance(value, list):
        return [x for v in value for x in leaves(v)]
    return [value]


def load_tool():
    spec = importlib.util.spec_from_file_location(
        "plot_recall_tool", os.path.join(ROOT, "tools", "plot_recall.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_tool_writes_the_picture_and_refuses_bad_arguments(tmp_path, capsys):
    path = report(tmp_path, "a", [1, 3], 3)
    out = tmp_path / "fig" / "recall.png"
    options = ["--output", str(out), "--topk", "1", "3"]  # --topk takes the rest: last
    # As a user runs it, once; the error cases in-process.
    proc = subprocess.run(
        [sys.executable, "tools/plot_recall.py", f"RPN={path}", *options],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    image = cv2.imread(str(out))
    assert image is not None and image.shape[1] > image.shape[0]  # two panels side by side
    tool = load_tool()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"AR": 1}))
    assert tool.main([f"X={bad}", *options]) == 2
    assert "not a proposal_metrics.json" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        tool.main(["no-label", *options])
    assert exit_info.value.code == 2 and "is not LABEL=PATH" in capsys.readouterr().err
    assert np.isfinite(load_recall_report(path)["recall_fine"]["3"][0])
