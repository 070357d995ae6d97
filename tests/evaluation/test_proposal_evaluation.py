"""ProposalEvaluator: recall of the top N proposals against IoU and AR@N, on hand-built cases
(IoUs chosen to be exact in float64), against a plain loop implementation, and its files."""

import json
import logging
import math

import numpy as np
import pytest
import torch
from torch import nn

from detkit.evaluation import (
    COCO_IOU_THRESHOLDS,
    ProposalEvaluator,
    box_iou_numpy,
    inference_on_dataset,
    top_n_max_iou,
)
from detkit.structures import Boxes, Instances


def make_output(boxes, logits, legacy_plus_one=False):
    proposals = Instances((300, 300))
    proposals.proposal_boxes = Boxes(
        torch.as_tensor(np.asarray(boxes, dtype=np.float32)).reshape(-1, 4), legacy_plus_one
    )
    proposals.objectness_logits = torch.as_tensor(np.asarray(logits, dtype=np.float32)).reshape(-1)
    return {"proposals": proposals}


def ann(box, difficult=False, iscrowd=0):
    return {
        "bbox": [float(v) for v in box],
        "category_id": 0,
        "difficult": difficult,
        "iscrowd": iscrowd,
    }


def run(evaluator, outputs):
    evaluator.reset()
    for image_id, output in outputs.items():
        evaluator.process([{"image_id": image_id}], [output])
    return evaluator.evaluate()["proposals"]


def hand_dataset():
    """Image a: object A; image b: objects B1 (10x10) and B2 (20x20); image c: no object."""
    return [
        {"image_id": "a", "annotations": [ann([0, 0, 10, 10])]},
        {"image_id": "b", "annotations": [ann([0, 0, 10, 10]), ann([100, 100, 120, 120])]},
        {"image_id": "c", "annotations": []},
    ]


def hand_outputs():
    # IoU with the 10x10 box [0, 0, 10, 10] of [0, 0, 10, h] is 10h / 100 = h / 10, exact.
    # Image a, by objectness: [0,0,10,6] (IoU 0.6), [0,0,10,8] (0.8), [0,0,10,10] (1.0);
    # listed in another order to show that the ranking is by objectness.
    a = make_output([[0, 0, 10, 10], [0, 0, 10, 6], [0, 0, 10, 8]], [1.0, 3.0, 2.0])
    # Image b, by objectness: [100,100,120,115] (IoU 300/400 = 0.75 with B2, 0 with B1),
    # [0,0,10,7] (0.7 with B1), [0,0,5,10] (0.5 with B1).
    b = make_output([[0, 0, 5, 10], [100, 100, 120, 115], [0, 0, 10, 7]], [0.0, 5.0, 4.0])
    c = make_output([[0, 0, 50, 50]], [1.0])  # no ground truth: contributes nothing
    return {"a": a, "b": b, "c": c}


# Best IoU per object with the top N:  N=1: A 0.6, B1 0,   B2 0.75
#                                      N=2: A 0.8, B1 0.7, B2 0.75
#                                      N=3: A 1.0, B1 0.7, B2 0.75
# Recalled objects (of 3) at IoU 0.50 0.55 0.60 0.65 0.70 0.75 0.80 0.85 0.90 0.95:
HAND_RECALLED = {
    1: [2, 2, 2, 1, 1, 1, 0, 0, 0, 0],  # A up to 0.6, B2 up to 0.75: 9 of 30 -> AR 0.3
    2: [3, 3, 3, 3, 3, 2, 1, 0, 0, 0],  # A to 0.8, B1 to 0.7, B2 to 0.75: 18 / 30 -> AR 0.6
    3: [3, 3, 3, 3, 3, 2, 1, 1, 1, 1],  # A to 1.0: 21 / 30 -> AR 0.7
}


