"""ROI heads: proposal sampling (fractions, thresholds, appended ground truth), losses and
inference (score threshold, per-class NMS, top-k)."""

import math

import pytest
import torch

from detkit.config import get_cfg
from detkit.layers import ShapeSpec
from detkit.modeling.roi_heads import build_roi_heads
from detkit.modeling.roi_heads.fast_rcnn import (
    fast_rcnn_classification_statistics,
    fast_rcnn_inference_single_image,
)
from detkit.structures import Boxes, ImageList, Instances, pairwise_iou
from detkit.utils.events import EventStorage


def small_roi_heads(**cfg_overrides):
    cfg = get_cfg()
    cfg.MODEL.ROI_HEADS.IN_FEATURES = ["f"]
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 2
    cfg.MODEL.ROI_BOX_HEAD.NAME = "ConvFCHead"
    cfg.MODEL.ROI_BOX_HEAD.NUM_CONV = 0
    cfg.MODEL.ROI_BOX_HEAD.NUM_FC = 1
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 16
    cfg.MODEL.ROI_BOX_HEAD.DROPOUT = 0.0
    cfg.merge_from_list([x for kv in cfg_overrides.items() for x in kv])
    return build_roi_heads(cfg, input_shape={"f": ShapeSpec(channels=8, stride=16)})


