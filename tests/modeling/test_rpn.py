"""RPN: anchor labelling, the loss of Eq. 1 under both normalizations, proposal order, and the
head's output layout against the anchor order."""

import math

import pytest
import torch

from detkit.config import get_cfg
from detkit.layers import ShapeSpec
from detkit.modeling.anchor_generator.default import DefaultAnchorGenerator
from detkit.modeling.box_coder.delta_xywh import DeltaXYWHBoxCoder
from detkit.modeling.matcher.iou_matcher import IoUMatcher
from detkit.modeling.proposal_generator import RPN, StandardRPNHead, build_proposal_generator
from detkit.modeling.proposal_generator.proposals import find_top_proposals
from detkit.modeling.sampler.balanced import BalancedPositiveNegativeSampler
from detkit.structures import Boxes, ImageList, Instances, pairwise_iou
from detkit.utils.events import EventStorage


def make_rpn(**overrides) -> RPN:
    kwargs = dict(
        in_features=["f"],
        head=StandardRPNHead(in_channels=4, num_anchors=1),
        anchor_generator=DefaultAnchorGenerator(sizes=[16], aspect_ratios=[1.0], strides=[16]),
        anchor_matcher=IoUMatcher(
            thresholds=[0.3, 0.7], labels=[0, -1, 1], allow_low_quality_matches=True
        ),
        sampler=BalancedPositiveNegativeSampler(
            batch_size_per_image=256, positive_fraction=0.5, seed=0
        ),
        box_coder=DeltaXYWHBoxCoder(weights=(1.0, 1.0, 1.0, 1.0)),
        boundary_threshold=-1,
    )
    kwargs.update(overrides)
    return RPN(**kwargs)


def hand_example():
    # Two anchors: one positive with target offset (1, 1) px on a 10-px box, one negative.
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    pred_logits = torch.zeros(1, 2)
    pred_deltas = torch.zeros(1, 2, 4)
    labels = torch.tensor([[1, 0]], dtype=torch.int8)
    targets = torch.tensor([[[1.0, 1.0, 11.0, 11.0], [0.0, 0.0, 0.0, 0.0]]])
    return anchors, pred_logits, pred_deltas, labels, targets


def test_loss_released_code_normalization_by_hand():
    rpn = make_rpn(loss_normalization="sampled", loss_weight_loc=1.0, smooth_l1_beta=1 / 9)
    losses = rpn.losses(*hand_example(), num_locations=4)
    # Cls: two sampled anchors with logit 0 -> BCE log(2) each, averaged over 2 -> log 2.
    assert losses["loss_rpn_cls"].item() == pytest.approx(math.log(2))
    # Loc: targets (0.1, 0.1, 0, 0); |0.1| < beta = 1/9 -> 0.5 * 0.01 / beta = 0.045 each;
    # sum 0.09 over the positive, divided by the 2 sampled anchors.
    assert losses["loss_rpn_loc"].item() == pytest.approx(0.09 / 2)


def test_loss_paper_normalization_by_hand():
    rpn = make_rpn(loss_normalization="paper", loss_weight_loc=10.0, smooth_l1_beta=1 / 9)
    losses = rpn.losses(*hand_example(), num_locations=4)
    # Eq. 1: N_cls = 256 (mini-batch size), N_reg = 4 anchor locations, lambda = 10.
    assert losses["loss_rpn_cls"].item() == pytest.approx(2 * math.log(2) / 256)
    assert losses["loss_rpn_loc"].item() == pytest.approx(10 * 0.09 / 4)


def test_loss_beta_zero_is_l1():
    rpn = make_rpn(smooth_l1_beta=0.0)
    losses = rpn.losses(*hand_example(), num_locations=4)
    assert losses["loss_rpn_loc"].item() == pytest.approx((0.1 + 0.1) / 2)


def test_unknown_normalization_names_the_key():
    with pytest.raises(ValueError, match="MODEL.RPN.LOSS_NORMALIZATION"):
        make_rpn(loss_normalization="mean")