def test_hand_built_recall_at_every_n_and_threshold(tmp_path, caplog):
    evaluator = ProposalEvaluator(
        dataset_dicts=hand_dataset(), topk=(1, 2, 3), output_dir=str(tmp_path), dataset_name="hand"
    )
    with caplog.at_level(logging.INFO, logger="detkit"):
        metrics = run(evaluator, hand_outputs())
    assert [metrics["AR@1"], metrics["AR@2"], metrics["AR@3"]] == pytest.approx([0.3, 0.6, 0.7])
    # Neither 300 nor 1000 is in topk: the summary recall is at the largest N, 3.
    assert metrics["R@3@0.5"] == pytest.approx(1.0) and metrics["R@3@0.7"] == 1.0
    assert metrics["num_objects"] == 3
    assert metrics["mean_proposals_per_image"] == pytest.approx(7 / 3)  # 3 + 3 + 1 proposals
    report = json.loads((tmp_path / "proposal_metrics.json").read_text())
    for n, recalled in HAND_RECALLED.items():
        assert report["recall"]["all"][str(n)] == pytest.approx([r / 3 for r in recalled])
    assert report["unit"] == "fraction"
    # The fine curve at IoU 0.5, 0.525, ..., 1.0 for N=3: A (IoU 1.0) is recalled at all 21,
    # B1 (0.7) at 0.5..0.7 (9 points), B2 (0.75) at 0.5..0.75 (11 points).
    expected_fine = [
        (1 + (t <= 0.7) + (t <= 0.75)) / 3 for t in np.round(0.5 + 0.025 * np.arange(21), 3)
    ]
    assert report["recall_fine"]["3"] == pytest.approx(expected_fine)
    assert "no one-to-one" in caplog.text and "| 0.300 |" in caplog.text
    assert "fractions in [0, 1]" in caplog.text


def test_one_proposal_recalls_every_object_it_covers():
    # Two objects (IoU 0.9 with each other) and one proposal: IoU 1.0 and 0.9. Without
    # one-to-one assignment both are recalled at IoU 0.5 -> 1 (greedy matching gives 0.5).
    dataset = [{"image_id": 1, "annotations": [ann([0, 0, 10, 10]), ann([0, 0, 10, 9])]}]
    evaluator = ProposalEvaluator(dataset_dicts=dataset, topk=(300,))
    metrics = run(evaluator, {1: make_output([[0, 0, 10, 10]], [0.0])})
    assert metrics["R@300@0.5"] == pytest.approx(1.0)
    # AR: object 1 at all 10 thresholds, object 2 up to 0.9 (9 of them): 19 / 20 -> 0.95.
    assert metrics["AR@300"] == pytest.approx(0.95)


def test_ranking_is_by_objectness_not_by_list_order():
    rng = np.random.default_rng(0)
    dataset = hand_dataset()
    reference = run(ProposalEvaluator(dataset_dicts=dataset, topk=(1, 2, 3)), hand_outputs())
    shuffled = {}
    for image_id, output in hand_outputs().items():
        proposals = output["proposals"]
        order = torch.as_tensor(rng.permutation(len(proposals)))
        shuffled[image_id] = make_output(
            proposals.proposal_boxes.tensor[order], proposals.objectness_logits[order]
        )
    again = run(ProposalEvaluator(dataset_dicts=dataset, topk=(1, 2, 3)), shuffled)
    assert again == pytest.approx(reference, nan_ok=True)
    # Ranked by list order instead (objectness made decreasing along the list), the top-1 of
    # image a would be [0,0,10,10] (A recalled at all 10 thresholds) and that of image b
    # [0,0,5,10] (B1 at 0.5 only, B2 missed): AR@1 = (10 + 1 + 0) / 30, not 9 / 30.
    listed = {}
    for image_id, output in hand_outputs().items():
        boxes = output["proposals"].proposal_boxes.tensor
        listed[image_id] = make_output(boxes, -np.arange(len(boxes), dtype=np.float32))
    by_list = run(ProposalEvaluator(dataset_dicts=dataset, topk=(1, 2, 3)), listed)
    assert by_list["AR@1"] == pytest.approx(11 / 30)
    assert reference["AR@1"] == pytest.approx(0.3)


