"""Run summaries (summary.json and the one-line message) name their evaluator and headline
metric, from the results of the real evaluators on hand-built cases whose figures are
known: VOC (11-point and area), COCO and proposal recall; several datasets; an evaluator
without a name."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from detkit.engine.summary import summarize_results, summary_message, write_summary
from detkit.evaluation import (
    COCOEvaluator,
    DatasetEvaluator,
    PascalVOCDetectionEvaluator,
    ProposalEvaluator,
    inference_on_dataset,
)
from detkit.structures import Boxes, Instances

CLASSES = ["circle", "square", "triangle"]
# One object of each class; the detections below are these boxes shrunk to 0.9 of their
# width and height from the top-left corner: IoU 0.81 with their object.
OBJECTS = [
    ([0.0, 0.0, 10.0, 10.0], 0),
    ([50.0, 50.0, 150.0, 150.0], 1),
    ([20.0, 30.0, 60.0, 90.0], 2),
]


def dataset() -> list[dict]:
    return [
        {
            "image_id": f"im{k}",
            "file_name": f"im{k}.jpg",
            "height": 200,
            "width": 200,
            "annotations": [{"bbox": box, "category_id": c, "difficult": False}],
        }
        for k, (box, c) in enumerate(OBJECTS)
    ]


def shrunk(box: list[float]) -> list[float]:
    x1, y1, x2, y2 = box
    return [x1, y1, x1 + 0.9 * (x2 - x1), y1 + 0.9 * (y2 - y1)]


class DetectionsModel(nn.Module):
    """Returns, for image k, the shrunk box of object k with its class."""

    def forward(self, batch: list[dict]) -> list[dict]:
        outputs = []
        for inp in batch:
            box, category = OBJECTS[int(inp["image_id"][2:])]
            instances = Instances((200, 200))
            instances.pred_boxes = Boxes(torch.tensor([shrunk(box)]))
            instances.scores = torch.tensor([0.9])
            instances.pred_classes = torch.tensor([category])
            outputs.append({"instances": instances})
        return outputs


def evaluate(evaluator: DatasetEvaluator, model: nn.Module | None = None) -> dict:
    loader = [[{"image_id": r["image_id"]}] for r in dataset()]
    return inference_on_dataset(model or DetectionsModel(), loader, evaluator)


def written(tmp_path, summary: dict) -> dict:
    """``summary`` as ``summary.json`` holds it."""
    return json.loads(open(write_summary(str(tmp_path), summary)).read())


# IoU 0.81: a true positive at the IoU thresholds 0.50 ... 0.80 (7 of 10), a false positive
# above: AP50 = AP75 = 1 and AP@[.5:.95] = 0.7, for VOC and COCO alike.


@pytest.mark.parametrize("use_07_metric, variant", [(True, "11-point"), (False, "area")])
def test_a_voc_summary_names_the_voc_metric(tmp_path, use_07_metric, variant):
    evaluator = PascalVOCDetectionEvaluator(
        dataset_dicts=dataset(), thing_classes=CLASSES, use_07_metric=use_07_metric
    )
    summary = written(tmp_path, summarize_results(evaluate(evaluator)))
    assert summary["evaluator"] == "voc" and summary["metric"] == "mAP@0.5"
    assert summary["voc_metric"] == variant and summary["unit"] == "fraction"
    assert summary["mAP@0.5"] == 1.0 and summary["AP@[.5:.95]"] == pytest.approx(0.7)
    message = summary_message(summary, ["tiny"])
    if use_07_metric:  # the area AP is reported beside the 11-point one
        assert summary["mAP@0.5_area"] == 1.0
        assert message == "VOC mAP@0.5 (11-point) on tiny: 1.000 (area 1.000, AP@[.5:.95] 0.700)"
    else:
        assert "mAP@0.5_area" not in summary
        assert message == "VOC mAP@0.5 (area) on tiny: 1.000 (AP@[.5:.95] 0.700)"


def test_a_coco_summary_headlines_ap_over_iou(tmp_path):
    evaluator = COCOEvaluator(thing_classes=CLASSES, dataset_dicts=dataset())
    summary = written(tmp_path, summarize_results(evaluate(evaluator)))
    assert summary["evaluator"] == "coco" and summary["metric"] == "AP@[.5:.95]"
    assert summary["unit"] == "fraction" and "voc_metric" not in summary
    assert summary["AP@[.5:.95]"] == pytest.approx(0.7)
    assert summary["mAP@0.5"] == 1.0 and summary["AP@0.75"] == 1.0  # mAP@0.5 is COCO's AP50
    assert summary_message(summary, ["tiny"]) == (
        "COCO AP@[.5:.95] on tiny: 0.700 (AP50 1.000, AP75 1.000)"
    )


class ProposalsModel(nn.Module):
    """One object per image; its proposals, best first: IoU 0.6 with it, then exact."""

    def forward(self, batch: list[dict]) -> list[dict]:
        outputs = []
        for inp in batch:
            x1, y1, x2, y2 = OBJECTS[int(inp["image_id"][2:])][0]
            boxes = [[x1, y1, x2, y1 + 0.6 * (y2 - y1)], [x1, y1, x2, y2]]
            outputs.append(
                {
                    "proposals": Instances(
                        (200, 200),
                        proposal_boxes=Boxes(torch.tensor(boxes)),
                        objectness_logits=torch.tensor([2.0, 1.0]),
                    )
                }
            )
        return outputs


def test_a_proposal_summary_headlines_the_largest_n(tmp_path):
    # Top 1 (IoU 0.6): recalled at 0.50, 0.55, 0.60 -> AR@1 = 0.3; top 2: exact -> AR@2 = 1.
    evaluator = ProposalEvaluator(dataset_dicts=dataset(), topk=(2, 1))
    summary = written(tmp_path, summarize_results(evaluate(evaluator, ProposalsModel())))
    assert summary["evaluator"] == "proposals" and summary["metric"] == "AR@2"
    assert summary["unit"] == "fraction"
    assert summary["AR@1"] == pytest.approx(0.3) and summary["AR@2"] == 1.0
    assert summary["R@2@0.5"] == 1.0 and summary["R@2@0.7"] == 1.0
    assert summary_message(summary, ["tiny"]) == "Proposal recall on tiny: AR@1 0.300, AR@2 1.000"


def test_the_headline_recall_is_the_largest_n_not_the_last_listed():
    results = {
        "proposals": {"AR@1000": 0.6, "AR@100": 0.5, "AR@1000-small": 0.1},
        "evaluators": {"proposals": {"name": "proposals"}},
    }
    summary = summarize_results(results)
    assert summary["metric"] == "AR@1000" and "AR@1000-small" not in summary
    assert summary_message(summary, ["x"]) == "Proposal recall on x: AR@1000 0.600, AR@100 0.500"


def test_several_datasets_take_the_first_datasets_evaluator():
    results = {
        "voc_test": {
            "bbox": {"AP50": 0.9, "AP": 0.6},
            "evaluators": {"bbox": {"name": "voc", "ap_metric": "area"}},
        },
        "coco_val": {
            "bbox": {"AP50": 0.5, "AP": 0.3, "AP75": 0.25},
            "evaluators": {"bbox": {"name": "coco"}},
        },
    }
    summary = summarize_results(results)
    assert summary["evaluator"] == "voc" and summary["metric"] == "mAP@0.5"
    assert summary["mAP@0.5"] == 0.9 and summary["coco_val/AP@[.5:.95]"] == 0.3
    assert summary["voc_test/mAP@0.5"] == 0.9 and summary["coco_val/AP@0.75"] == 0.25
    assert summary_message(summary, ["voc_test", "coco_val"]) == (
        "VOC mAP@0.5 (area) on voc_test, coco_val: 0.900 (AP@[.5:.95] 0.600)"
    )


def test_an_evaluator_without_a_name_and_no_results():
    # Detection figures of a custom evaluator: no evaluator name, mAP@0.5 as the headline.
    summary = summarize_results({"bbox": {"AP50": 0.75, "AP": 0.5}, "timing": {}})
    assert summary["evaluator"] is None and summary["metric"] == "mAP@0.5"
    assert summary["unit"] == "fraction"
    assert summary_message(summary, ["mine"]) == "mAP@0.5 on mine: 0.750 (AP@[.5:.95] 0.500)"
    assert summarize_results({"timing": {"num_images": 0}}) == {}
    assert summary_message({}, ["mine"]) == "No evaluation figures on mine"
