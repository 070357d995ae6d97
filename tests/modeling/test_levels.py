"""Feature levels kept apart: per-level anchor sizes, the RPN's per-level top-k and NMS
(``MODEL.RPN.TOPK_SCOPE``), and RoIs pooled from the level that fits their size
(``MultiLevelROIAlign``); hand-computed values and identities with the single-level path."""

from __future__ import annotations

import os

import pytest
import torch

from detkit.config import get_cfg
from detkit.layers import ShapeSpec
from detkit.modeling import build_model, build_proposal_generator
from detkit.modeling.anchor_generator import DefaultAnchorGenerator, LegacyAnchorGenerator
from detkit.modeling.box_coder import DeltaXYWHBoxCoder
from detkit.modeling.poolers import MultiLevelROIAlign, ROIAlign, assign_levels
from detkit.modeling.proposal_generator.proposals import find_top_proposals
from detkit.structures import Boxes

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_anchor_sizes_per_level_by_hand():
    gen = DefaultAnchorGenerator(
        sizes=[[16], [32]], aspect_ratios=[1.0], strides=[8, 16], offset=0.5
    )
    fine, coarse = gen([torch.zeros(1, 1, 2, 3), torch.zeros(1, 1, 1, 2)])
    # Level 0: 16 px centred at ((x + 0.5) * 8, (y + 0.5) * 8); level 1: 32 px at stride 16.
    assert fine[:2].tolist() == [[-4.0, -4.0, 12.0, 12.0], [4.0, -4.0, 20.0, 12.0]]
    assert fine.shape == (6, 4)
    assert coarse.tolist() == [[-8.0, -8.0, 24.0, 24.0], [8.0, -8.0, 40.0, 24.0]]
    assert gen.num_anchors_per_location == 1
    # The released code's generator too: size 32 at stride 16 is the 16 px base window
    # (0..15) scaled by 2 about its centre 7.5: 7.5 -/+ 15.5.
    legacy = LegacyAnchorGenerator(sizes=[[16], [32]], aspect_ratios=[1.0], strides=[16, 16])
    assert legacy.cell_anchors[0].tolist() == [[0.0, 0.0, 15.0, 15.0]]
    assert legacy.cell_anchors[1].tolist() == [[-8.0, -8.0, 23.0, 23.0]]


def test_anchor_sizes_per_level_are_checked():
    with pytest.raises(ValueError, match="one list per map"):
        DefaultAnchorGenerator(sizes=[[16], [32]], aspect_ratios=[1.0], strides=[8, 16, 32])
    with pytest.raises(ValueError, match="same number of sizes"):
        DefaultAnchorGenerator(sizes=[[16], [32, 64]], aspect_ratios=[1.0], strides=[8, 16])


def _two_level_inputs():
    """Level 0: three boxes at x 0..10 (two overlap at IoU 0.8); level 1: two boxes, one
    overlapping level 0's best. Zero deltas decode to the anchors themselves."""
    anchors = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],
            [0.0, 0.0, 10.0, 8.0],
            [20.0, 0.0, 30.0, 10.0],  # level 0
            [0.0, 0.0, 10.0, 9.0],
            [40.0, 0.0, 50.0, 10.0],  # level 1
        ]
    )
    logits = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0]])
    return anchors, logits, torch.zeros(1, 5, 4)


def _proposals(per_level, pre, post, nms_thresh=0.7):
    anchors, logits, deltas = _two_level_inputs()
    (out,) = find_top_proposals(
        anchors,
        logits,
        deltas,
        DeltaXYWHBoxCoder(weights=(1.0, 1.0, 1.0, 1.0)),
        [(64, 64)],
        [1.0],
        pre_nms_topk=pre,
        post_nms_topk=post,
        nms_thresh=nms_thresh,
        min_size=0.0,
        num_anchors_per_level=[3, 2] if per_level else None,
    )
    return out.objectness_logits.tolist()


