"""COCOEvaluator: agreement with pycocotools run directly on COCO-format files, perfect and
empty detections, original category ids and the legacy +1 width."""

import contextlib
import io
import json

import numpy as np
import pytest
import torch

from detkit.evaluation import COCOEvaluator
from detkit.structures import Boxes, Instances

CATEGORY_IDS = [1, 3, 7]  # non-contiguous, as in COCO
NAMES = ["cat", "dog", "bird"]
ID_MAP = {c: k for k, c in enumerate(CATEGORY_IDS)}


def make_output(xyxy, scores, classes, legacy_plus_one=False):
    instances = Instances((400, 400))
    instances.pred_boxes = Boxes(
        torch.tensor(xyxy, dtype=torch.float32).reshape(-1, 4), legacy_plus_one
    )
    instances.scores = torch.tensor(scores, dtype=torch.float32)
    instances.pred_classes = torch.tensor(classes, dtype=torch.int64)
    return {"instances": instances}


def random_coco(seed, num_images=30):
    """A COCO gt dict and COCO-format detections with integer XYWH boxes (exact in float32)
    and well-separated scores, so the evaluator's float32 tensors lose nothing."""
    rng = np.random.default_rng(seed)
    images, annotations, detections = [], [], []
    for i in range(num_images):
        image_id = 100 + 3 * i
        images.append({"id": image_id, "width": 400, "height": 400, "file_name": f"{i}.jpg"})
        for _ in range(rng.integers(0, 6)):
            x, y = (int(v) for v in rng.integers(0, 300, size=2))
            w, h = (int(v) for v in rng.integers(10, 100, size=2))
            category = int(rng.choice(CATEGORY_IDS))
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": int(rng.random() < 0.05),
                }
            )
            for _ in range(rng.choice([0, 1, 1, 2])):
                dx, dy, dw, dh = (int(v) for v in rng.integers(-8, 9, size=4))
                detections.append(
                    {
                        "image_id": image_id,
                        "category_id": category,
                        "bbox": [x + dx, y + dy, max(w + dw, 1), max(h + dh, 1)],
                    }
                )
        for _ in range(rng.integers(0, 3)):
            x, y = (int(v) for v in rng.integers(0, 350, size=2))
            detections.append(
                {
                    "image_id": image_id,
                    "category_id": int(rng.choice(CATEGORY_IDS)),
                    "bbox": [x, y, int(rng.integers(5, 50)), int(rng.integers(5, 50))],
                }
            )
    scores = rng.permutation(len(detections)) / len(detections) + 0.001
    for d, s in zip(detections, scores):
        d["score"] = float(np.float32(s))
    categories = [{"id": c, "name": n} for c, n in zip(CATEGORY_IDS, NAMES)]
    return {"images": images, "annotations": annotations, "categories": categories}, detections


