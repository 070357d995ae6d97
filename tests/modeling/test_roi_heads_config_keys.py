"""Every MODEL.ROI_HEADS key that changes a number, set to a non-default value through the
config (plus MODEL.LEGACY_PLUS_ONE where the ROI heads use it).

Each test builds the ROI heads with ``get_cfg()`` + ``merge_from_list`` and checks the
effect against detections, labels or losses worked out by hand; the default value always
gives a different answer. The predictor's weights are zero (uniform scores, zero deltas)
for the training tests, and inference tests feed chosen class probabilities
(``log(p)`` as scores, whose softmax is ``p``) and deltas to ``inference``.
"""

from __future__ import annotations

import math

import pytest
import torch

from detkit.config import get_cfg
from detkit.layers import ShapeSpec
from detkit.modeling.roi_heads import StandardROIHeads, build_roi_heads
from detkit.structures import Boxes, ImageList, Instances

SMALL_HEADS = [
    "MODEL.ROI_HEADS.IN_FEATURES", "['f']",
    "MODEL.ROI_HEADS.NUM_CLASSES", "2",
    "MODEL.ROI_BOX_HEAD.NAME", "ConvFCHead",
    "MODEL.ROI_BOX_HEAD.NUM_FC", "1",
    "MODEL.ROI_BOX_HEAD.FC_DIM", "8",
    "MODEL.ROI_BOX_HEAD.DROPOUT", "0.0",
]  # fmt: skip


def roi_heads(*opts: str) -> StandardROIHeads:
    """Two foreground classes (class 2 is background), predictor weights all zero."""
    cfg = get_cfg()
    cfg.merge_from_list([*SMALL_HEADS, *opts])
    heads = build_roi_heads(cfg, input_shape={"f": ShapeSpec(channels=4, stride=16)})
    with torch.no_grad():
        for p in heads.box_predictor.parameters():
            p.zero_()
    return heads


def detect(heads, boxes, probs, deltas=None, image_size=(200, 200)) -> Instances:
    """``inference`` on one image: RoIs ``boxes``, class probabilities ``probs [R, K + 1]``
    (background last), deltas ``[R, 4 (K + 1)]`` (zero by default)."""
    boxes = torch.tensor(boxes)
    scores = torch.tensor(probs).log()
    num_box_outputs = heads.box_predictor.bbox_pred.out_features
    deltas = torch.zeros(len(boxes), num_box_outputs) if deltas is None else torch.tensor(deltas)
    heads.eval()
    proposals = [Instances(image_size, proposal_boxes=Boxes(boxes))]
    return heads.inference(scores, deltas, proposals)[0]


def as_rows(det: Instances) -> list[tuple[int, list[float], float]]:
    """(class, box, score) of each detection, in output order (decreasing score)."""
    return [
        (int(c), [round(v, 4) for v in b], round(float(s), 4))
        for c, b, s in zip(det.pred_classes, det.pred_boxes.tensor.tolist(), det.scores)
    ]


# Five RoIs far apart (NMS never removes one); probabilities of (class 0, class 1, bg).
SEPARATE_BOXES = [[40.0 * i, 0.0, 40.0 * i + 10, 10.0] for i in range(5)]
SEPARATE_PROBS = [
    [0.80, 0.10, 0.10],
    [0.65, 0.30, 0.05],
    [0.72, 0.20, 0.08],
    [0.10, 0.75, 0.15],
    [0.69, 0.30, 0.01],
]


def expected_rows(threshold: float, topk: int) -> list[tuple[int, list[float], float]]:
    """Independent oracle: every (RoI, class) above the threshold, best first, top k."""
    rows = [
        (c, SEPARATE_BOXES[r], p)
        for r, row in enumerate(SEPARATE_PROBS)
        for c, p in enumerate(row[:2])
        if p > threshold
    ]
    return sorted(rows, key=lambda row: -row[2])[:topk]