def test_per_level_topk_and_nms_by_hand():
    # Global, top 2: logits 5, 4; NMS drops 4 (IoU 0.8 with 5): [5].
    assert _proposals(False, pre=2, post=10) == [5.0]
    # Per level, top 2 each: level 0 {5, 4} -> NMS -> {5}; level 1 {2, 1} kept, although
    # box 2 (level 1) overlaps box 5 at IoU 0.9: NMS does not cross levels.
    assert _proposals(True, pre=2, post=10) == [5.0, 2.0, 1.0]
    # The post-NMS cut ranks all levels together.
    assert _proposals(True, pre=2, post=2) == [5.0, 2.0]
    # NMS at IoU 1 is a no-op: every level's top 2, ranked together.
    assert _proposals(True, pre=2, post=10, nms_thresh=1.0) == [5.0, 4.0, 2.0, 1.0]


def test_one_level_per_level_equals_global_bitwise():
    g = torch.Generator().manual_seed(0)
    anchors = torch.rand(200, 2, generator=g).repeat(1, 2) * 50
    anchors[:, 2:] += 5 + torch.rand(200, 2, generator=g) * 30
    logits = torch.randn(2, 200, generator=g)
    deltas = torch.randn(2, 200, 4, generator=g) * 0.1
    common = dict(pre_nms_topk=50, post_nms_topk=20, nms_thresh=0.6, min_size=2.0)
    coder = DeltaXYWHBoxCoder(weights=(1.0, 1.0, 1.0, 1.0))
    args = (anchors, logits, deltas, coder, [(64, 80), (70, 60)], [1.0, 0.5])
    single = find_top_proposals(*args, **common)
    levels = find_top_proposals(*args, **common, num_anchors_per_level=[200])
    for a, b in zip(single, levels):
        assert torch.equal(a.proposal_boxes.tensor, b.proposal_boxes.tensor)
        assert torch.equal(a.objectness_logits, b.objectness_logits)


def _two_map_cfg(*overrides):
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(ROOT, "configs/quickstart/faster_rcnn_tiny.yaml"))
    cfg.merge_from_list([
        "MODEL.DEVICE", "cpu",
        "MODEL.TINY.CHANNELS", "[16, 32, 64, 64]",  # one RPN head: equal channels
        "MODEL.RPN.IN_FEATURES", "[stage3, stage4]",
        "MODEL.ANCHOR_GENERATOR.SIZES", "[[16, 32], [64, 128]]",
        "MODEL.RPN.PRE_NMS_TOPK_TEST", "5",
        "MODEL.RPN.POST_NMS_TOPK_TEST", "100",
        "MODEL.RPN.NMS_THRESH", "1.0",
        *overrides,
    ])  # fmt: skip
    return cfg


@pytest.mark.parametrize(("scope", "expected"), [("global", 5), ("per_level", 10)])
def test_topk_scope_key(scope, expected):
    # NMS off: "global" keeps PRE_NMS_TOPK_TEST boxes over both maps, "per_level" that many
    # on each of the two maps.
    torch.manual_seed(0)
    model = build_model(_two_map_cfg("MODEL.RPN.TOPK_SCOPE", scope)).eval()
    assert model.proposal_generator.topk_scope == scope
    images = model.preprocessor([{"image": torch.rand(3, 96, 128) * 255}])
    with torch.no_grad():
        features = model.backbone(images.tensor)
        (proposals,), _ = model.proposal_generator(images, features)
    assert len(proposals) == expected
    with pytest.raises(ValueError, match="TOPK_SCOPE"):
        build_model(_two_map_cfg("MODEL.RPN.TOPK_SCOPE", "image"))


def test_rpn_reads_the_node_it_is_built_from():
    cfg = _two_map_cfg()
    node = cfg.MODEL.RPN.clone()
    node.NAME, node.POST_NMS_TOPK_TEST, node.TOPK_SCOPE = "RPN", 7, "per_level"
    shapes = {
        "stage3": ShapeSpec(channels=64, stride=8),
        "stage4": ShapeSpec(channels=64, stride=16),
    }
    rpn = build_proposal_generator(cfg, node=node, input_shape=shapes)
    assert (rpn.post_nms_topk[1], rpn.topk_scope) == (7, "per_level")
    # Through MODEL.PROPOSAL_GENERATOR (NAME only), MODEL.RPN's settings apply.
    rpn = build_proposal_generator(cfg, input_shape=shapes)
    assert (rpn.post_nms_topk[1], rpn.topk_scope) == (100, "global")


