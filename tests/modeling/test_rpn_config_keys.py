"""Every MODEL.RPN key that changes a number, set to a non-default value through the config.

Each test builds the RPN with ``get_cfg()`` + ``merge_from_list`` (as a command line does)
and checks the effect against boxes, labels or losses worked out by hand, so an RPN that
ignored its key, or read another one, fails. The default value always gives a different
answer, which each test also states.

Most tests use a row of anchors: DefaultAnchorGenerator, one 16-px square anchor per cell,
OFFSET 0.5 (itself a non-default key), stride 16, on a 1 x W map: anchor x is
``[16x, 0, 16x + 16, 16]``. The RPN head is replaced by one that returns given logits and
deltas, so the proposals depend only on the keys under test.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from detkit.config import get_cfg
from detkit.layers import ShapeSpec
from detkit.modeling.proposal_generator import RPN, build_proposal_generator
from detkit.structures import Boxes, ImageList, Instances

ROW_OF_ANCHORS = [
    "MODEL.ANCHOR_GENERATOR.NAME", "DefaultAnchorGenerator",
    "MODEL.ANCHOR_GENERATOR.SIZES", "[16]",
    "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", "[1.0]",
    "MODEL.ANCHOR_GENERATOR.OFFSET", "0.5",
]  # fmt: skip


class FixedRPNHead(nn.Module):
    """Stands in for the RPN head: the same logits ``[1, 1, 1, W]`` and deltas
    ``[1, 4, 1, W]`` (one anchor per cell) whatever the features."""

    def __init__(self, logits: list[float], deltas: list[list[float]] | None):
        super().__init__()
        width = len(logits)
        self.logits = torch.tensor(logits).view(1, 1, 1, width)
        deltas = deltas if deltas is not None else [[0.0] * 4] * width
        self.deltas = torch.tensor(deltas).T.reshape(1, 4, 1, width)  # channel k = delta k

    def forward(self, features: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        return [self.logits], [self.deltas]


def row_rpn(*opts: str, logits: list[float], deltas: list[list[float]] | None = None) -> RPN:
    """The RPN of the default config plus ROW_OF_ANCHORS and ``opts``, in eval mode."""
    cfg = get_cfg()
    cfg.merge_from_list([*ROW_OF_ANCHORS, *opts])
    rpn = build_proposal_generator(cfg, input_shape={"conv5_3": ShapeSpec(channels=1, stride=16)})
    rpn.head = FixedRPNHead(logits, deltas)
    return rpn.eval()


def run(
    rpn: RPN,
    width: int,
    height: int = 64,
    original_size: tuple[int, int] | None = None,
    gt_boxes: list[list[float]] | None = None,
) -> Instances:
    """Proposals of one ``height x 16 * width`` image (``original_size`` before its resize)."""
    size = (height, 16 * width)
    images = ImageList(torch.zeros(1, 1, *size), [size], [original_size or size])
    features = {"conv5_3": torch.zeros(1, 1, 1, width)}
    gt = None
    if rpn.training:
        gt = [Instances(size, gt_boxes=Boxes(torch.tensor(gt_boxes or [[0.0, 0.0, 16.0, 16.0]])))]
    with torch.no_grad():
        return rpn(images, features, gt)[0][0]


def anchor(x: int) -> list[float]:
    return [16.0 * x, 0.0, 16.0 * x + 16, 16.0]


# Logits 4, 3, 2, 1 on anchors 0..3; anchor 1 moved 12 px left (dx = -0.75) onto anchor 0:
# [4, 0, 20, 16], overlapping it by 12 x 16 = 192 px^2, IoU 192 / (2 * 256 - 192) = 0.6.
OVERLAP_LOGITS = [4.0, 3.0, 2.0, 1.0]
OVERLAP_DELTAS = [[0.0] * 4, [-0.75, 0.0, 0.0, 0.0], [0.0] * 4, [0.0] * 4]


def test_nms_thresh():
    default = run(row_rpn(logits=OVERLAP_LOGITS, deltas=OVERLAP_DELTAS), width=4)
    assert default.objectness_logits.tolist() == [4.0, 3.0, 2.0, 1.0]  # IoU 0.6 < 0.7
    rpn = row_rpn("MODEL.RPN.NMS_THRESH", "0.5", logits=OVERLAP_LOGITS, deltas=OVERLAP_DELTAS)
    out = run(rpn, width=4)
    assert out.objectness_logits.tolist() == [4.0, 2.0, 1.0]  # IoU 0.6 > 0.5: suppressed
    assert out.proposal_boxes.tensor.tolist() == [anchor(0), anchor(2), anchor(3)]


def test_pre_nms_topk_test_and_train():
    # Pre-NMS top 2 = anchors 0 and 1, and NMS at 0.5 removes 1: a single proposal. Without
    # the limit NMS would keep 0, 2 and 3; with the other mode's limit (3): 0 and 2.
    test_opts = [
        "MODEL.RPN.NMS_THRESH", "0.5",
        "MODEL.RPN.PRE_NMS_TOPK_TEST", "2",
        "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "3",
    ]  # fmt: skip
    rpn = row_rpn(*test_opts, logits=OVERLAP_LOGITS, deltas=OVERLAP_DELTAS)
    assert run(rpn, width=4).proposal_boxes.tensor.tolist() == [anchor(0)]
    train_opts = [
        "MODEL.RPN.NMS_THRESH", "0.5",
        "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "2",
        "MODEL.RPN.PRE_NMS_TOPK_TEST", "3",
    ]  # fmt: skip
    rpn = row_rpn(*train_opts, logits=OVERLAP_LOGITS, deltas=OVERLAP_DELTAS).train()
    assert run(rpn, width=4).proposal_boxes.tensor.tolist() == [anchor(0)]


def test_post_nms_topk_test_and_train():
    logits = [1.0, 4.0, 3.0, 2.0]  # no overlaps: every anchor survives NMS
    rpn = row_rpn(
        "MODEL.RPN.POST_NMS_TOPK_TEST", "1", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "3", logits=logits
    )
    assert run(rpn, width=4).proposal_boxes.tensor.tolist() == [anchor(1)]
    rpn = row_rpn(
        "MODEL.RPN.POST_NMS_TOPK_TRAIN", "2", "MODEL.RPN.POST_NMS_TOPK_TEST", "3", logits=logits
    ).train()
    assert run(rpn, width=4).proposal_boxes.tensor.tolist() == [anchor(1), anchor(2)]


def test_min_size_is_in_original_image_pixels():
    # Widths 16, 12, 6, 16 (dw = log(w / 16)) in an input resized by 0.5 from its original.
    # MIN_SIZE 30 at the original scale is 15 input pixels: only the 16-px boxes stay. The
    # default 16 (8 input px) keeps the 12-px one too; reading MIN_SIZE as input pixels (30)
    # would drop them all.
    deltas = [[0.0, 0.0, math.log(w / 16), 0.0] for w in (16, 12, 6, 16)]
    logits = [4.0, 3.0, 2.0, 1.0]
    out = run(
        row_rpn("MODEL.RPN.MIN_SIZE", "30", logits=logits, deltas=deltas),
        width=4,
        height=16,
        original_size=(32, 128),
    )
    assert out.objectness_logits.tolist() == [4.0, 1.0]
    default = run(
        row_rpn(logits=logits, deltas=deltas), width=4, height=16, original_size=(32, 128)
    )
    assert default.objectness_logits.tolist() == [4.0, 3.0, 1.0]


def test_box_coder_weights():
    # Anchor 1 [16, 0, 32, 16]: centre (24, 8), 16 x 16. Deltas (1, 1, ln 2 / 2, 2 ln 2)
    # with weights (2, 4, 0.5, 2) are (0.5, 0.25, ln 2, ln 2): centre (24 + 8, 8 + 4),
    # 32 x 32, so [16, -4, 48, 28], clipped at y = 0. (Unit weights: centre (40, 24), 22.6 x 64.)
    deltas = [[0.0] * 4, [1.0, 1.0, math.log(2) / 2, 2 * math.log(2)], [0.0] * 4]
    rpn = row_rpn(
        "MODEL.RPN.BOX_CODER.WEIGHTS", "[2.0, 4.0, 0.5, 2.0]", logits=[1.0, 5.0, 1.0], deltas=deltas
    )
    box = run(rpn, width=3).proposal_boxes.tensor[0]
    torch.testing.assert_close(box, torch.tensor([16.0, 0.0, 48.0, 28.0]))


def test_box_coder_scale_clamp():
    # dw = 3 clamped to 0.5: width 16 e^0.5 = 26.38 around x = 24 (unclamped: 16 e^3 = 321,
    # clipped to the whole 64-px row).
    deltas = [[0.0] * 4, [0.0, 0.0, 3.0, 0.0], [0.0] * 4, [0.0] * 4]
    rpn = row_rpn(
        "MODEL.RPN.BOX_CODER.SCALE_CLAMP", "0.5", logits=[1.0, 5.0, 1.0, 1.0], deltas=deltas
    )
    box = run(rpn, width=4).proposal_boxes.tensor[0]
    half = 8 * math.exp(0.5)
    torch.testing.assert_close(box, torch.tensor([24 - half, 0.0, 24 + half, 16.0]))


# Two ground truths on the row of anchors 0..3 (16-px boxes shifted by s overlap with IoU
# (16 - s) / (16 + s)): gt 0 [4, 0, 20, 16] has IoU 0.6 with anchor 0 and 4 / 28 = 0.14
# with anchor 1; gt 1 [42, 0, 58, 16] has IoU 6 / 26 = 0.23 with anchor 2 and
# 10 / 22 = 0.45 with anchor 3. Defaults ([0.3, 0.7], [0, -1, 1], best-anchor rule with
# minimum 0): anchors 0 and 3 are the best of their ground truth: [1, 0, 0, 1].
MATCHER_GT = [[4.0, 0.0, 20.0, 16.0], [42.0, 0.0, 58.0, 16.0]]


@pytest.mark.parametrize(
    "opts, expected",
    [
        ([], [1, 0, 0, 1]),
        (["MODEL.RPN.MATCHER.ALLOW_LOW_QUALITY_MATCHES", "False"], [-1, 0, 0, -1]),
        (
            [
                "MODEL.RPN.MATCHER.ALLOW_LOW_QUALITY_MATCHES",
                "False",
                "MODEL.RPN.MATCHER.IOU_THRESHOLDS",
                "[0.2, 0.5]",
            ],
            [1, 0, -1, -1],
        ),
        (
            [
                "MODEL.RPN.MATCHER.ALLOW_LOW_QUALITY_MATCHES",
                "False",
                "MODEL.RPN.MATCHER.IOU_THRESHOLDS",
                "[0.2, 0.5]",
                "MODEL.RPN.MATCHER.IOU_LABELS",
                "[0, 0, 1]",
            ],
            [1, 0, 0, 0],
        ),
        # The rule only for ground truths whose best IoU is >= 0.5: gt 0 (0.6), not gt 1.
        (["MODEL.RPN.MATCHER.LOW_QUALITY_MIN_IOU", "0.5"], [1, 0, 0, -1]),
    ],
)
def test_matcher_keys(opts, expected):
    rpn = row_rpn(*opts, logits=[0.0] * 4).train()
    anchors = torch.cat(rpn.anchor_generator([torch.zeros(1, 1, 1, 4)]))
    gt = Instances((16, 64), gt_boxes=Boxes(torch.tensor(MATCHER_GT)))
    labels, _ = rpn.label_and_sample_anchors(anchors, [(16, 64)], [gt])
    assert labels[0].tolist() == expected  # 4 anchors < 256: every labelled one is sampled


@pytest.mark.parametrize("threshold, expected", [(8, [0, 1, 0, 0]), (7, [-1, -1, -1, -1])])
def test_boundary_thresh_is_a_margin_in_pixels(threshold, expected):
    # OFFSET 0: anchors [16x - 8, -8, 16x + 8, 8] in a 16 x 48 image; every one crosses the
    # top border by 8 px, anchors 0 and 3 also the left and right ones. A margin of 8 keeps
    # them all (gt [8, 0, 24, 8] has IoU 0.5 with anchor 1, its best: positive); 7, like
    # the default 0, ignores them all.
    opts = ["MODEL.ANCHOR_GENERATOR.OFFSET", "0.0", "MODEL.RPN.BOUNDARY_THRESH", str(threshold)]
    rpn = row_rpn(*opts, logits=[0.0] * 4).train()
    anchors = torch.cat(rpn.anchor_generator([torch.zeros(1, 1, 1, 4)]))
    assert anchors[3].tolist() == [40.0, -8.0, 56.0, 8.0]
    gt = Instances((16, 48), gt_boxes=Boxes(torch.tensor([[8.0, 0.0, 24.0, 8.0]])))
    labels, _ = rpn.label_and_sample_anchors(anchors, [(16, 48)], [gt])
    assert labels[0].tolist() == expected


def test_sampler_batch_size_and_positive_fraction():
    # 16 anchors; 6 ground truths equal to anchors 0, 2, .., 10 (IoU 1): 6 positives and
    # 10 negatives (the others touch them, IoU 0). 8 per image at most 25% positive: 2 + 6.
    # (Defaults 256 and 0.5 would sample all 16.)
    opts = [
        "MODEL.RPN.SAMPLER.BATCH_SIZE_PER_IMAGE", "8",
        "MODEL.RPN.SAMPLER.POSITIVE_FRACTION", "0.25",
    ]  # fmt: skip
    rpn = row_rpn(*opts, logits=[0.0] * 16).train()
    anchors = torch.cat(rpn.anchor_generator([torch.zeros(1, 1, 1, 16)]))
    positives = [0, 2, 4, 6, 8, 10]
    gt = Instances((16, 256), gt_boxes=Boxes(torch.tensor([anchor(x) for x in positives])))
    labels = rpn.label_and_sample_anchors(anchors, [(16, 256)], [gt])[0][0]
    assert int((labels == 1).sum()) == 2 and int((labels == 0).sum()) == 6
    assert set(torch.nonzero(labels == 1).flatten().tolist()) <= set(positives)
    assert not set(torch.nonzero(labels == 0).flatten().tolist()) & set(positives)


def hand_loss_example():
    # Two sampled anchors with logit 0 (BCE log 2 each); the positive one's target is its
    # box moved by 1 px on a 10-px anchor: deltas (0.1, 0.1, 0, 0) against predicted zeros.
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    labels = torch.tensor([[1, 0]], dtype=torch.int8)
    targets = torch.tensor([[[1.0, 1.0, 11.0, 11.0], [0.0, 0.0, 0.0, 0.0]]])
    return anchors, torch.zeros(1, 2), torch.zeros(1, 2, 4), labels, targets


@pytest.mark.parametrize("normalization", ["sampled", "paper"])
def test_loss_keys(normalization):
    # Smooth L1 with beta 0.05: |0.1| >= beta, so 0.1 - beta / 2 = 0.075 per coordinate,
    # 0.15 in all (beta 1/9 would give 0.5 * 0.01 / beta = 0.045 each). lambda = 10.
    opts = [
        "MODEL.RPN.LOSS_NORMALIZATION", normalization,
        "MODEL.RPN.LOSS_WEIGHT_LOC", "10.0",
        "MODEL.RPN.SMOOTH_L1_BETA", "0.05",
        "MODEL.RPN.SAMPLER.BATCH_SIZE_PER_IMAGE", "64",
    ]  # fmt: skip
    rpn = row_rpn(*opts, logits=[0.0])
    losses = rpn.losses(*hand_loss_example(), num_locations=4)
    if normalization == "sampled":  # both divided by the 2 sampled anchors
        expected_cls, expected_loc = math.log(2), 10 * 0.15 / 2
    else:  # Eq. 1: N_cls = BATCH_SIZE_PER_IMAGE x 1 image, N_reg = 4 locations
        expected_cls, expected_loc = 2 * math.log(2) / 64, 10 * 0.15 / 4
    assert losses["loss_rpn_cls"].item() == pytest.approx(expected_cls, rel=1e-6)
    assert losses["loss_rpn_loc"].item() == pytest.approx(expected_loc, rel=1e-6)


def test_head_conv_dim():
    # The 3x3 conv has CONV_DIM outputs (default -1: the input's 8 channels), which the
    # sibling 1x1 convs read: 9 anchors per position (3 sizes x 3 ratios by default).
    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.RPN.HEAD.CONV_DIM", "6"])
    rpn = build_proposal_generator(cfg, input_shape={"conv5_3": ShapeSpec(channels=8, stride=16)})
    assert (rpn.head.conv.in_channels, rpn.head.conv.out_channels) == (8, 6)
    assert rpn.head.objectness_logits.weight.shape == (9, 6, 1, 1)
    assert rpn.head.anchor_deltas.weight.shape == (36, 6, 1, 1)