def random_proposals(n, size=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * (size - 40)
    wh = torch.rand(n, 2, generator=g) * 60 + 8
    return Boxes(torch.cat([xy, xy + wh], dim=1))


def test_sampling_fractions_and_thresholds():
    torch.manual_seed(0)
    heads = small_roi_heads()
    gt_boxes = torch.tensor([[20.0, 20.0, 80.0, 90.0], [120.0, 100.0, 200.0, 160.0]])
    gt = Instances((256, 256), gt_boxes=Boxes(gt_boxes), gt_classes=torch.tensor([0, 1]))
    # Many near-copies of the gt boxes (foreground) plus random boxes (mostly background).
    jitter = torch.randn(200, 4) * 3
    near = gt_boxes.repeat(100, 1) + jitter
    props = Boxes.cat([Boxes(near), random_proposals(400)])
    proposals = [Instances((256, 256), proposal_boxes=props)]
    maps = [torch.randn(1, 8, 16, 16)]
    sampled = heads.label_and_sample_proposals(maps, proposals, [gt])[0]
    assert len(sampled) == 128  # MODEL.ROI_HEADS.SAMPLER.BATCH_SIZE_PER_IMAGE
    fg = sampled.gt_classes < 2
    assert int(fg.sum()) == 32  # 25% of 128: there are more than 32 foreground candidates
    iou = pairwise_iou(sampled.proposal_boxes, Boxes(gt_boxes)).max(dim=1).values
    assert torch.all(iou[fg] >= 0.5)
    # Background: IoU in [0.0, 0.5), the rest of the 128, labelled K = 2.
    assert torch.all(iou[~fg] < 0.5) and int((~fg).sum()) == 96
    assert torch.all(sampled.gt_classes[~fg] == 2)
    # Each foreground RoI carries the class and box of the gt it overlaps most.
    best = pairwise_iou(sampled.proposal_boxes, Boxes(gt_boxes)).argmax(dim=1)
    assert torch.equal(sampled.gt_classes[fg], torch.tensor([0, 1])[best[fg]])
    assert torch.equal(sampled.gt_boxes.tensor[fg], gt_boxes[best[fg]])


def test_ground_truth_is_appended_and_background_lower_bound():
    heads = small_roi_heads(**{"MODEL.ROI_HEADS.MATCHER.IOU_THRESHOLDS": [0.1, 0.5]})
    gt = Instances(
        (256, 256),
        gt_boxes=Boxes(torch.tensor([[10.0, 10.0, 50.0, 50.0]])),
        gt_classes=torch.tensor([1]),
    )
    # One far-away proposal (IoU 0: below the 0.1 lower bound -> ignored), one background.
    props = Boxes(torch.tensor([[200.0, 200.0, 240.0, 240.0], [30.0, 10.0, 70.0, 50.0]]))
    sampled = heads.label_and_sample_proposals(
        [torch.zeros(1, 8, 16, 16)], [Instances((256, 256), proposal_boxes=props)], [gt]
    )[0]
    boxes = sampled.proposal_boxes.tensor.tolist()
    assert [10.0, 10.0, 50.0, 50.0] in boxes  # the gt box itself, foreground
    assert [30.0, 10.0, 70.0, 50.0] in boxes  # IoU 1/3: background
    assert [200.0, 200.0, 240.0, 240.0] not in boxes  # IoU 0 < 0.1: ignored
    assert sorted(sampled.gt_classes.tolist()) == [1, 2]


def test_image_without_ground_truth_trains_on_background_only():
    heads = small_roi_heads()
    heads.train()
    with torch.no_grad():  # uniform scores over the 3 classes: cross-entropy log 3 per RoI
        for p in heads.box_predictor.parameters():
            p.zero_()
    gt = Instances(
        (256, 256), gt_boxes=Boxes(torch.zeros(0, 4)), gt_classes=torch.zeros(0, dtype=torch.long)
    )
    proposals = [Instances((256, 256), proposal_boxes=random_proposals(50))]
    images = ImageList(torch.zeros(1, 3, 256, 256), [(256, 256)])
    _, losses = heads(images, {"f": torch.randn(1, 8, 16, 16)}, proposals, [gt])
    assert losses["loss_box_reg"].item() == 0.0
    assert losses["loss_cls"].item() == pytest.approx(math.log(3))


def test_losses_by_hand():
    heads = small_roi_heads()
    predictor = heads.box_predictor
    scores = torch.zeros(2, 3)  # uniform over 3 classes -> CE log 3 each
    deltas = torch.zeros(2, 12)
    gt_classes = torch.tensor([1, 2])  # one foreground (class 1), one background
    targets = torch.tensor([[0.5, 0.0, 0.0, 2.0], [9.0, 9.0, 9.0, 9.0]])
    losses = predictor.losses(scores, deltas, gt_classes, targets, smooth_l1_beta=1.0)
    assert losses["loss_cls"].item() == pytest.approx(math.log(3))
    # Smooth L1 (beta 1): 0.5 * 0.5^2 + (2 - 0.5) = 1.625 on the foreground RoI; / 2 RoIs.
    assert losses["loss_box_reg"].item() == pytest.approx(1.625 / 2)


def test_inference_threshold_nms_and_topk():
    heads = small_roi_heads(**{"MODEL.ROI_HEADS.DETECTIONS_PER_IMAGE": 5})
    heads.eval()
    with torch.no_grad():
        for p in heads.box_predictor.parameters():
            p.zero_()
        heads.box_predictor.cls_score.bias.copy_(torch.tensor([0.0, 3.0, 0.0]))
    props = Boxes(
        torch.tensor([[0.0, 0.0, 20.0, 20.0], [1.0, 1.0, 21.0, 21.0], [40.0, 40.0, 60.0, 60.0]])
    )
    proposals = [Instances((64, 64), proposal_boxes=props)]
    images = ImageList(torch.zeros(1, 3, 64, 64), [(64, 64)])
    det, losses = heads(images, {"f": torch.randn(1, 8, 4, 4)}, proposals)
    det = det[0]
    assert losses == {}
    # Class 1 probability e^3 / (e^3 + 2) = 0.909; class 0: 1 / (e^3 + 2) = 0.045 < 0.05.
    assert det.pred_classes.tolist() == [1, 1]
    assert det.scores.tolist() == pytest.approx([math.exp(3) / (math.exp(3) + 2)] * 2)
    # The first two proposals overlap with IoU 0.82 > 0.3: NMS keeps one of them.
    kept = det.pred_boxes.tensor.tolist()
    assert [40.0, 40.0, 60.0, 60.0] in kept
    assert ([0.0, 0.0, 20.0, 20.0] in kept) != ([1.0, 1.0, 21.0, 21.0] in kept)


def test_class_specific_deltas_each_move_their_own_class_box():
    # Three classes + background; deltas of class c in columns 4c .. 4c + 3 (weights 10, 10,
    # 5, 5). RoI 0 [0, 0, 10, 10]: class 0 dx = 1 (1 px right), class 1 dy = 2 (2 px
    # down), class 2 dw = 5 ln 2 (twice as wide around x = 5, clipped at 0); RoI 1
    # [50, 50, 70, 70]: only class 2 moves, dx = -1 (2 px left). The background slot holds
    # a large delta that must not be used.
    heads = small_roi_heads(**{"MODEL.ROI_HEADS.NUM_CLASSES": 3})
    heads.eval()
    deltas = torch.zeros(2, 16)
    deltas[0, 0], deltas[0, 5], deltas[0, 10] = 1.0, 2.0, 5 * math.log(2)
    deltas[1, 8] = -1.0
    deltas[:, 12:] = 7.0  # background
    probs = torch.tensor([[0.3, 0.25, 0.2, 0.25], [0.15, 0.1, 0.5, 0.25]])
    props = Boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 70.0, 70.0]]))
    det = heads.inference(probs.log(), deltas, [Instances((100, 100), proposal_boxes=props)])[0]
    expected = {
        (0.3, 0): [1.0, 0.0, 11.0, 10.0],
        (0.25, 1): [0.0, 2.0, 10.0, 12.0],
        (0.2, 2): [0.0, 0.0, 15.0, 10.0],
        (0.15, 0): [50.0, 50.0, 70.0, 70.0],
        (0.1, 1): [50.0, 50.0, 70.0, 70.0],
        (0.5, 2): [48.0, 50.0, 68.0, 70.0],
    }
    got = {
        (round(float(s), 4), int(c)): b
        for s, c, b in zip(det.scores, det.pred_classes, det.pred_boxes.tensor.tolist())
    }
    assert set(got) == set(expected)
    for key, box in expected.items():
        assert got[key] == pytest.approx(box, abs=1e-5), key