def test_anchor_labels_follow_iou_and_best_anchor_rule():
    # 64x64 image, stride 16, one 16-px anchor per cell -> 16 anchors at (16j, 16i) corners.
    rpn = make_rpn()
    anchors = torch.cat(rpn.anchor_generator([torch.zeros(1, 4, 4, 4)]))
    gt = Instances(
        (64, 64), gt_boxes=Boxes(torch.tensor([[16.0, 16.0, 32.0, 32.0], [2.0, 40.0, 12.0, 50.0]]))
    )
    labels, targets = rpn.label_and_sample_anchors(anchors, [(64, 64)], [gt])
    labels = labels[0]
    # Anchor i * 4 + j is [16j - 8, 16i - 8, 16j + 8, 16i + 8]. Anchor 5 is [8, 8, 24, 24]:
    # IoU with gt 0 = 64 / 448 < 0.3, and so are anchors 6, 9 and 10: no anchor reaches 0.7,
    # so the best-anchor rule makes those 4 tied best anchors positive.
    positives = set(torch.nonzero(labels == 1).flatten().tolist())
    assert {5, 6, 9, 10} <= positives
    # gt 1 [2, 40, 12, 50]: best anchor is 12, [-8, 40, 8, 56], IoU 60 / 296; its neighbour
    # 13, [8, 40, 24, 56], has IoU 40 / 316: no tie.
    assert 12 in positives
    assert positives == {5, 6, 9, 10, 12}
    # Everything else overlaps less than 0.3 -> negative, and all are sampled (16 < 256).
    assert int((labels == 0).sum()) == 16 - len(positives)
    assert torch.equal(targets[0, 12], torch.tensor([2.0, 40.0, 12.0, 50.0]))


def test_straddling_anchors_are_ignored_and_never_best():
    # Paper 3.1.3: with BOUNDARY_THRESH 0, anchors crossing the border are not labelled.
    rpn = make_rpn(boundary_threshold=0)
    anchors = torch.cat(rpn.anchor_generator([torch.zeros(1, 4, 4, 4)]))
    gt = Instances((64, 64), gt_boxes=Boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0]])))
    labels = rpn.label_and_sample_anchors(anchors, [(64, 64)], [gt])[0][0]
    inside = (anchors[:, :2] >= 0).all(1) & (anchors[:, 2:] <= 64).all(1)
    assert torch.all(labels[~inside] == -1)
    # The best anchor overall is [-8, -8, 8, 8] (outside); the best inside one, [8, 8, 24, 24],
    # overlaps the box by 4 px^2 (IoU 4 / 352) and becomes positive through the rule.
    assert torch.nonzero(labels == 1).flatten().tolist() == [5]


def test_image_without_ground_truth_has_only_negatives():
    rpn = make_rpn()
    anchors = torch.cat(rpn.anchor_generator([torch.zeros(1, 4, 4, 4)]))
    gt = Instances((64, 64), gt_boxes=Boxes(torch.zeros(0, 4)))
    labels, _ = rpn.label_and_sample_anchors(anchors, [(64, 64)], [gt])
    assert torch.all(labels == 0)


