"""PascalVOCDetectionEvaluator: dataset dicts and model outputs in, metrics as fractions and
JSON files out, with the box conventions of the mapper (continuous gt, legacy +1 predictions)."""

import json
import logging

import numpy as np
import pytest
import torch
from torch import nn

from detkit.evaluation import PascalVOCDetectionEvaluator, inference_on_dataset
from detkit.structures import Boxes, Instances

CLASSES = ["circle", "square", "triangle"]


def make_output(boxes, scores, classes, legacy_plus_one=False):
    instances = Instances((300, 300))
    instances.pred_boxes = Boxes(
        torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), legacy_plus_one
    )
    instances.scores = torch.tensor(scores, dtype=torch.float32)
    instances.pred_classes = torch.tensor(classes, dtype=torch.int64)
    return {"instances": instances}


def ann(box, category_id, difficult=False):
    return {"bbox": [float(v) for v in box], "category_id": category_id, "difficult": difficult}


def tiny_dataset():
    """Three images; 10x10 objects; the last image has none."""
    return [
        {
            "file_name": "/data/a.jpg",
            "image_id": "a",
            "height": 300,
            "width": 300,
            "annotations": [ann([0, 0, 10, 10], 0), ann([20, 20, 30, 30], 1)],
        },
        {
            "file_name": "/data/b.jpg",
            "image_id": "b",
            "height": 300,
            "width": 300,
            "annotations": [ann([50, 50, 60, 60], 2), ann([70, 70, 80, 80], 0, difficult=True)],
        },
        {
            "file_name": "/data/c.jpg",
            "image_id": "c",
            "height": 300,
            "width": 300,
            "annotations": [],
        },
    ]


def perfect_outputs(dataset, legacy_plus_one=False, shift=0.0):
    """One detection per non-difficult gt, boxes ``x2 - shift``, ``y2 - shift``."""
    outputs = {}
    for record in dataset:
        anns = [a for a in record["annotations"] if not a["difficult"]]
        boxes = [
            [a["bbox"][0], a["bbox"][1], a["bbox"][2] - shift, a["bbox"][3] - shift] for a in anns
        ]
        outputs[record["image_id"]] = make_output(
            boxes, [0.9] * len(anns), [a["category_id"] for a in anns], legacy_plus_one
        )
    return outputs


def run(evaluator, dataset, outputs):
    evaluator.reset()
    for record in dataset:
        if record["image_id"] in outputs:
            evaluator.process([{"image_id": record["image_id"]}], [outputs[record["image_id"]]])
    return evaluator.evaluate()


def test_perfect_detections_score_1_and_files_are_written(tmp_path):
    dataset = tiny_dataset()
    evaluator = PascalVOCDetectionEvaluator(
        dataset_dicts=dataset,
        thing_classes=CLASSES,
        output_dir=str(tmp_path),
        dataset_name="tiny",
    )
    bbox = run(evaluator, dataset, perfect_outputs(dataset))["bbox"]
    # Identical boxes have IoU 1 > every threshold: AP 1 at every IoU and for every class.
    assert bbox["AP50"] == pytest.approx(1.0)
    assert bbox["AP75"] == pytest.approx(1.0)
    assert bbox["AP"] == pytest.approx(1.0)
    assert [bbox[f"AP50-{c}"] for c in CLASSES] == pytest.approx([1.0] * 3)

    detections = json.loads((tmp_path / "voc_detections.json").read_text())
    per_image = {im["image_id"]: im for im in detections["images"]}
    assert [len(per_image[i]["detections"]) for i in "abc"] == [2, 1, 0]
    assert per_image["a"]["detections"][0]["bbox"] == [0.0, 0.0, 10.0, 10.0]
    assert per_image["a"]["file_name"] == "/data/a.jpg"
    metrics = json.loads((tmp_path / "voc_metrics.json").read_text())
    assert metrics["bbox"]["AP50"] == pytest.approx(1.0) and metrics["unit"] == "fraction"
    assert metrics["per_class"]["square"]["ap_per_iou"] == pytest.approx([1.0] * 10)
    assert "difficult" in metrics["rules"] and metrics["use_07_metric"] is False
    # circle: 1 positive (the other circle is difficult); square 1, triangle 1.
    assert [metrics["per_class"][c]["num_positives"] for c in CLASSES] == [1, 1, 1]