def test_assign_levels_by_hand():
    # sqrt(area) 224 -> level 4; 112 -> 3; 447 -> 4 (log2 < 1); 448 -> 5; 10 -> clamped to 2;
    # 5000 -> clamped to 5. A 100 x 400 box has sqrt(area) 200: level 3.
    sides = [224.0, 112.0, 447.0, 448.0, 10.0, 5000.0]
    boxes = Boxes(torch.tensor([[0.0, 0.0, s, s] for s in sides] + [[0.0, 0.0, 400.0, 100.0]]))
    levels = assign_levels(boxes, min_level=2, max_level=5, canonical_size=224, canonical_level=4)
    assert levels.tolist() == [4, 3, 4, 5, 2, 5, 3]


def test_multilevel_pooler_equals_roialign_on_the_chosen_map():
    g = torch.Generator().manual_seed(0)
    # Two images, maps at strides 4, 8, 16 of a 64 x 96 (non-square) padded input.
    features = [torch.randn(2, 3, 64 // s, 96 // s, generator=g) for s in (4, 8, 16)]
    pooler = MultiLevelROIAlign(
        output_size=3,
        strides=[4, 8, 16],
        in_channels=3,
        canonical_size=16,
        canonical_level=3,
        sampling_ratio=2,
    )
    boxes = [
        Boxes(torch.tensor([[1.0, 2.0, 9.0, 10.0], [4.0, 4.0, 60.0, 40.0]])),  # 8 px, ~47 px
        Boxes(
            torch.tensor([[10.0, 5.0, 30.0, 21.0], [0.0, 0.0, 3.0, 3.0], [20.0, 10.0, 90.0, 60.0]])
        ),  # ~18 px, 3 px, ~59 px
    ]
    out = pooler(features, boxes)
    # Levels: 8 -> 2, 47 -> 4, 18 -> 3, 3 -> 2 (clamped), 59 -> 4; level k = map of stride
    # 2**k = index k - 2.
    expected_map = [0, 2, 1, 0, 2]
    flat = [(image, b) for image, bs in enumerate(boxes) for b in bs.tensor]
    assert out.shape == (5, 3, 3, 3)
    for row, ((image, box), index) in enumerate(zip(flat, expected_map)):
        single = ROIAlign(
            output_size=3, spatial_scale=1 / (4 * 2**index), in_channels=3, sampling_ratio=2
        )
        reference = single([features[index][image : image + 1]], [Boxes(box[None])])
        torch.testing.assert_close(out[row], reference[0])


def test_multilevel_pooler_settings_are_checked():
    with pytest.raises(ValueError, match="consecutive powers of two"):
        MultiLevelROIAlign(output_size=7, strides=[4, 16], in_channels=8)
    cfg = get_cfg()
    shapes = [ShapeSpec(channels=8, stride=8), ShapeSpec(channels=16, stride=16)]
    with pytest.raises(ValueError, match="equal channels"):
        MultiLevelROIAlign.from_config(cfg, cfg.MODEL.ROI_HEADS.POOLER, shapes)
    cfg.MODEL.ROI_HEADS.POOLER.CANONICAL_SIZE, cfg.MODEL.ROI_HEADS.POOLER.CANONICAL_LEVEL = 64, 3
    shapes = [ShapeSpec(channels=8, stride=8), ShapeSpec(channels=8, stride=16)]
    settings = MultiLevelROIAlign.from_config(cfg, cfg.MODEL.ROI_HEADS.POOLER, shapes)
    assert (settings["canonical_size"], settings["canonical_level"]) == (64.0, 3)