def test_proposals_decode_clip_min_size_topk_nms_topk():
    coder = DeltaXYWHBoxCoder(weights=(1.0, 1.0, 1.0, 1.0))
    anchors = torch.tensor(
        [
            [0.0, 0.0, 40.0, 40.0],  # score 5, kept
            [1.0, 1.0, 41.0, 41.0],  # score 4, IoU 0.9 with the first: removed by NMS
            [50.0, 50.0, 60.0, 60.0],  # score 9, 10 px: under 2 x 8 = 16 px at this scale
            [-20.0, 60.0, 30.0, 99.0],  # score 3, clipped to [0, 60, 30, 80]: kept
            [60.0, 0.0, 99.0, 30.0],  # score 1, clipped to [60, 0, 80, 30]: cut by pre-topk
        ]
    )
    logits = torch.tensor([[5.0, 4.0, 9.0, 3.0, 1.0]])
    out = find_top_proposals(
        anchors,
        logits,
        torch.zeros(1, 5, 4),
        coder,
        [(80, 80)],
        [2.0],
        pre_nms_topk=3,
        post_nms_topk=10,
        nms_thresh=0.7,
        min_size=8.0,
    )[0]
    assert out.objectness_logits.tolist() == [5.0, 3.0]
    assert torch.equal(
        out.proposal_boxes.tensor, torch.tensor([[0.0, 0.0, 40.0, 40.0], [0.0, 60.0, 30.0, 80.0]])
    )
    # post-NMS top-N keeps the best one only.
    out = find_top_proposals(
        anchors,
        logits,
        torch.zeros(1, 5, 4),
        coder,
        [(80, 80)],
        [2.0],
        pre_nms_topk=3,
        post_nms_topk=1,
        nms_thresh=0.7,
        min_size=8.0,
    )[0]
    assert out.objectness_logits.tolist() == [5.0]


def test_softmax_objectness_equals_logit_difference():
    torch.manual_seed(0)
    head = StandardRPNHead(in_channels=4, num_anchors=3, objectness="softmax")
    x = torch.randn(2, 4, 5, 6)
    logits, deltas = head([x])
    raw = head.objectness_logits(torch.relu(head.conv(x)))
    # Softmax over (background, object) == sigmoid(object - background).
    probs = torch.softmax(torch.stack([raw[:, :3], raw[:, 3:]]), dim=0)[1]
    assert torch.allclose(torch.sigmoid(logits[0]), probs, atol=1e-6)
    assert logits[0].shape == (2, 3, 5, 6) and deltas[0].shape == (2, 12, 5, 6)


def test_head_channels_follow_anchor_count_from_config():
    cfg = get_cfg()
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [32, 64, 128, 256]  # 4 sizes x 3 ratios = 12 anchors
    rpn = build_proposal_generator(cfg, input_shape={"conv5_3": ShapeSpec(channels=8, stride=16)})
    assert rpn.head.objectness_logits.out_channels == 12
    assert rpn.head.anchor_deltas.out_channels == 48


def test_forward_training_and_inference_counts():
    torch.manual_seed(0)
    rpn = make_rpn(pre_nms_topk=(10, 6), post_nms_topk=(5, 3), min_size=0.0)
    images = ImageList(torch.zeros(2, 3, 64, 64), [(64, 64), (48, 64)])
    features = {"f": torch.randn(2, 4, 4, 4)}
    gt = [
        Instances((64, 64), gt_boxes=Boxes(torch.tensor([[10.0, 10.0, 40.0, 40.0]]))),
        Instances((48, 64), gt_boxes=Boxes(torch.zeros(0, 4))),
    ]
    # The head starts near zero (N(0, 0.01)), so the 16 proposals per image are the 16
    # anchors, clipped, which touch but do not overlap: NMS removes none and the counts are
    # exactly the top-k limits, the best logits of each image in decreasing order.
    logits = rpn.head([features["f"]])[0][0].detach().flatten(1)  # A = 1: [B, H * W]
    best = logits.sort(dim=1, descending=True).values
    rpn.train()
    proposals, losses = rpn(images, features, gt)
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_loc"}
    assert all(torch.isfinite(v) for v in losses.values())
    for i, p in enumerate(proposals):
        torch.testing.assert_close(p.objectness_logits, best[i, :5])
    assert not proposals[0].proposal_boxes.tensor.requires_grad
    rpn.eval()
    proposals, losses = rpn(images, features)
    assert losses == {}
    for i, p in enumerate(proposals):
        torch.testing.assert_close(p.objectness_logits, best[i, :3])
    # Clipped to each image's own size.
    assert proposals[1].proposal_boxes.tensor[:, 3].max() <= 48