def test_nms_is_per_class():
    # Boxes A [0, 0, 30, 30] and B [3, 0, 33, 30] overlap with IoU 810 / 990 = 0.82 > 0.3.
    boxes = torch.tensor([[0.0, 0.0, 30.0, 30.0], [3.0, 0.0, 33.0, 30.0]])
    per_class = boxes[:, None, :].expand(2, 2, 4)  # [R, K, 4]: the same box for both classes
    kwargs = dict(score_thresh=0.05, nms_thresh=0.3, topk_per_image=100)
    # A as class 0 and B as class 1: different classes, both kept.
    out = fast_rcnn_inference_single_image(
        per_class, torch.tensor([[0.9, 0.0], [0.0, 0.8]]), (64, 64), **kwargs
    )
    assert out.pred_classes.tolist() == [0, 1]
    assert out.pred_boxes.tensor.tolist() == boxes.tolist()
    # Both class 0: B is suppressed by the better A.
    out = fast_rcnn_inference_single_image(
        per_class, torch.tensor([[0.9, 0.0], [0.8, 0.0]]), (64, 64), **kwargs
    )
    assert out.pred_classes.tolist() == [0] and out.scores.tolist() == pytest.approx([0.9])
    # A scores both classes, B only class 1 (below A's class-1 score): B suppressed in class
    # 1 by A, while A's class-0 detection stays.
    out = fast_rcnn_inference_single_image(
        per_class, torch.tensor([[0.9, 0.7], [0.0, 0.6]]), (64, 64), **kwargs
    )
    assert out.pred_classes.tolist() == [0, 1]
    assert out.pred_boxes.tensor.tolist() == [boxes[0].tolist()] * 2
    assert out.scores.tolist() == pytest.approx([0.9, 0.7])