def test_ties_keep_the_model_order():
    # 50 far-away proposals with objectness 1, then 50 with objectness 2: the first of these
    # has IoU 0.6, the 49 after it 1.0. Ties keep the model's order, so the top-1 is the IoU
    # 0.6 proposal: recalled at 0.5, 0.55, 0.6 -> AR@1 = 0.3 (an unstable sort gives 1).
    dataset = [{"image_id": 0, "annotations": [ann([0, 0, 10, 10])]}]
    boxes = [[200, 200, 210, 210]] * 50 + [[0, 0, 10, 6]] + [[0, 0, 10, 10]] * 49
    evaluator = ProposalEvaluator(dataset_dicts=dataset, topk=(1,))
    metrics = run(evaluator, {0: make_output(boxes, [1.0] * 50 + [2.0] * 50)})
    assert metrics["AR@1"] == pytest.approx(0.3)


def test_difficult_and_crowd_objects_are_not_counted_and_unrun_images_are_missed(caplog):
    dataset = [
        {
            "image_id": 0,
            "annotations": [
                ann([0, 0, 10, 10]),
                ann([50, 50, 60, 60], True),
                ann([100, 100, 110, 110], iscrowd=1),
            ],
        },
        {"image_id": 1, "annotations": [ann([0, 0, 10, 10])]},  # never run
    ]
    evaluator = ProposalEvaluator(dataset_dicts=dataset, topk=(300,))
    # Exact boxes on the difficult and the crowd objects only: they do not count, so the only
    # counted object of image 0 is missed, and so is image 1's (not run): recall 0 of 2.
    outputs = {0: make_output([[50, 50, 60, 60], [100, 100, 110, 110]], [2.0, 1.0])}
    with caplog.at_level(logging.WARNING, logger="detkit"):
        metrics = run(evaluator, outputs)
    assert metrics["num_objects"] == 2
    assert metrics["AR@300"] == 0.0 and metrics["R@300@0.5"] == 0.0
    assert "1 of 2 images" in caplog.text
    # An exact box on image 0's normal object: 1 recalled of 2 counted -> 0.5 at every IoU.
    outputs = {0: make_output([[0, 0, 10, 10], [50, 50, 60, 60]], [2.0, 1.0])}
    metrics = run(evaluator, outputs)
    assert metrics["AR@300"] == pytest.approx(0.5) and metrics["R@300@0.7"] == 0.5


@pytest.mark.parametrize("legacy_plus_one, r07, ar", [(True, 1.0, 0.5), (False, 0.0, 0.1)])
def test_legacy_plus_one_widths(legacy_plus_one, r07, ar):
    # gt [0,0,10,10] (continuous) and the proposal [0,0,9,6].
    # legacy: gt becomes [0,0,9,9], 10x10 pixels; the proposal is 10x7 pixels inside it:
    #   IoU = 70 / 100 = 0.7 -> recalled at 0.5 ... 0.7 (5 thresholds): R@0.7 1, AR 0.5.
    # continuous: proposal 9x6 = 54 inside gt 10x10: IoU 0.54 -> only at 0.5: R@0.7 0, AR 0.1.
    dataset = [{"image_id": 0, "annotations": [ann([0, 0, 10, 10])]}]
    evaluator = ProposalEvaluator(dataset_dicts=dataset, legacy_plus_one=legacy_plus_one)
    metrics = run(evaluator, {0: make_output([[0, 0, 9, 6]], [0.0], legacy_plus_one)})
    assert metrics["R@300@0.5"] == 1.0
    assert metrics["R@300@0.7"] == r07
    assert metrics["AR@300"] == pytest.approx(ar)


def test_a_width_convention_mismatch_is_warned_once(caplog):
    dataset = [{"image_id": 0, "annotations": [ann([0, 0, 10, 10])]}]
    evaluator = ProposalEvaluator(dataset_dicts=dataset, legacy_plus_one=True)
    with caplog.at_level(logging.WARNING, logger="detkit"):
        for _ in range(2):
            evaluator.process([{"image_id": 0}], [make_output([[0, 0, 9, 9]], [0.0])])
    assert caplog.text.count("Proposal boxes have legacy_plus_one=False") == 1