def _ablation_rpn(**overrides) -> RPN:
    # 3 x 4 map, stride 16, one 16-px anchor per cell; the head predicts a constant shift.
    rpn = make_rpn(min_size=0.0, nms_thresh=0.7, pre_nms_topk=(100, 100), **overrides)
    with torch.no_grad():
        rpn.head.anchor_deltas.weight.zero_()
        num_anchors = rpn.head.anchor_deltas.bias.numel() // 4
        shift = torch.tensor([0.25, 0.0, 0.0, 0.0]).repeat(num_anchors)  # +4 px in x
        rpn.head.anchor_deltas.bias.copy_(shift)
    return rpn.eval()


def test_no_regression_ablation_gives_the_anchors_as_proposals():
    features = {"f": torch.rand(1, 4, 3, 4)}
    images = ImageList(torch.zeros(1, 3, 48, 64), [(48, 64)])
    rpn = _ablation_rpn(post_nms_topk=(12, 12))
    anchors = torch.cat(rpn.anchor_generator([features["f"]]))
    with torch.no_grad():
        shifted = rpn(images, features)[0][0].proposal_boxes.tensor
        rpn.test_use_regression = False
        plain = rpn(images, features)[0][0].proposal_boxes.tensor
    # Without the deltas the proposals are the anchors, clipped to the 48 x 64 image; with
    # them every box first moves 4 px right.
    key = lambda t: sorted(map(tuple, t.tolist()))  # noqa: E731
    limits = torch.tensor([64.0, 48.0, 64.0, 48.0])
    assert key(plain) == key(torch.minimum(anchors.clamp(min=0), limits))
    moved = anchors + torch.tensor([4.0, 0.0, 4.0, 0.0])
    assert key(shifted) == key(torch.minimum(moved.clamp(min=0), limits))


def test_no_objectness_ablation_draws_n_boxes_without_nms():
    features = {"f": torch.rand(1, 4, 3, 4)}
    images = ImageList(torch.zeros(1, 3, 48, 64), [(48, 64)])
    # Two anchors per cell, 16 and 18 px: IoU (16/18)^2 = 0.79 > 0.7, so NMS keeps one of
    # each pair (12 of 24); without the objectness there is no NMS: 10 of the 24 drawn.
    two = dict(
        anchor_generator=DefaultAnchorGenerator(sizes=[16, 18], aspect_ratios=[1.0], strides=[16]),
        head=StandardRPNHead(in_channels=4, num_anchors=2),
    )
    rpn = _ablation_rpn(post_nms_topk=(24, 24), **two)
    with torch.no_grad():
        assert len(rpn(images, features)[0][0]) == 12
        rpn.test_use_objectness = False
        rpn.post_nms_topk = (10, 10)
        first = rpn(images, features)[0][0].proposal_boxes.tensor
        again = rpn(images, features)[0][0].proposal_boxes.tensor
    assert len(first) == 10 and torch.equal(first, again)  # a fixed random draw
    ious = pairwise_iou(Boxes(first), Boxes(first)).fill_diagonal_(0)
    rpn.test_use_objectness = True
    assert (ious > 0.7).any()  # overlapping pairs survive: no NMS


def test_ablation_keys_reach_the_rpn():
    cfg = get_cfg()
    cfg.MODEL.RPN.TEST_USE_OBJECTNESS = False
    cfg.MODEL.RPN.TEST_USE_REGRESSION = False
    rpn = build_proposal_generator(cfg, input_shape={"conv5_3": ShapeSpec(channels=8, stride=16)})
    assert rpn.test_use_objectness is False and rpn.test_use_regression is False


