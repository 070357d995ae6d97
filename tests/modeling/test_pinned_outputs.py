"""Pinned outputs: one training step's losses and one inference pass's proposals and
detections of the single-level VGG16 and quickstart configs (random weights, seed 0) must
stay what they were when pinned (``pinned_outputs.json``). Changes of structure (how levels,
labelling and preprocessing are organized) must not move a single value.

The model runs in float64 so the figures do not depend on the CPU's float32 rounding (the
ranking of near-equal random-weight scores decides which proposals are kept). Regenerate
the file only for a change meant to alter the outputs, and say so in its commit:

    .venv/bin/python tests/modeling/test_pinned_outputs.py --write
"""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch

from detkit.config import get_cfg
from detkit.modeling import build_model
from detkit.structures import Boxes, Instances

PINNED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pinned_outputs.json")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Config and image scale: VGG16's anchors (128-512 px) need images of a few hundred pixels.
CASES = {"configs/faster_rcnn_vgg16.yaml": 2, "configs/quickstart/shapes.yaml": 1}

OVERRIDES = ["MODEL.DEVICE", "cpu"]


def pinned_batch(scale: int = 1) -> list[dict]:
    """Two images of different sizes (non-square; the originals scaled apart in x and y),
    three classes; sizes and boxes times ``scale``."""
    g = torch.Generator().manual_seed(0)
    first_boxes = [[10.0, 12.0, 60.0, 70.0], [70.0, 20.0, 120.0, 90.0], [30.0, 40.0, 50.0, 56.0]]
    first = {
        "image": torch.rand(3, 96 * scale, 128 * scale, generator=g) * 255,
        "height": 192 * scale,
        "width": 320 * scale,
        "image_id": "a",
        "instances": Instances(
            (96 * scale, 128 * scale),
            gt_boxes=Boxes(torch.tensor(first_boxes) * scale),
            gt_classes=torch.tensor([0, 2, 1]),
        ),
    }
    second = {
        "image": torch.rand(3, 80 * scale, 112 * scale, generator=g) * 255,
        "height": 160 * scale,
        "width": 224 * scale,
        "image_id": "b",
        "instances": Instances(
            (80 * scale, 112 * scale),
            gt_boxes=Boxes(torch.tensor([[5.0, 5.0, 100.0, 60.0]]) * scale),
            gt_classes=torch.tensor([1]),
        ),
    }
    return [first, second]


def figures(config_file: str, scale: int = 1) -> dict:
    """Losses (training step), then proposals / detections (inference), rounded to 6
    significant digits."""
    torch.manual_seed(0)
    cfg = get_cfg()
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(OVERRIDES)
    if cfg.MODEL.META_ARCHITECTURE == "GeneralizedRCNN":  # random weights score low
        cfg.merge_from_list(["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"])
    # float64: far from float32's rounding, so the ranking of near-equal random-weight
    # scores (and the proposals it selects) is the same on every CPU.
    model = build_model(cfg).double()
    captured = {}
    model.proposal_generator.register_forward_hook(
        lambda module, args, output: captured.__setitem__("proposals", output[0])
    )
    model.train()
    torch.manual_seed(1)
    losses = model(pinned_batch(scale))
    out: dict = {"losses": {k: float(v.detach()) for k, v in sorted(losses.items())}}
    model.eval()
    with torch.no_grad():
        results = model(pinned_batch(scale))
    for i, p in enumerate(captured["proposals"]):
        boxes = p.proposal_boxes.tensor
        out[f"proposals_{i}"] = {
            "count": len(p),
            "first": boxes[:3].tolist(),
            "sum": float(boxes.sum()),
            "logits_sum": float(p.objectness_logits.sum()),
        }
    for i, r in enumerate(results):
        if "instances" in r:
            inst = r["instances"]
            out[f"detections_{i}"] = {
                "count": len(inst),
                "first": inst.pred_boxes.tensor[:3].tolist(),
                "sum": float(inst.pred_boxes.tensor.sum()),
                "scores_sum": float(inst.scores.sum()),
                "classes": inst.pred_classes[:10].tolist(),
            }
    return out


def _assert_close(actual, expected, path: str) -> None:
    """Equal structure, equal integers, floats within 1e-9 relative (float64 runs)."""
    if isinstance(expected, dict):
        assert sorted(actual) == sorted(expected), path
        for key in expected:
            _assert_close(actual[key], expected[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert len(actual) == len(expected), path
        for i, (a, e) in enumerate(zip(actual, expected)):
            _assert_close(a, e, f"{path}[{i}]")
    elif isinstance(expected, float):
        assert actual == pytest.approx(expected, rel=1e-9, abs=1e-9), path
    else:
        assert actual == expected, path


@pytest.mark.parametrize("config_file", sorted(CASES))
def test_outputs_match_the_pinned_values(config_file):
    with open(PINNED) as f:
        expected = json.load(f)[config_file]
    actual = figures(os.path.join(ROOT, config_file), CASES[config_file])
    _assert_close(actual, expected, config_file)


if __name__ == "__main__" and "--write" in sys.argv:
    pinned = {name: figures(os.path.join(ROOT, name), scale) for name, scale in CASES.items()}
    with open(PINNED, "w") as f:
        json.dump(pinned, f, indent=1)
        f.write("\n")
    print(f"Wrote {PINNED}")