def test_score_thresh_test():
    det = detect(
        roi_heads("MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.7"), SEPARATE_BOXES, SEPARATE_PROBS
    )
    # 0.80, 0.75 and 0.72 stay; 0.69 and 0.65 go (the default 0.05 keeps all ten scores).
    assert as_rows(det) == expected_rows(0.7, 100)
    assert [c for c, _, _ in as_rows(det)] == [0, 1, 0]
    assert len(detect(roi_heads(), SEPARATE_BOXES, SEPARATE_PROBS)) == 10


@pytest.mark.parametrize("threshold, expected_count", [("0.05", 3), ("0.74", 2)])
def test_detections_per_image_keeps_the_best_min_k_n(threshold, expected_count):
    heads = roi_heads(
        "MODEL.ROI_HEADS.DETECTIONS_PER_IMAGE", "3", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", threshold
    )
    rows = as_rows(detect(heads, SEPARATE_BOXES, SEPARATE_PROBS))
    # Ten scores above 0.05: the 3 best; two above 0.74: both (min(3, n)).
    assert len(rows) == expected_count
    assert rows == expected_rows(float(threshold), 3)


def test_nms_thresh_test():
    # Class 0 everywhere. A-B overlap with IoU 600 / 1200 = 0.5, C-D with 810 / 990 = 0.82.
    boxes = [
        [0.0, 0.0, 30.0, 30.0],
        [10.0, 0.0, 40.0, 30.0],
        [100.0, 0.0, 130.0, 30.0],
        [103.0, 0.0, 133.0, 30.0],
    ]
    probs = [[0.9, 0.01, 0.09], [0.8, 0.01, 0.19], [0.7, 0.01, 0.29], [0.6, 0.01, 0.39]]
    det = detect(roi_heads("MODEL.ROI_HEADS.NMS_THRESH_TEST", "0.6"), boxes, probs)
    assert det.pred_boxes.tensor.tolist() == [boxes[0], boxes[1], boxes[2]]  # 0.5 <= 0.6 stays
    det = detect(roi_heads(), boxes, probs)
    assert det.pred_boxes.tensor.tolist() == [boxes[0], boxes[2]]  # default 0.3: B goes too


def test_box_coder_weights_at_inference():
    # Class-0 deltas (2, 4, 10 ln 2, 2.5 ln 2) with weights (20, 40, 10, 2.5) are
    # (0.1, 0.1, ln 2, ln 2): the 10-px RoI centred at (15, 15) moves 1 px right and down
    # and doubles in size. (Default weights 10, 10, 5, 5: 2 px, 4 px, x4, x1.41.)
    heads = roi_heads("MODEL.ROI_HEADS.BOX_CODER.WEIGHTS", "[20.0, 40.0, 10.0, 2.5]")
    deltas = [[2.0, 4.0, 10 * math.log(2), 2.5 * math.log(2)] + [0.0] * 8]
    det = detect(heads, [[10.0, 10.0, 20.0, 20.0]], [[0.9, 0.01, 0.09]], deltas)
    torch.testing.assert_close(det.pred_boxes.tensor, torch.tensor([[6.0, 6.0, 26.0, 26.0]]))


def test_cls_agnostic_bbox_reg():
    heads = roi_heads("MODEL.ROI_HEADS.CLS_AGNOSTIC_BBOX_REG", "True")
    assert heads.box_predictor.bbox_pred.out_features == 4  # not 4 x 3
    # One delta (dx = 1: 1 px on a 10-px RoI) gives both classes the same box.
    det = detect(heads, [[0.0, 0.0, 10.0, 10.0]], [[0.5, 0.4, 0.1]], [[1.0, 0.0, 0.0, 0.0]])
    assert as_rows(det) == [(0, [1.0, 0.0, 11.0, 10.0], 0.5), (1, [1.0, 0.0, 11.0, 10.0], 0.4)]