def test_legacy_plus_one_compares_pixel_index_predictions_with_continuous_gt():
    # The mapper turns gt [0, 0, 10, 10] into the pixel-index box [0, 0, 9, 9] under
    # LEGACY_PLUS_ONE, so a model trained that way predicts [0, 0, 9, 9] for it.
    dataset = tiny_dataset()
    outputs = perfect_outputs(dataset, legacy_plus_one=True, shift=1.0)
    legacy = PascalVOCDetectionEvaluator(
        dataset_dicts=dataset, thing_classes=CLASSES, legacy_plus_one=True
    )
    assert run(legacy, dataset, outputs)["bbox"]["AP"] == pytest.approx(1.0)
    # Read as continuous boxes the same predictions have IoU 9*9 / 10*10 = 0.81: TPs at the
    # 7 thresholds 0.50 ... 0.80, FPs at 0.85, 0.90, 0.95 -> AP = 0.7, AP50 = 1.
    continuous = PascalVOCDetectionEvaluator(dataset_dicts=dataset, thing_classes=CLASSES)
    bbox = run(continuous, dataset, outputs)["bbox"]
    assert bbox["AP50"] == pytest.approx(1.0)
    assert bbox["AP"] == pytest.approx(0.7)


def hand_case_dataset():
    """The hand-built case of test_voc_metric (one class, C difficult), as dataset dicts."""
    return [
        {
            "file_name": "x.jpg",
            "image_id": 7,
            "height": 200,
            "width": 200,
            "annotations": [
                ann([0, 0, 10, 10], 0),
                ann([20, 0, 30, 10], 0),
                ann([40, 0, 50, 10], 0, difficult=True),
                ann([60, 0, 70, 10], 0),
            ],
        }
    ]


HAND_CASE_OUTPUT = make_output(
    [
        [0, 0, 10, 10],
        [0, 0, 10, 10],
        [40, 0, 50, 10],
        [20, 0, 30, 5],
        [20, 0, 30, 6],
        [100, 100, 110, 110],
        [60, 0, 70, 5.5],
    ],
    [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3],
    [0] * 7,
)


@pytest.mark.parametrize("use_07_metric, expected", [(False, 2 / 3), (True, 7.5 / 11)])
def test_hand_built_case_through_the_evaluator(use_07_metric, expected, caplog):
    # See test_voc_metric.test_voc_eval_hand_built_case_area_and_11_point for the arithmetic.
    dataset = hand_case_dataset()
    evaluator = PascalVOCDetectionEvaluator(
        dataset_dicts=dataset,
        thing_classes=["thing"],
        use_07_metric=use_07_metric,
        dataset_name="hand",
    )
    with caplog.at_level(logging.INFO, logger="detkit"):
        bbox = run(evaluator, dataset, {7: HAND_CASE_OUTPUT})["bbox"]
    assert bbox["AP50"] == pytest.approx(expected)
    assert bbox["AP50-thing"] == pytest.approx(expected)
    # The rules are reported, and the per-class table shows the class's AP50 (3 decimals).
    assert ("11-point" in caplog.text) == use_07_metric
    assert "IoU > 0.5 strictly" in caplog.text and "difficult" in caplog.text
    assert f"| {expected:.3f} |" in caplog.text and "fractions in [0, 1]" in caplog.text
    # With only the 0.5 threshold, "AP" is AP50 and there is no AP75.
    only50 = PascalVOCDetectionEvaluator(
        dataset_dicts=dataset,
        thing_classes=["thing"],
        use_07_metric=use_07_metric,
        iou_thresholds=[0.5],
    )
    bbox50 = run(only50, dataset, {7: HAND_CASE_OUTPUT})["bbox"]
    assert bbox50["AP"] == pytest.approx(expected) and "AP75" not in bbox50
    # Beside the 11-point AP, the area AP of the same detections (2/3 by hand); the area
    # metric alone has nothing to add.
    if use_07_metric:
        assert bbox["AP50_area"] == pytest.approx(2 / 3)
    else:
        assert "AP50_area" not in bbox