def pycocotools_stats(gt_file, detections, category_ids=None):
    """pycocotools' 12 stats (fractions, -1 where undefined), over ``category_ids`` only when
    given."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt_file))
        coco_eval = COCOeval(coco_gt, coco_gt.loadRes(detections), "bbox")
        if category_ids is not None:
            coco_eval.params.catIds = list(category_ids)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval.stats


def test_agrees_with_pycocotools_run_directly(tmp_path):
    gt, detections = random_coco(seed=0)
    gt_file = tmp_path / "instances.json"
    gt_file.write_text(json.dumps(gt))
    expected = pycocotools_stats(gt_file, [dict(d) for d in detections])

    # The same detections as a model gives them: XYXY boxes and contiguous class ids.
    evaluator = COCOEvaluator(
        thing_classes=NAMES,
        json_file=str(gt_file),
        thing_dataset_id_to_contiguous_id=ID_MAP,
        output_dir=str(tmp_path / "out"),
    )
    evaluator.reset()
    for image in gt["images"]:
        dets = [d for d in detections if d["image_id"] == image["id"]]
        xyxy = [[x, y, x + w, y + h] for x, y, w, h in (d["bbox"] for d in dets)]
        output = make_output(
            xyxy, [d["score"] for d in dets], [ID_MAP[d["category_id"]] for d in dets]
        )
        evaluator.process([{"image_id": image["id"]}], [output])
    bbox = evaluator.evaluate()["bbox"]

    ours = [bbox[k] for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")]
    assert 0.05 < bbox["AP"] < bbox["AP50"] < 0.95  # a real mix of hits and misses
    # pycocotools' own fractions; its -1 (no ground truth in that size range, here "large")
    # becomes NaN.
    assert expected[5] == -1
    np.testing.assert_allclose(
        ours, np.where(expected[:6] < 0, np.nan, expected[:6]), rtol=0, atol=1e-12
    )
    # Per-class AP: pycocotools' AP when it evaluates that category alone.
    for category_id, name in zip(CATEGORY_IDS, NAMES):
        alone = pycocotools_stats(gt_file, [dict(d) for d in detections], [category_id])
        assert bbox[f"AP-{name}"] == pytest.approx(alone[0], abs=1e-12), name
    # The results file holds the original category ids and XYWH boxes.
    written = json.loads((tmp_path / "out" / "coco_instances_results.json").read_text())
    key = sorted((d["image_id"], d["category_id"], tuple(d["bbox"])) for d in detections)
    assert sorted((d["image_id"], d["category_id"], tuple(d["bbox"])) for d in written) == key


def tiny_dataset_dicts():
    # VOC-style string ids; continuous XYXY boxes; one image without objects.
    return [
        {
            "image_id": "a",
            "height": 200,
            "width": 200,
            "file_name": "a.jpg",
            "annotations": [
                {"bbox": [0.0, 0.0, 10.0, 10.0], "category_id": 0},
                {"bbox": [50.0, 50.0, 150.0, 150.0], "category_id": 2},
            ],
        },
        {
            "image_id": "b",
            "height": 200,
            "width": 200,
            "file_name": "b.jpg",
            "annotations": [{"bbox": [20.0, 30.0, 60.0, 90.0], "category_id": 1}],
        },
        {"image_id": "c", "height": 200, "width": 200, "file_name": "c.jpg", "annotations": []},
    ]


@pytest.mark.parametrize("legacy_plus_one", [False, True])
def test_perfect_detections_from_dataset_dicts_score_1(legacy_plus_one):
    # Under LEGACY_PLUS_ONE the model predicts pixel-index boxes (x2 - 1, y2 - 1); the COCO
    # width x2 - x1 + 1 restores the continuous box, so the detections are still perfect.
    shift = 1.0 if legacy_plus_one else 0.0
    evaluator = COCOEvaluator(
        thing_classes=NAMES, dataset_dicts=tiny_dataset_dicts(), legacy_plus_one=legacy_plus_one
    )
    evaluator.reset()
    for record in tiny_dataset_dicts():
        anns = record["annotations"]
        xyxy = [
            [a["bbox"][0], a["bbox"][1], a["bbox"][2] - shift, a["bbox"][3] - shift] for a in anns
        ]
        evaluator.process(
            [{"image_id": record["image_id"]}],
            [
                make_output(
                    xyxy, [0.9] * len(anns), [a["category_id"] for a in anns], legacy_plus_one
                )
            ],
        )
    bbox = evaluator.evaluate()["bbox"]
    assert bbox["AP"] == pytest.approx(1.0)
    assert bbox["AP50"] == pytest.approx(1.0)
    assert bbox["APs"] == pytest.approx(1.0)  # the 10x10 box is small (area < 32^2)
    assert bbox["APl"] == pytest.approx(1.0)  # the 100x100 box is large (area > 96^2)
    assert bbox["APm"] == pytest.approx(1.0)  # the 40x60 box is medium
    assert [bbox[f"AP-{n}"] for n in NAMES] == pytest.approx([1.0] * 3)


def test_zero_detections_score_zero_and_write_an_empty_file(tmp_path):
    evaluator = COCOEvaluator(
        thing_classes=NAMES, dataset_dicts=tiny_dataset_dicts(), output_dir=str(tmp_path)
    )
    evaluator.reset()
    for record in tiny_dataset_dicts():
        evaluator.process([{"image_id": record["image_id"]}], [make_output([], [], [])])
    bbox = evaluator.evaluate()["bbox"]
    # Every category has ground truth and nothing was found: AP 0, not an error or NaN.
    assert bbox["AP"] == 0.0 and bbox["AP50"] == 0.0
    assert json.loads((tmp_path / "coco_instances_results.json").read_text()) == []
    metrics = json.loads((tmp_path / "coco_metrics.json").read_text())
    assert metrics["bbox"]["AP50"] == 0.0 and metrics["unit"] == "fraction"


def test_needs_a_ground_truth_source_and_known_classes():
    with pytest.raises(ValueError, match="json_file .* or dataset_dicts"):
        COCOEvaluator(thing_classes=NAMES)
    evaluator = COCOEvaluator(thing_classes=NAMES, dataset_dicts=tiny_dataset_dicts())
    with pytest.raises(KeyError, match=r"predicted classes \[5\]"):
        evaluator.process([{"image_id": "a"}], [make_output([[0, 0, 5, 5]], [0.5], [5])])


def test_build_evaluator_for_a_registered_coco_json(tmp_path):
    data = pytest.importorskip("detkit.data")
    from detkit.config import get_cfg
    from detkit.evaluation import build_evaluator

    gt, detections = random_coco(seed=1, num_images=5)
    gt_file = tmp_path / "instances.json"
    gt_file.write_text(json.dumps(gt))
    name = "detkit_test_coco_evaluator_tiny"
    data.register_coco_instances(name, str(gt_file), str(tmp_path))
    try:
        evaluator = build_evaluator(get_cfg(), name)
        assert isinstance(evaluator, COCOEvaluator)
        # The id map came from the json, read through the COCO loader: detections given with
        # contiguous ids are scored against the original ids (all found -> AP50 1).
        evaluator.reset()
        for record in data.DatasetCatalog.get(name):
            anns = [a for a in record["annotations"] if not a["iscrowd"]]
            evaluator.process(
                [{"image_id": record["image_id"]}],
                [
                    make_output(
                        [a["bbox"] for a in anns],
                        [0.9] * len(anns),
                        [a["category_id"] for a in anns],
                    )
                ],
            )
        assert evaluator.evaluate()["bbox"]["AP50"] == pytest.approx(1.0)
    finally:
        data.DatasetCatalog.remove(name)
        data.MetadataCatalog.remove(name)