def test_classification_statistics_by_hand():
    # K = 2 (background is class 2). Labels and argmax of the scores:
    #   gt   0  1  2  2  0
    #   pred 0  2  2  1  2
    # Correct: RoIs 0 and 2 (2 of 5). Foreground RoIs 0, 1, 4: one correct (RoI 0), two
    # predicted background (RoIs 1 and 4).
    gt_classes = torch.tensor([0, 1, 2, 2, 0])
    scores = torch.nn.functional.one_hot(torch.tensor([0, 2, 2, 1, 2]), 3).float()
    stats = fast_rcnn_classification_statistics(scores, gt_classes, num_classes=2)
    assert stats == pytest.approx(
        {
            "fast_rcnn/cls_accuracy": 2 / 5,
            "fast_rcnn/fg_cls_accuracy": 1 / 3,
            "fast_rcnn/false_negative": 2 / 3,
        }
    )
    # Background only: no foreground ratios (they would divide by zero).
    only_bg = fast_rcnn_classification_statistics(scores[2:4], gt_classes[2:4], num_classes=2)
    assert only_bg == {"fast_rcnn/cls_accuracy": 0.5}


def test_training_statistics_are_recorded_only_in_a_storage_and_leave_the_losses():
    torch.manual_seed(0)
    heads = small_roi_heads()
    heads.train()
    with torch.no_grad():  # every RoI predicted background (class 2)
        for p in heads.box_predictor.parameters():
            p.zero_()
        heads.box_predictor.cls_score.bias[2] = 1.0
    gt_boxes = torch.tensor([[20.0, 20.0, 80.0, 90.0], [120.0, 100.0, 200.0, 160.0]])
    targets = [
        Instances((256, 256), gt_boxes=Boxes(gt_boxes), gt_classes=torch.tensor([0, 1])),
        Instances(
            (256, 256),
            gt_boxes=Boxes(torch.zeros(0, 4)),
            gt_classes=torch.zeros(0, dtype=torch.long),
        ),
    ]
    near = Boxes(gt_boxes.repeat(100, 1) + torch.randn(200, 4) * 3)
    proposals = [
        Instances((256, 256), proposal_boxes=Boxes.cat([near, random_proposals(400)])),
        Instances((256, 256), proposal_boxes=random_proposals(50, seed=1)),
    ]
    images = ImageList(torch.zeros(2, 3, 256, 256), [(256, 256), (256, 256)])
    features = {"f": torch.randn(2, 8, 16, 16)}

    def run():  # the same sampling each time
        torch.manual_seed(1)
        if getattr(heads.sampler, "generator", None) is not None:
            heads.sampler.generator.manual_seed(1)
        return heads(images, features, proposals, targets)[1]

    without_storage = run()  # no trainer: nothing recorded, nothing raised
    with EventStorage() as storage:
        with_storage = run()
    for name, value in without_storage.items():
        assert torch.equal(value, with_storage[name]), name
    recorded = {name: value for name, (value, _) in storage.latest().items()}
    # Image 1: 32 foreground and 96 background of 128; image 2 (no object): its 50
    # proposals, all background. Per image: (32 + 0) / 2 and (96 + 50) / 2.
    assert recorded["roi_head/num_fg_samples"] == 16.0
    assert recorded["roi_head/num_bg_samples"] == 73.0
    # Everything predicted background: right on the 146 background RoIs of 178.
    assert recorded["fast_rcnn/cls_accuracy"] == pytest.approx(146 / 178)
    assert recorded["fast_rcnn/fg_cls_accuracy"] == 0.0
    assert recorded["fast_rcnn/false_negative"] == 1.0
    # Inference records nothing.
    heads.eval()
    with EventStorage() as storage:
        heads(images, features, proposals)
    assert storage.latest() == {}