def test_legacy_plus_one_clips_to_the_last_pixel_index():
    # A RoI past the border of a 20 x 30 image: clipped to x <= 29, y <= 19 (pixel indices),
    # not to 30 and 20 (pixel edges, the default).
    roi, probs = [[5.0, 5.0, 40.0, 40.0]], [[0.9, 0.01, 0.09]]
    det = detect(roi_heads("MODEL.LEGACY_PLUS_ONE", "True"), roi, probs, image_size=(20, 30))
    assert det.pred_boxes.tensor.tolist() == [[5.0, 5.0, 29.0, 19.0]]
    det = detect(roi_heads(), roi, probs, image_size=(20, 30))
    assert det.pred_boxes.tensor.tolist() == [[5.0, 5.0, 30.0, 20.0]]


def train_losses(heads, boxes, gt_boxes, gt_classes) -> dict[str, torch.Tensor]:
    heads.train()
    size = (128, 128)
    images = ImageList(torch.zeros(1, 3, *size), [size])
    proposals = [Instances(size, proposal_boxes=Boxes(torch.tensor(boxes)))]
    gt = [
        Instances(size, gt_boxes=Boxes(torch.tensor(gt_boxes)), gt_classes=torch.tensor(gt_classes))
    ]
    return heads(images, {"f": torch.zeros(1, 4, 8, 8)}, proposals, gt)[1]


# RoI 0 [0, 0, 10, 10] against gt [1, 0, 11, 10]: IoU 90 / 110, foreground, target
# dx = wx * 1 / 10; RoI 1 far away: background. No gt appended: 2 sampled RoIs.
ONE_FG_ONE_BG = ([[0.0, 0.0, 10.0, 10.0], [40.0, 40.0, 50.0, 50.0]], [[1.0, 0.0, 11.0, 10.0]], [1])
NO_GT = ["MODEL.ROI_HEADS.PROPOSAL_APPEND_GT", "False"]


@pytest.mark.parametrize(
    "opts, box_loss",
    [
        # Default beta 1 and wx 10: |0 - 1| < 1, 0.5 * 1^2 / 1 = 0.5, over 2 RoIs.
        ([], 0.5 / 2),
        # Beta 0.5: |1| >= 0.5, 1 - 0.25 = 0.75.
        (["MODEL.ROI_HEADS.SMOOTH_L1_BETA", "0.5"], 0.75 / 2),
        # wx 20: target 2, 2 - 0.5 = 1.5 with beta 1.
        (["MODEL.ROI_HEADS.BOX_CODER.WEIGHTS", "[20.0, 10.0, 5.0, 5.0]"], 1.5 / 2),
    ],
)
def test_box_loss_beta_and_weights(opts, box_loss):
    losses = train_losses(roi_heads(*NO_GT, *opts), *ONE_FG_ONE_BG)
    assert losses["loss_box_reg"].item() == pytest.approx(box_loss, rel=1e-6)
    assert losses["loss_cls"].item() == pytest.approx(math.log(3), rel=1e-6)  # uniform scores


def test_proposal_append_gt_false():
    # With the gt appended (default) there are 3 RoIs and the box loss is 0.5 / 3.
    assert train_losses(roi_heads(), *ONE_FG_ONE_BG)["loss_box_reg"].item() == pytest.approx(
        0.5 / 3, rel=1e-6
    )
    heads = roi_heads(*NO_GT)
    boxes, gt_boxes, gt_classes = ONE_FG_ONE_BG
    gt = Instances(
        (128, 128), gt_boxes=Boxes(torch.tensor(gt_boxes)), gt_classes=torch.tensor(gt_classes)
    )
    proposals = [Instances((128, 128), proposal_boxes=Boxes(torch.tensor(boxes)))]
    sampled = heads.label_and_sample_proposals([torch.zeros(1, 4, 8, 8)], proposals, [gt])[0]
    assert sorted(sampled.proposal_boxes.tensor.tolist()) == sorted(boxes)  # no gt box