@pytest.mark.parametrize("legacy_plus_one", [False, True])
def test_size_buckets(tmp_path, legacy_plus_one):
    # Areas 20^2 = 400 (small), 50^2 = 2500 (medium), 120^2 = 14400 (large), 32^2 = 1024
    # (medium: the bounds are [0, 32^2), [32^2, 96^2), [96^2, inf)). Under legacy_plus_one the
    # pixel-index box of a w x h object still covers w x h pixels: same buckets.
    boxes = [[0, 0, 20, 20], [100, 0, 150, 50], [0, 100, 120, 220], [200, 200, 232, 232]]
    dataset = [{"image_id": 0, "annotations": [ann(b) for b in boxes]}]
    evaluator = ProposalEvaluator(
        dataset_dicts=dataset, topk=(10,), output_dir=str(tmp_path), legacy_plus_one=legacy_plus_one
    )
    # An exact proposal on the medium 50x50 object only.
    shift = 1.0 if legacy_plus_one else 0.0
    output = make_output([[100, 0, 150 - shift, 50 - shift]], [0.0], legacy_plus_one)
    metrics = run(evaluator, {0: output})
    assert metrics["AR@10-small"] == 0.0
    assert metrics["AR@10-medium"] == pytest.approx(0.5)  # 1 of the 2 medium objects
    assert metrics["AR@10-large"] == 0.0
    assert metrics["AR@10"] == pytest.approx(0.25)
    report = json.loads((tmp_path / "proposal_metrics.json").read_text())
    assert report["num_objects"] == {"all": 4, "small": 1, "medium": 2, "large": 1}


def test_a_size_without_objects_is_nan(caplog):
    dataset = [{"image_id": 0, "annotations": [ann([0, 0, 20, 20])]}]
    evaluator = ProposalEvaluator(dataset_dicts=dataset, topk=(10,))
    with caplog.at_level(logging.INFO, logger="detkit"):
        metrics = run(evaluator, {0: make_output([[0, 0, 20, 20]], [0.0])})
    assert metrics["AR@10-small"] == pytest.approx(1.0)
    assert math.isnan(metrics["AR@10-medium"]) and math.isnan(metrics["AR@10-large"])
    assert "medium (0)" in caplog.text and "nan: no object of that size" in caplog.text


def test_files_hold_the_returned_numbers_and_the_pictures(tmp_path):
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(3)
    dataset, outputs = random_case(rng, num_images=6)
    evaluator = ProposalEvaluator(
        dataset_dicts=dataset,
        topk=(50, 100, 300, 1000, 2000),
        output_dir=str(tmp_path),
        dataset_name="random",
    )
    metrics = run(evaluator, outputs)
    report = json.loads((tmp_path / "proposal_metrics.json").read_text())
    assert set(report["proposals"]) == set(metrics)
    for name, value in metrics.items():
        if math.isnan(value):
            assert report["proposals"][name] is None  # strict JSON: NaN written as null
        else:
            assert report["proposals"][name] == pytest.approx(value)
    assert report["average_recall"]["all"]["1000"] == pytest.approx(metrics["AR@1000"])
    assert report["recall_at_0.7"]["all"]["300"] == pytest.approx(metrics["R@300@0.7"])
    assert report["iou_thresholds"] == pytest.approx(list(COCO_IOU_THRESHOLDS))
    assert len(report["fine_iou_thresholds"]) == 21 and report["fine_iou_thresholds"][-1] == 1.0
    for name in ("recall_vs_iou.png", "recall_vs_proposals.png"):
        image = cv2.imread(str(tmp_path / name))
        assert image is not None and image.shape[0] > 100 and image.shape[1] > 100


def test_a_detectors_outputs_are_refused_with_a_clear_message():
    dataset = [{"image_id": "img7", "annotations": [ann([0, 0, 10, 10])]}]
    evaluator = ProposalEvaluator(dataset_dicts=dataset)
    instances = Instances((300, 300))
    instances.pred_boxes = Boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0]]))
    with pytest.raises(KeyError, match=r"'img7'.*\['instances'\].*for proposal models"):
        evaluator.process([{"image_id": "img7"}], [{"instances": instances}])
    with pytest.raises(KeyError, match="'other', which is not in dataset"):
        evaluator.process([{"image_id": "other"}], [make_output([[0, 0, 1, 1]], [0.0])])


