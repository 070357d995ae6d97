"""tools/demo.py reads its inputs as training does: a truncated image is refused by name."""

from __future__ import annotations

import importlib.util
import json
import os

import cv2
import numpy as np
import torch

from detkit.structures import Boxes, Instances

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class _NoDetections:
    """Stands in for DefaultPredictor: no weights needed to test how inputs are read."""

    def __init__(self, cfg):
        self.shapes = []

    def __call__(self, image_bgr):
        self.shapes.append(image_bgr.shape)
        return Instances(
            image_bgr.shape[:2],
            pred_boxes=Boxes(torch.zeros(0, 4)),
            scores=torch.zeros(0),
            pred_classes=torch.zeros(0, dtype=torch.int64),
        )


def test_truncated_input_is_refused_and_the_others_processed(tmp_path, monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location(
        "demo_tool", os.path.join(ROOT, "tools", "demo.py")
    )
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    monkeypatch.setattr(demo, "DefaultPredictor", _NoDetections)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    noise = np.random.default_rng(0).integers(0, 255, (30, 50, 3), dtype=np.uint8)
    cv2.imwrite(str(inputs / "a_good.jpg"), noise)
    data = (inputs / "a_good.jpg").read_bytes()
    (inputs / "b_cut.jpg").write_bytes(data[: len(data) // 2])  # imread would show grey rows
    out = tmp_path / "out"
    code = demo.main(
        [
            "--config-file",
            "configs/quickstart/shapes.yaml",
            "--input",
            str(inputs),
            "--output",
            str(out),
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert f"Refused: Image {inputs / 'b_cut.jpg'} (image_id None) is truncated" in err
    assert "1 of 2 images refused" in err
    records = json.load(open(out / "detections.json"))
    assert [r["file_name"] for r in records] == [str(inputs / "a_good.jpg")]