def test_class_without_ground_truth_is_nan_and_left_out_of_the_mean(caplog):
    dataset = [
        {
            "image_id": 1,
            "height": 50,
            "width": 50,
            "annotations": [ann([0, 0, 10, 10], 0), ann([20, 20, 30, 30], 1)],
        }
    ]
    evaluator = PascalVOCDetectionEvaluator(dataset_dicts=dataset, thing_classes=CLASSES)
    # circle found (AP 1), square missed (AP 0), a triangle detection with no triangle gt.
    outputs = {1: make_output([[0, 0, 10, 10], [0, 0, 10, 10]], [0.9, 0.8], [0, 2])}
    with caplog.at_level(logging.WARNING, logger="detkit"):
        bbox = run(evaluator, dataset, outputs)["bbox"]
    assert np.isnan(bbox["AP50-triangle"])
    assert bbox["AP50"] == pytest.approx(0.5)  # (1 + 0) / 2
    assert "triangle" in caplog.text


def test_images_not_run_count_as_empty_and_unknown_images_are_errors(caplog):
    dataset = tiny_dataset()
    outputs = perfect_outputs(dataset)
    del outputs["b"]  # the triangle in b is missed
    evaluator = PascalVOCDetectionEvaluator(dataset_dicts=dataset, thing_classes=CLASSES)
    with caplog.at_level(logging.WARNING, logger="detkit"):
        bbox = run(evaluator, dataset, outputs)["bbox"]
    assert bbox["AP50"] == pytest.approx(2 / 3)  # circle 1, square 1, triangle 0
    assert "1 of 3 images" in caplog.text
    evaluator.process([{"image_id": "zzz"}], [make_output([], [], [])])
    with pytest.raises(KeyError, match="zzz"):
        evaluator.evaluate()


def test_inference_on_dataset_with_the_voc_evaluator():
    dataset = tiny_dataset()
    outputs = perfect_outputs(dataset)

    class LookupModel(nn.Module):
        def forward(self, batch):
            return [outputs[inp["image_id"]] for inp in batch]

    loader = [[{"image_id": r["image_id"]}] for r in dataset]
    evaluator = PascalVOCDetectionEvaluator(dataset_dicts=dataset, thing_classes=CLASSES)
    results = inference_on_dataset(LookupModel(), loader, evaluator)
    assert results["bbox"]["AP50"] == pytest.approx(1.0)
    assert results["timing"]["num_images"] == 3
    # The evaluator names itself and its AP metric beside the metrics.
    assert results["evaluators"] == {"bbox": {"name": "voc", "ap_metric": "area"}}


def test_from_dataset_name_reads_the_catalogs():
    data = pytest.importorskip("detkit.data")
    name = "detkit_test_voc_evaluator_tiny"
    dataset = tiny_dataset()
    data.DatasetCatalog.register(name, lambda: dataset)
    try:
        data.MetadataCatalog.get(name).set(thing_classes=CLASSES, evaluator_type="voc", year=2007)
        evaluator = PascalVOCDetectionEvaluator.from_dataset_name(name)
        assert evaluator.use_07_metric is True  # year 2007 -> 11-point
        assert run(evaluator, dataset, perfect_outputs(dataset))["bbox"]["AP50"] == 1.0
        assert evaluator.describe() == {"name": "voc", "ap_metric": "11-point"}
        assert (
            PascalVOCDetectionEvaluator.from_dataset_name(name, use_07_metric=False).use_07_metric
            is False
        )
    finally:
        data.DatasetCatalog.remove(name)
        data.MetadataCatalog.remove(name)


def test_build_evaluator_follows_the_metadata_and_the_config(tmp_path):
    data = pytest.importorskip("detkit.data")
    from detkit.config import get_cfg
    from detkit.evaluation import build_evaluator

    name = "detkit_test_build_evaluator_tiny"
    data.DatasetCatalog.register(name, tiny_dataset)
    try:
        meta = data.MetadataCatalog.get(name).set(thing_classes=CLASSES, year=2012)
        cfg = get_cfg()
        cfg.MODEL.LEGACY_PLUS_ONE = True
        with pytest.raises(ValueError, match="evaluator_type"):
            build_evaluator(cfg, name)
        meta.set(evaluator_type="voc")
        evaluator = build_evaluator(cfg, name, str(tmp_path))
        assert isinstance(evaluator, PascalVOCDetectionEvaluator)
        assert evaluator.legacy_plus_one is True  # MODEL.LEGACY_PLUS_ONE
        assert evaluator.use_07_metric is False  # year 2012 -> area
        assert evaluator.output_dir == str(tmp_path)
    finally:
        data.DatasetCatalog.remove(name)
        data.MetadataCatalog.remove(name)