@pytest.mark.parametrize("objectness", ["sigmoid", "softmax"])
@pytest.mark.parametrize("anchor_idx, y, x", [(0, 0, 0), (3, 2, 4), (1, 0, 3), (2, 2, 1)])
def test_head_outputs_line_up_with_the_anchor_order(objectness, anchor_idx, y, x):
    # A 3 x 5 map (not square) with 4 anchors per position, ratio-major: (0.5, 16),
    # (0.5, 32), (2, 16), (2, 32). The feature is 1 at (y, x) only; the head passes it
    # through its 3x3 conv and gives anchor `anchor_idx` the object logit 10 and dx = 0.5
    # there, nothing anywhere else. The best proposal must then be that anchor at (y, x),
    # moved right by half its width: anchor order (anchor, then x, then y) and the head's
    # [A, H, W] and [A * 4, H, W] layouts must agree.
    cfg = get_cfg()
    cfg.merge_from_list([
        "MODEL.ANCHOR_GENERATOR.NAME", "DefaultAnchorGenerator",
        "MODEL.ANCHOR_GENERATOR.SIZES", "[16, 32]",
        "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", "[0.5, 2.0]",
        "MODEL.ANCHOR_GENERATOR.OFFSET", "0.5",
        "MODEL.RPN.HEAD.OBJECTNESS", objectness,
        "MODEL.RPN.MIN_SIZE", "0.0",
    ])  # fmt: skip
    rpn = build_proposal_generator(cfg, input_shape={"conv5_3": ShapeSpec(channels=1, stride=16)})
    head, num_anchors = rpn.head, 4
    with torch.no_grad():
        for layer in (head.conv, head.objectness_logits, head.anchor_deltas):
            layer.weight.zero_()
        head.conv.weight[0, 0, 1, 1] = 1.0  # centre tap: conv output = input
        # Softmax head: channels are A background logits, then A object logits.
        object_channel = anchor_idx if objectness == "sigmoid" else num_anchors + anchor_idx
        head.objectness_logits.weight[object_channel, 0] = 10.0
        head.anchor_deltas.weight[4 * anchor_idx, 0] = 0.5  # dx of this anchor
    features = torch.zeros(1, 1, 3, 5)
    features[0, 0, y, x] = 1.0
    images = ImageList(torch.zeros(1, 3, 48, 80), [(48, 80)])
    with torch.no_grad():
        out = rpn.eval()(images, {"conv5_3": features})[0][0]
    ratio, size = [(0.5, 16), (0.5, 32), (2.0, 16), (2.0, 32)][anchor_idx]
    width, height = size / math.sqrt(ratio), size * math.sqrt(ratio)
    centre_x, centre_y = 16 * (x + 0.5) + 0.5 * width, 16 * (y + 0.5)
    expected = torch.tensor(
        [centre_x - width / 2, centre_y - height / 2, centre_x + width / 2, centre_y + height / 2]
    )
    expected = torch.minimum(expected.clamp(min=0), torch.tensor([80.0, 48.0, 80.0, 48.0]))
    assert out.objectness_logits[0].item() == 10.0
    assert out.objectness_logits[1:].abs().max().item() == 0.0
    torch.testing.assert_close(out.proposal_boxes.tensor[0], expected)


def test_sampled_anchor_counts_are_recorded_per_image_only_in_a_storage():
    rpn = make_rpn()
    rpn.train()
    images = ImageList(torch.zeros(2, 3, 64, 64), [(64, 64), (64, 64)])
    features = {"f": torch.randn(2, 4, 4, 4)}
    # 16 anchors of 16 x 16 px per image, side by side (touching, IoU 0 between them). Image
    # 1's object is anchor 5 itself: 1 positive, 15 negatives; image 2 has no object: 16
    # negatives. The sampler (256, half positive) keeps them all.
    anchor = rpn.anchor_generator([features["f"]])[0][5]
    gt = [
        Instances((64, 64), gt_boxes=Boxes(anchor[None].clone())),
        Instances((64, 64), gt_boxes=Boxes(torch.zeros(0, 4))),
    ]
    _, without_storage = rpn(images, features, gt)  # no trainer: nothing recorded or raised
    with EventStorage() as storage:
        _, with_storage = rpn(images, features, gt)
    for name, value in without_storage.items():
        assert torch.equal(value, with_storage[name]), name
    recorded = {name: value for name, (value, _) in storage.latest().items()}
    assert recorded == {"rpn/num_pos_anchors": 0.5, "rpn/num_neg_anchors": 15.5}
    rpn.eval()
    with EventStorage() as storage:
        rpn(images, features)
    assert storage.latest() == {}