def test_top_n_max_iou_handles_fewer_proposals_than_n_and_none():
    gt = np.array([[0, 0, 10, 10], [0, 0, 10, 10]], dtype=np.float64)
    proposals = np.array([[0, 0, 10, 5], [0, 0, 10, 9]], dtype=np.float64)
    # IoUs 0.5 then 0.9: top-1 best 0.5; top-2 and top-5 (only 2 exist) best 0.9.
    assert top_n_max_iou(gt, proposals, (1, 2, 5), False) == pytest.approx(
        np.array([[0.5, 0.9, 0.9]] * 2)
    )
    assert top_n_max_iou(gt, np.zeros((0, 4)), (1, 2), False).tolist() == [[0, 0], [0, 0]]


def test_top_n_max_iou_in_chunks_of_objects_equals_one_block(monkeypatch):
    from detkit.evaluation import proposal_evaluation

    rng = np.random.default_rng(5)

    def random_boxes(n):
        xy = rng.uniform(0, 60, size=(n, 2))
        return np.concatenate([xy, xy + rng.uniform(5, 40, size=(n, 2))], axis=1)

    gt, proposals = random_boxes(7), random_boxes(40)
    whole = top_n_max_iou(gt, proposals, (1, 10, 40), False)
    # Direct: the best IoU among the first N proposals, per object.
    iou = box_iou_numpy(gt, proposals, False)
    assert whole == pytest.approx(np.stack([iou[:, :n].max(axis=1) for n in (1, 10, 40)], 1))
    monkeypatch.setattr(proposal_evaluation, "_MAX_IOU_ELEMENTS", 3 * 40)  # 3 objects a chunk
    assert top_n_max_iou(gt, proposals, (1, 10, 40), False) == pytest.approx(whole)