def sampled_rows(heads, boxes, gt_boxes, gt_classes) -> list[tuple[list[float], int]]:
    """Sorted (box, gt class) of the sampled RoIs; class 2 is background."""
    gt = Instances(
        (128, 128), gt_boxes=Boxes(torch.tensor(gt_boxes)), gt_classes=torch.tensor(gt_classes)
    )
    proposals = [Instances((128, 128), proposal_boxes=Boxes(torch.tensor(boxes)))]
    sampled = heads.label_and_sample_proposals([torch.zeros(1, 4, 8, 8)], proposals, [gt])[0]
    return sorted(zip(sampled.proposal_boxes.tensor.tolist(), sampled.gt_classes.tolist()))


# gt [0, 0, 20, 20] of class 0 and three RoIs sharing its top edge, with IoU 14 / 20 = 0.7,
# 11 / 20 = 0.55 and 1 / 20 = 0.05.
MATCH_ROIS = [[0.0, 0.0, 20.0, 14.0], [0.0, 0.0, 20.0, 11.0], [0.0, 0.0, 20.0, 1.0]]
MATCH_GT = ([[0.0, 0.0, 20.0, 20.0]], [0])


@pytest.mark.parametrize(
    "opts, expected",
    [
        # Defaults [0.0, 0.5]: 0.7 and 0.55 foreground, 0.05 background.
        ([], [(MATCH_ROIS[2], 2), (MATCH_ROIS[1], 0), (MATCH_ROIS[0], 0)]),
        # [0.1, 0.6]: 0.55 becomes background and 0.05 (below 0.1) is ignored.
        (
            ["MODEL.ROI_HEADS.MATCHER.IOU_THRESHOLDS", "[0.1, 0.6]"],
            [(MATCH_ROIS[1], 2), (MATCH_ROIS[0], 0)],
        ),
        # [0.5, 0.9]: 0.7 and 0.55 background, 0.05 ignored; the best-match rule makes the
        # gt's best RoI (0.7) foreground again.
        (
            [
                "MODEL.ROI_HEADS.MATCHER.IOU_THRESHOLDS",
                "[0.5, 0.9]",
                "MODEL.ROI_HEADS.MATCHER.ALLOW_LOW_QUALITY_MATCHES",
                "True",
            ],
            [(MATCH_ROIS[1], 2), (MATCH_ROIS[0], 0)],
        ),
        # Labels [0, -1, 1] with [0.5, 0.6]: 0.05 background, 0.55 ignored.
        (
            [
                "MODEL.ROI_HEADS.MATCHER.IOU_THRESHOLDS",
                "[0.5, 0.6]",
                "MODEL.ROI_HEADS.MATCHER.IOU_LABELS",
                "[0, -1, 1]",
            ],
            [(MATCH_ROIS[2], 2), (MATCH_ROIS[0], 0)],
        ),
    ],
)
def test_matcher_keys(opts, expected):
    assert sampled_rows(roi_heads(*NO_GT, *opts), MATCH_ROIS, *MATCH_GT) == sorted(expected)


def test_sampler_batch_size_and_positive_fraction():
    # 20 foreground RoIs (gt moved by 0 .. 9.5 px: IoU >= 30.5 / 49.5) and 20 background
    # ones (IoU 0). 8 per image, at most half foreground: 4 + 4 (defaults: 20 + 20).
    foreground = [[0.5 * i, 0.0, 40.0 + 0.5 * i, 40.0] for i in range(20)]
    background = [[60.0 + 3 * i, 60.0, 65.0 + 3 * i, 65.0] for i in range(20)]
    gt = ([[0.0, 0.0, 40.0, 40.0]], [1])
    opts = [
        "MODEL.ROI_HEADS.SAMPLER.BATCH_SIZE_PER_IMAGE",
        "8",
        "MODEL.ROI_HEADS.SAMPLER.POSITIVE_FRACTION",
        "0.5",
    ]
    rows = sampled_rows(roi_heads(*NO_GT, *opts), foreground + background, *gt)
    assert sorted(c for _, c in rows) == [1] * 4 + [2] * 4
    assert all((box in foreground) == (c == 1) for box, c in rows)
    assert len(sampled_rows(roi_heads(*NO_GT), foreground + background, *gt)) == 40
