"""analyze_errors: false positives by kind and missed objects, on a hand-built case and
against voc_eval's true positives and 11-point AP; tools/analyze_errors.py end to end."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from detkit.evaluation.error_analysis import analyze_errors
from detkit.evaluation.voc_metric import ELEVEN_RECALL_POINTS, voc_eval

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLASSES = ["circle", "square", "triangle"]

# Two images, boxes wider than tall and taller than wide. Image 0: A (class 0), B (class 1),
# C (class 0, difficult); image 1: D (class 1), E (class 2), F (class 0, never detected).
GT = {
    "image_ids": [0, 0, 0, 1, 1, 1],
    "boxes": [
        [0, 0, 10, 20],  # A
        [30, 0, 50, 10],  # B
        [60, 60, 70, 70],  # C, difficult
        [0, 0, 20, 20],  # D
        [40, 40, 60, 80],  # E
        [70, 0, 90, 30],  # F
    ],
    "classes": [0, 1, 0, 1, 2, 0],
    "difficult": [False, False, True, False, False, False],
}
# (image, box, score, class) and what each is, by hand:
DETECTIONS = [
    (0, [30, 0, 50, 10], 0.95, 0),  # B's box labelled 0: confusion (IoU 1 with class 1)
    (0, [0, 0, 10, 20], 0.90, 0),  # A: true positive
    (0, [0, 0, 10, 19], 0.80, 0),  # A again (IoU 0.95), already found: duplicate
    (0, [0, 0, 10, 6], 0.60, 0),  # IoU 60 / 200 = 0.3 with A: localization
    (0, [80, 80, 90, 90], 0.50, 0),  # overlaps nothing: background
    (0, [60, 60, 70, 70], 0.40, 0),  # C, difficult: ignored
    (1, [40, 40, 60, 80], 0.97, 1),  # E's box labelled 1: confusion
    (1, [0, 0, 20, 20], 0.30, 1),  # D: true positive
]


def run_analysis(**kwargs):
    image_ids, boxes, scores, classes = zip(*DETECTIONS)
    return analyze_errors(
        det_image_ids=np.array(image_ids),
        det_boxes=np.array(boxes, dtype=float),
        det_scores=np.array(scores),
        det_classes=np.array(classes),
        gt_image_ids=np.array(GT["image_ids"]),
        gt_boxes=np.array(GT["boxes"], dtype=float),
        gt_classes=np.array(GT["classes"]),
        gt_difficult=np.array(GT["difficult"]),
        num_classes=3,
        **kwargs,
    )


def test_hand_built_case_at_recall_one_half():
    circle, square, triangle = run_analysis(recall_level=0.5)
    # Class 0 (A and F; C is difficult): ranked confusion, TP -> recall 0.5 at rank 2.
    assert circle["num_positives"] == 2 and circle["true_positives"] == 1
    assert circle["recall"] == 0.5
    assert circle["precision_at_recall"] == pytest.approx(1 / 2)
    assert circle["false_positives"] == {
        "duplicate": 0,
        "confusion": 1,
        "localization": 0,
        "background": 0,
    }
    assert (circle["missed"], circle["missed_but_confused"]) == (1, 0)  # F: nothing on it
    # Class 1 (B and D): confusion on E (0.97), then D (0.30): recall 0.5 at rank 2.
    assert square["precision_at_recall"] == pytest.approx(1 / 2)
    assert square["false_positives"]["confusion"] == 1
    # B is missed, but a class-0 detection has its box.
    assert (square["missed"], square["missed_but_confused"]) == (1, 1)
    # Class 2 (E): no detection of its class; E is covered by the class-1 one.
    assert triangle["true_positives"] == 0 and triangle["precision_at_recall"] is None
    assert (triangle["missed"], triangle["missed_but_confused"]) == (1, 1)
    assert sum(triangle["false_positives"].values()) == 0


def test_a_recall_never_reached_counts_every_false_positive():
    circle = run_analysis(recall_level=0.9)[0]
    assert circle["precision_at_recall"] is None
    # Every kind once; the detection on the difficult C is none of them.
    assert circle["false_positives"] == {
        "duplicate": 1,
        "confusion": 1,
        "localization": 1,
        "background": 1,
    }


def test_background_iou_moves_a_poor_box_to_background():
    circle = run_analysis(recall_level=0.9, background_iou=0.35)[0]
    assert circle["false_positives"]["localization"] == 0  # IoU 0.3 <= 0.35
    assert circle["false_positives"]["background"] == 2


def random_case(seed: int, num_classes: int = 3):
    rng = np.random.default_rng(seed)
    num_images, gts, dets = 6, [], []
    for image in range(num_images):
        for _ in range(rng.integers(0, 5)):
            x, y = rng.uniform(0, 80, 2)
            w, h = rng.uniform(8, 40), rng.uniform(4, 30)  # x and y scales differ
            gts.append((image, [x, y, x + w, y + h], rng.integers(num_classes), rng.random() < 0.1))
    for image, box, cls, _ in gts:
        for _ in range(rng.integers(0, 4)):  # jittered copies, some relabelled
            jitter = rng.normal(0, 3, 4)
            label = cls if rng.random() < 0.7 else rng.integers(num_classes)
            dets.append((image, list(np.array(box) + jitter), rng.random(), label))
    for _ in range(10):  # boxes on nothing
        x, y = rng.uniform(0, 100, 2)
        dets.append((rng.integers(num_images), [x, y, x + 10, y + 15], rng.random(), 0))
    g = list(zip(*gts))
    d = list(zip(*dets))
    arrays = {
        "det_image_ids": np.array(d[0]),
        "det_boxes": np.array(d[1], dtype=float),
        "det_scores": np.array(d[2]),
        "det_classes": np.array(d[3]),
        "gt_image_ids": np.array(g[0]),
        "gt_boxes": np.array(g[1], dtype=float),
        "gt_classes": np.array(g[2]),
        "gt_difficult": np.array(g[3]),
        "num_classes": num_classes,
    }
    return arrays


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_voc_eval(seed):
    arrays = random_case(seed)
    result = voc_eval(**arrays, use_07_metric=True)
    eleven = [analyze_errors(**arrays, recall_level=r) for r in ELEVEN_RECALL_POINTS[1:]]
    first = analyze_errors(**arrays, recall_level=1e-9)
    checked = 0
    for i, entry in enumerate(first):
        k = entry["class"]
        # The true positives are voc_eval's.
        assert entry["true_positives"] == round(result.recall[0, k] * result.num_positives[k])
        assert entry["num_positives"] == result.num_positives[k]
        # The precisions at the 11 recall points average to voc_eval's 11-point AP.
        points = [entry["precision_at_recall"]] + [e[i]["precision_at_recall"] for e in eleven]
        assert np.mean([p or 0.0 for p in points]) == pytest.approx(result.ap[0, k], abs=1e-12)
        # At a recall never reached, every detection of the class not on a difficult object
        # is a true positive or one false positive.
        never = analyze_errors(**arrays, recall_level=1.0)[i]
        if never["precision_at_recall"] is None:
            mine = arrays["det_classes"] == k
            on_difficult = _on_difficult(arrays, mine)
            assert entry["true_positives"] + sum(never["false_positives"].values()) == (
                mine.sum() - on_difficult
            )
            checked += 1
        assert entry["missed"] == entry["num_positives"] - entry["true_positives"]
    assert checked > 0


def _on_difficult(arrays, mine) -> int:
    """Detections of the class whose best same-class match above 0.5 is a difficult object
    (voc_eval ignores them), counted independently of analyze_errors."""
    from detkit.evaluation.voc_metric import box_iou_numpy

    count = 0
    for d in np.flatnonzero(mine):
        same = (arrays["gt_image_ids"] == arrays["det_image_ids"][d]) & (
            arrays["gt_classes"] == arrays["det_classes"][d]
        )
        if not same.any():
            continue
        idx = np.flatnonzero(same)
        iou = box_iou_numpy(arrays["det_boxes"][d : d + 1], arrays["gt_boxes"][idx], False)[0]
        best = iou.argmax()
        count += int(iou[best] > 0.5 and arrays["gt_difficult"][idx[best]])
    return count


def test_bad_levels_are_refused():
    with pytest.raises(ValueError, match="recall_level"):
        run_analysis(recall_level=0.0)
    with pytest.raises(ValueError, match="background_iou"):
        run_analysis(background_iou=0.6)


def _write_detections(path, dataset_name, images):
    with open(path, "w") as f:
        json.dump(
            {
                "dataset": dataset_name,
                "box_mode": "XYXY absolute pixels, continuous (width x2 - x1)",
                "images": images,
            },
            f,
        )


def test_tool_prints_and_writes_the_report(tmp_path):
    data = pytest.importorskip("detkit.data")
    name = "detkit_test_analyze_errors"
    records = []
    for image in (0, 1):
        annotations = [
            {"bbox": box, "category_id": c, "difficult": int(dif)}
            for i, box, c, dif in zip(GT["image_ids"], GT["boxes"], GT["classes"], GT["difficult"])
            if i == image
        ]
        records.append(
            {"image_id": f"img{image}", "file_name": f"img{image}.jpg", "annotations": annotations}
        )
    images = [
        {
            "image_id": f"img{image}",
            "file_name": f"img{image}.jpg",
            "detections": [
                {"category_id": c, "category": CLASSES[c], "bbox": box, "score": s}
                for i, box, s, c in DETECTIONS
                if i == image
            ],
        }
        for image in (0, 1)
    ]
    path = tmp_path / "voc_detections.json"
    _write_detections(path, name, images)
    data.DatasetCatalog.register(name, lambda: records)
    data.MetadataCatalog.get(name).set(thing_classes=CLASSES)
    try:
        spec = importlib.util.spec_from_file_location(
            "analyze_errors", os.path.join(ROOT, "tools", "analyze_errors.py")
        )
        tool = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(tool)
        main = tool.main
        report_path = tmp_path / "errors.json"
        assert main([str(path), "--recall", "0.5", "--json", str(report_path)]) == 0
        report = json.load(open(report_path))
        assert [c["class_name"] for c in report["classes"]] == CLASSES
        assert report["classes"] == [
            dict(entry, class_name=CLASSES[entry["class"]])
            for entry in run_analysis(recall_level=0.5)
        ]
        # An image the dataset lacks is named.
        _write_detections(path, name, images + [dict(images[0], image_id="img7")])
        assert main([str(path)]) == 2
    finally:
        data.DatasetCatalog.remove(name)
        data.MetadataCatalog.remove(name)


def test_tool_errors_name_the_file_and_the_dataset(tmp_path):
    missing = tmp_path / "nope.json"
    proc = subprocess.run(
        [sys.executable, "tools/analyze_errors.py", str(missing)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and f"Cannot read {missing}" in proc.stderr
    assert "Traceback" not in proc.stderr
    unknown = tmp_path / "voc_detections.json"
    _write_detections(unknown, "no_such_dataset", [])
    proc = subprocess.run(
        [sys.executable, "tools/analyze_errors.py", str(unknown)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "dataset 'no_such_dataset'" in proc.stderr
    assert "--config-file" in proc.stderr