def random_case(rng, num_images=20, max_objects=6, max_proposals=60, legacy_plus_one=False):
    """Integer boxes of 2..120 px in a 200x200 image (so IoUs come out alike in both
    implementations and every size occurs), some difficult objects, a few images without
    proposals or objects, distinct logits."""

    def random_boxes(n):
        wh = rng.integers(2, 120, size=(n, 2))
        xy = rng.integers(0, 200 - wh)
        return np.concatenate([xy, xy + wh], axis=1).astype(np.float64)

    dataset, outputs = [], {}
    for i in range(num_images):
        gt = random_boxes(int(rng.integers(0, max_objects + 1)))
        difficult = rng.random(len(gt)) < 0.2
        dataset.append(
            {"image_id": 10 + i, "annotations": [ann(b, bool(d)) for b, d in zip(gt, difficult)]}
        )
        if i % 7 == 3:
            continue  # not run on
        # Half of the proposals are jittered ground truths, so that many objects are found.
        proposals = random_boxes(int(rng.integers(0, max_proposals + 1)))
        if len(gt):
            near = gt[rng.integers(0, len(gt), size=len(proposals) // 2)]
            proposals[: len(near)] = near + rng.integers(-8, 9, size=near.shape)
        logits = rng.permutation(len(proposals)).astype(np.float32) / 7 - 3
        outputs[10 + i] = make_output(proposals, logits, legacy_plus_one)
    return dataset, outputs


def plain_recall(dataset, outputs, topk, thresholds, legacy_plus_one=False, size=None):
    """Recall [len(topk), len(thresholds)] in percent, with loops, from the definition; only
    objects of ``size`` ("small": area < 1024, "medium": < 9216, "large") when given."""
    one = 1.0 if legacy_plus_one else 0.0

    def iou(a, b):
        iw = max(min(a[2], b[2]) - max(a[0], b[0]) + one, 0.0)
        ih = max(min(a[3], b[3]) - max(a[1], b[1]) + one, 0.0)
        inter = iw * ih
        area_a = (a[2] - a[0] + one) * (a[3] - a[1] + one)
        union = area_a + (b[2] - b[0] + one) * (b[3] - b[1] + one) - inter
        return inter / union

    def size_of(box):
        area = (box[2] - box[0]) * (box[3] - box[1])
        return "small" if area < 32 * 32 else "medium" if area < 96 * 96 else "large"

    recalled = np.zeros((len(topk), len(thresholds)))
    num_objects = 0
    for record in dataset:
        objects = [
            a["bbox"]
            for a in record["annotations"]
            if not a["difficult"] and size in (None, size_of(a["bbox"]))
        ]
        if legacy_plus_one:  # pixel-index ground truth, as the model's boxes
            objects = [[x1, y1, x2 - 1, y2 - 1] for x1, y1, x2, y2 in objects]
        num_objects += len(objects)
        if record["image_id"] not in outputs:
            continue
        proposals = outputs[record["image_id"]]["proposals"]
        boxes = proposals.proposal_boxes.tensor.tolist()
        logits = proposals.objectness_logits.tolist()
        ranked = [boxes[j] for j in sorted(range(len(boxes)), key=lambda j: -logits[j])]
        for obj in objects:
            for k, n in enumerate(topk):
                best = max([iou(obj, p) for p in ranked[:n]], default=0.0)
                for t_index, t in enumerate(thresholds):
                    recalled[k, t_index] += best >= t
    return recalled / num_objects, num_objects


@pytest.mark.parametrize("legacy_plus_one", [False, True])
def test_agrees_with_a_plain_implementation(tmp_path, legacy_plus_one):
    rng = np.random.default_rng(2024)
    dataset, outputs = random_case(rng, legacy_plus_one=legacy_plus_one)
    topk = (1, 5, 20, 50)
    evaluator = ProposalEvaluator(
        dataset_dicts=dataset, topk=topk, output_dir=str(tmp_path), legacy_plus_one=legacy_plus_one
    )
    metrics = run(evaluator, outputs)
    expected, num_objects = plain_recall(
        dataset, outputs, topk, COCO_IOU_THRESHOLDS, legacy_plus_one
    )
    assert metrics["num_objects"] == num_objects > 30
    assert 0 < expected.mean() < 1  # a case with both recalled and missed objects
    report = json.loads((tmp_path / "proposal_metrics.json").read_text())
    for k, n in enumerate(topk):
        assert report["recall"]["all"][str(n)] == pytest.approx(expected[k].tolist())
        assert metrics[f"AR@{n}"] == pytest.approx(expected[k].mean())
    fine, _ = plain_recall(dataset, outputs, topk, report["fine_iou_thresholds"], legacy_plus_one)
    for k, n in enumerate(topk):
        assert report["recall_fine"][str(n)] == pytest.approx(fine[k].tolist())
    for size in ("small", "medium", "large"):
        by_size, count = plain_recall(
            dataset, outputs, topk, COCO_IOU_THRESHOLDS, legacy_plus_one, size
        )
        assert report["num_objects"][size] == count > 3
        for k, n in enumerate(topk):
            assert metrics[f"AR@{n}-{size}"] == pytest.approx(by_size[k].mean())


def test_from_config_and_inference_on_dataset(tmp_path):
    data = pytest.importorskip("detkit.data")
    from detkit.config import get_cfg

    name = "detkit_test_proposal_evaluator_hand"
    data.DatasetCatalog.register(name, hand_dataset)
    try:
        cfg = get_cfg()
        cfg.TEST.PROPOSAL_TOPK = [3, 1, 2]
        cfg.MODEL.LEGACY_PLUS_ONE = True
        arguments = ProposalEvaluator.from_config(cfg, name, str(tmp_path))
        assert arguments["topk"] == [3, 1, 2] and arguments["legacy_plus_one"] is True
        assert arguments["dataset_dicts"] == hand_dataset()
        assert arguments["output_dir"] == str(tmp_path) and arguments["dataset_name"] == name
        evaluator = ProposalEvaluator(**{**arguments, "legacy_plus_one": False})
        assert evaluator.topk == (1, 2, 3)
    finally:
        data.DatasetCatalog.remove(name)

    class ReplayModel(nn.Module):
        def forward(self, batch):
            return [hand_outputs()[inp["image_id"]] for inp in batch]

    loader = [[{"image_id": "a"}, {"image_id": "b"}], [{"image_id": "c"}]]
    results = inference_on_dataset(ReplayModel(), loader, evaluator)
    assert results["proposals"]["AR@1"] == pytest.approx(0.3)
    assert results["evaluators"] == {"proposals": {"name": "proposals"}}
    assert (tmp_path / "recall_vs_iou.png").exists()


def test_bad_topk_is_refused():
    with pytest.raises(ValueError, match="positive proposal counts"):
        ProposalEvaluator(dataset_dicts=[], topk=[0, 100])
