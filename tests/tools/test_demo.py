"""tools/demo.py: inputs read as training reads them (a truncated image is refused by name),
detectron2's command-line forms, the refusal of random weights, and the ground truth drawn
beside the detections."""

from __future__ import annotations

import importlib.util
import json
import os

import cv2
import numpy as np
import pytest
import torch

from detkit.structures import Boxes, Instances

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class _NoDetections:
    """Stands in for DefaultPredictor: no weights needed to test how inputs are read."""

    def __init__(self, cfg, *, allow_random_weights=False):
        self.shapes = []

    def __call__(self, image_bgr):
        self.shapes.append(image_bgr.shape)
        instances = Instances(
            image_bgr.shape[:2],
            pred_boxes=Boxes(torch.zeros(0, 4)),
            scores=torch.zeros(0),
            pred_classes=torch.zeros(0, dtype=torch.int64),
        )
        return {"instances": instances}


def _load_demo(monkeypatch, predictor=_NoDetections):
    spec = importlib.util.spec_from_file_location(
        "demo_tool", os.path.join(ROOT, "tools", "demo.py")
    )
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    if predictor is not None:
        monkeypatch.setattr(demo, "DefaultPredictor", predictor)
    return demo


def test_truncated_input_is_refused_and_the_others_processed(tmp_path, monkeypatch, capsys):
    demo = _load_demo(monkeypatch)
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
            "--allow-random-weights",
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert f"Refused: Image {inputs / 'b_cut.jpg'} (image_id None) is truncated" in err
    assert "1 of 2 images refused" in err
    records = json.load(open(out / "detections.json"))
    assert [r["file_name"] for r in records] == [str(inputs / "a_good.jpg")]


def test_no_weights_is_refused_unless_allowed(tmp_path, monkeypatch, capsys):
    demo = _load_demo(monkeypatch, predictor=None)  # the real model, randomly initialized
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.zeros((20, 30, 3), np.uint8))
    argv = ["--config-file", "configs/quickstart/shapes.yaml", "--input", str(image),
            "--output", str(tmp_path / "out")]  # fmt: skip
    with pytest.raises(SystemExit) as stop:
        demo.main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "a model with random weights draws random boxes" in err
    assert "--allow-random-weights to run it anyway" in err
    assert not (tmp_path / "out").exists()  # refused before any work
    assert demo.main(argv + ["--allow-random-weights", "MODEL.DEVICE", "cpu"]) == 0
    assert (tmp_path / "out" / "a.png").is_file()


class _OneBox:
    """A predictor whose one detection (class 1, square) scores 0.6 and sits at a known place,
    and which remembers the config it was built from."""

    configs: list = []

    def __init__(self, cfg, *, allow_random_weights=False):
        self.configs.append(cfg)

    def __call__(self, image_bgr):
        instances = Instances(
            image_bgr.shape[:2],
            pred_boxes=Boxes(torch.tensor([[8.0, 8.0, 24.0, 24.0]])),
            scores=torch.tensor([0.6]),
            pred_classes=torch.tensor([1]),
        )
        return {"instances": instances}


@pytest.mark.parametrize(
    "form",
    [
        ["--confidence-threshold", "0.7", "MODEL.WEIGHTS", "w.pth", "SEED", "5"],
        ["MODEL.WEIGHTS=w.pth", "SEED=5", "--confidence-threshold", "0.7"],
        ["--opts", "MODEL.WEIGHTS", "w.pth", "SEED", "5", "--score-thresh", "0.7"],
        ["SEED", "5", "--opts", "MODEL.WEIGHTS=w.pth", "--confidence-threshold=0.7"],
    ],
)
def test_detectron2_forms_of_options_and_overrides(form, tmp_path, monkeypatch):
    _OneBox.configs = []
    demo = _load_demo(monkeypatch, _OneBox)
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.zeros((40, 40, 3), np.uint8))
    out = tmp_path / "out"
    argv = ["--config-file", "configs/quickstart/shapes.yaml", "--input", str(image)]
    assert demo.main(argv + form + ["--output", str(out)]) == 0
    (cfg,) = _OneBox.configs
    assert cfg.MODEL.WEIGHTS == "w.pth" and cfg.SEED == 5
    # The threshold 0.7 took effect: the 0.6 detection is not kept.
    assert json.load(open(out / "detections.json"))[0]["detections"] == []


def test_dataset_images_show_the_ground_truth_beside_the_detections(
    tiny_shapes, tmp_path, monkeypatch
):
    from detkit.data import DatasetCatalog, MetadataCatalog
    from detkit.utils.visualizer import TITLE_STRIP_HEIGHT, class_color

    demo = _load_demo(monkeypatch, _OneBox)
    out = tmp_path / "out"
    code = demo.main([
        "--config-file", "configs/quickstart/shapes.yaml", "--dataset", tiny_shapes[1],
        "--max-images", "1", "--output", str(out), "--score-thresh", "0.5",
        "DATASETS.TEST", f"['{tiny_shapes[1]}']", "MODEL.WEIGHTS", "w.pth",
    ])  # fmt: skip
    assert code == 0
    first = DatasetCatalog.get(tiny_shapes[1])[0]
    assert MetadataCatalog.get(tiny_shapes[1]).thing_classes
    stem = os.path.splitext(os.path.basename(first["file_name"]))[0]
    drawn = cv2.imread(str(out / f"{stem}.png"))
    height, width = first["height"], first["width"]
    scale = 2  # the demo enlarges images under 512 px
    assert drawn.shape == (height * scale + TITLE_STRIP_HEIGHT, 2 * width * scale + 8, 3)
    # Each ground-truth box's bottom edge, in its class colour, in the left panel.
    for annotation in first["annotations"]:
        x1, _, x2, y2 = (round(v * scale) for v in annotation["bbox"])
        y2 = min(y2, height * scale - 1)
        row = drawn[TITLE_STRIP_HEIGHT + y2, x1 : x2 + 1]
        assert (row == np.array(class_color(annotation["category_id"]))).all(axis=-1).any()
    # The detection's bottom edge (y = 24 * 2) in the right panel.
    right = drawn[TITLE_STRIP_HEIGHT:, width * scale + 8 :]
    assert tuple(right[48, 32]) == class_color(1)
