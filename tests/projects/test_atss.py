"""projects/atss: ATSSMatcher (Adaptive Training Sample Selection) registered in
MATCHER_REGISTRY, used by RetinaNet and by the RPN through config alone."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from detkit.config import get_cfg
from detkit.modeling import MATCHER_REGISTRY, build_matcher, build_model
from detkit.modeling.labeling import match_candidates
from detkit.modeling.matcher import MatchInputs
from detkit.structures import Boxes
from detkit.utils.synthetic import two_shapes_example
from projects.atss import ATSSMatcher, add_atss_config
from projects.atss.matcher import closest_per_level, iou_thresholds, smallest_k

REPO_ROOT = Path(__file__).resolve().parents[2]
ATSS_CONFIG = str(REPO_ROOT / "projects/atss/configs/shapes_retinanet_atss.yaml")
QUICKSTART_CONFIG = str(REPO_ROOT / "configs/quickstart/faster_rcnn_tiny.yaml")
SMALL = ["MODEL.DEVICE", "cpu", "MODEL.TINY.CHANNELS", "[8, 16, 16, 32]"]


def strips(intervals: list[tuple[float, float]]) -> Boxes:
    """Boxes spanning ``[x1, x2]`` horizontally and ``[0, 10]`` vertically: every centre has
    y = 5, so IoUs and centre distances reduce to those of the x intervals."""
    return Boxes(torch.tensor([[x1, 0.0, x2, 10.0] for x1, x2 in intervals]))


# The hand-computed case: all boxes are strips (x1, x2) of height 10.
# Ground truths: g0 = (0, 8), centre 4; g1 = (2, 24), centre 13.
# Level 0 (5 candidates, width 6):  a0 (12, 18) c 15, a1 (18, 24) c 21, a2 (28, 34) c 31,
#                                   a3 (30, 36) c 33, a4 (38, 44) c 41.
# Level 1 (4 candidates, width 20): b0 (-12, 8) c -2, b1 (-4, 16) c 6, b2 (12, 32) c 22,
#                                   b3 (20, 40) c 30.
# Indices: a0..a4 = 0..4, b0..b3 = 5..8.
GT = [(0.0, 8.0), (2.0, 24.0)]
LEVEL0 = [(12.0, 18.0), (18.0, 24.0), (28.0, 34.0), (30.0, 36.0), (38.0, 44.0)]
LEVEL1 = [(-12.0, 8.0), (-4.0, 16.0), (12.0, 32.0), (20.0, 40.0)]
CANDIDATES = strips(LEVEL0 + LEVEL1)
NUM_PER_LEVEL = [5, 4]


def match(matcher, gt=GT, valid=None, num_per_level=NUM_PER_LEVEL):
    """Match the hand case's candidates through detkit's labelling path."""
    return match_candidates(
        matcher, CANDIDATES, strips(gt), num_per_level=num_per_level, valid=valid
    )


def test_import_registers_the_matcher_and_the_config_keys():
    assert MATCHER_REGISTRY.get("ATSSMatcher") is ATSSMatcher
    assert ATSSMatcher.__module__ == "projects.atss.matcher"
    assert "ATSS" not in get_cfg().MODEL
    cfg = get_cfg()
    add_atss_config(cfg)
    assert (cfg.MODEL.ATSS.TOPK, cfg.MODEL.ATSS.CENTER_IN_GT_EPS) == (9, 0.01)


def test_hand_computed_two_levels_two_ground_truths():
    # topk 3 per level.
    # g0 (centre 4). Level 0 distances 11, 17, 27, 29, 37 -> a0, a1, a2, IoUs 0, 0, 0.
    #   Level 1 distances 6, 2, 18, 26 -> b1, b0, b2; IoUs: b1 (-4, 16) covers g0: 8 / 20 =
    #   2/5; b0 (-12, 8) also: 2/5; b2: 0.
    #   IoUs {0, 0, 0, 2/5, 2/5, 0}: mean 2/15; squared deviations 2 (4/15)^2 + 4 (2/15)^2
    #   = 48/225; unbiased variance 48/225 / 5 = 16/375, std 0.20656; t0 = 0.33989.
    #   b1 (2/5, centre 6 in (0, 8)) passes; b0 (2/5) passes the IoU test but its centre -2
    #   is outside g0: rejected.
    # g1 (centre 13, length 22). Level 0 distances 2, 8, 18, 20, 28 -> a0, a1, a2: IoUs
    #   6/22 = 3/11, 3/11, 0. Level 1 distances 15, 7, 9, 17 -> b1, b2, b0: IoUs b1 14/28 =
    #   1/2, b2 12/30 = 2/5, b0 6/36 = 1/6.
    #   IoUs {3/11, 3/11, 0, 1/2, 2/5, 1/6}: mean 133/495 = 0.26869; squared deviations
    #   sum to 5011/32670 = 0.15338, / 5 = 0.030677, std 0.17515; t1 = 0.44383.
    #   Only b1 (1/2, centre 6 in (2, 24)) passes.
    # b1 is positive for both: it goes to g1, its higher IoU (1/2 > 2/5).
    # Other candidates: matches = highest-IoU ground truth (g1 for a0, a1, b2 (2/5), b3
    #   (4/38); g0 for b0 (2/5 > 1/6); IoU 0 with both, a2..a4: the first, g0).
    matches, labels = match(ATSSMatcher(topk=3))
    assert labels.tolist() == [0, 0, 0, 0, 0, 0, 1, 0, 0]
    assert matches.tolist() == [1, 1, 0, 0, 0, 0, 1, 1, 1]
    assert labels.dtype == torch.int8 and matches.dtype == torch.int64

    # The thresholds, by hand above.
    iou = torch.tensor(
        [[0, 0, 0, 0, 0, 0.4, 0.4, 0, 0], [3 / 11, 3 / 11, 0, 0, 0, 1 / 6, 0.5, 0.4, 2 / 19]]
    )
    selected = torch.tensor([[1, 1, 1, 0, 0, 1, 1, 1, 0], [1, 1, 1, 0, 0, 1, 1, 1, 0]]).bool()
    torch.testing.assert_close(
        iou_thresholds(iou, selected),
        torch.tensor([2 / 15 + math.sqrt(16 / 375), 133 / 495 + math.sqrt(5011 / 32670 / 5)]),
    )


def test_conflict_goes_to_the_highest_iou_not_to_an_index():
    # The same case with the ground truths listed in the other order: b1 goes to g1 again,
    # now index 0; alone, g0 keeps b1 (its threshold does not depend on g1).
    matches, labels = match(ATSSMatcher(topk=3), gt=[GT[1], GT[0]])
    assert labels.tolist() == [0, 0, 0, 0, 0, 0, 1, 0, 0]
    assert matches[6].item() == 0
    matches, labels = match(ATSSMatcher(topk=3), gt=[GT[0]])
    assert labels.tolist() == [0, 0, 0, 0, 0, 0, 1, 0, 0]
    assert matches.tolist() == [0] * 9


def test_invalid_candidates_are_never_selected_nor_positive():
    # b1 invalid (IoU -1 from match_candidates): it is labelled -1 and the next valid
    # candidates are selected instead.
    # g0: level 1 -> b0, b2, b3 (distances 6, 18, 26); IoUs {0, 0, 0, 2/5, 0, 0}: mean 1/15,
    #   squared deviations 5/225 + (1/3)^2 = 2/15, / 5, std 0.16330, t0 = 0.22997: b0
    #   passes the IoU test, its centre -2 is outside g0: no positive.
    # g1: level 1 -> b2, b0, b3 (9, 15, 17); IoUs {3/11, 3/11, 0, 2/5, 1/6, 2/19}: mean
    #   0.20290, std 0.14186 (unbiased), t1 = 0.34475: b2 (2/5, centre 22 in (2, 24)).
    valid = torch.ones(9, dtype=torch.bool)
    valid[6] = False
    matches, labels = match(ATSSMatcher(topk=3), valid=valid)
    assert labels.tolist() == [0, 0, 0, 0, 0, 0, -1, 1, 0]
    assert matches[7].item() == 1
    # All of a level invalid: nothing selected there; the other level still labels.
    valid = torch.tensor([True] * 5 + [False] * 4)
    _, labels = match(ATSSMatcher(topk=3), valid=valid)
    assert labels[5:].tolist() == [-1] * 4 and (labels[:5] >= 0).all()
    # The matcher itself, given valid, labels invalid candidates -1 and never positive.
    # Candidate 0 would be a perfect match (IoU 1); candidate 1 has IoU 10/14.
    inputs = MatchInputs(
        iou=torch.tensor([[-1.0, 5 / 7]]),
        gt_boxes=strips([(0.0, 10.0)]),
        candidates=strips([(0.0, 10.0), (-2.0, 12.0)]),
        valid=torch.tensor([False, True]),
    )
    matches, labels = ATSSMatcher(topk=9)(inputs)
    assert labels.tolist() == [-1, 1] and matches.tolist() == [0, 0]


def test_no_ground_truth_makes_every_candidate_negative():
    matches, labels = match(ATSSMatcher(), gt=[])
    assert labels.tolist() == [0] * 9 and matches.tolist() == [0] * 9
    valid = torch.tensor([True, False] * 4 + [True])
    matches, labels = match(ATSSMatcher(), gt=[], valid=valid)
    assert labels.tolist() == [0, -1] * 4 + [0] and matches.tolist() == [0] * 9


def test_topk_larger_than_a_level_selects_the_whole_level():
    # topk 4 > level 0's 2 candidates: both selected; level 1: the 4 nearest of 5.
    gt_centers = torch.tensor([[0.0, 0.0]])
    centers = torch.tensor([[50.0, 0], [60, 0], [1, 0], [2, 0], [3, 0], [4, 0], [90, 0]])
    selected = closest_per_level(gt_centers, centers, [2, 5], torch.ones(7, dtype=torch.bool), 4)
    assert selected.tolist() == [[True, True, True, True, True, True, False]]
    # Equal distances at the cut: the lowest indices, as a stable sort would rank them.
    inf = math.inf
    assert smallest_k(torch.tensor([[1.0, 0, 1, 1, 2], [inf, inf, 0, 5, 5]]), 2).tolist() == [
        [True, True, False, False, False],
        [False, False, True, True, False],
    ]
    values = torch.randint(0, 4, (6, 30)).float()
    for k in (1, 7, 30):
        stable = torch.zeros_like(values, dtype=torch.bool).scatter_(
            1, values.sort(dim=1, stable=True).indices[:, :k], True
        )
        assert torch.equal(smallest_k(values, k), stable)
    # The hand case with topk 9 > 5 and 4: every candidate is selected.
    # g0: IoUs 0 (x 7), 2/5, 2/5: mean 4/45, squared deviations 7 (4/45)^2 + 2 (14/45)^2 =
    #   504/2025, / 8, std 0.17638, t0 = 0.26527: b1 (b0's centre is outside).
    # g1: IoUs 3/11, 3/11, 0, 0, 0, 1/6, 1/2, 2/5, 2/19: mean 0.19082, unbiased std
    #   0.18368, t1 = 0.37450: b1 (1/2) and now b2 (2/5, centre 22 in (2, 24)).
    # b1 goes to g1 as before; b2 to g1.
    matches, labels = match(ATSSMatcher(topk=9))
    assert labels.tolist() == [0, 0, 0, 0, 0, 0, 1, 1, 0]
    assert matches[6].item() == 1 and matches[7].item() == 1
    # No levels (proposals): one level of 9 candidates, all selected again.
    _, labels = match(ATSSMatcher(topk=9), num_per_level=None)
    assert labels.tolist() == [0, 0, 0, 0, 0, 0, 1, 1, 0]


def test_unbiased_std_as_the_official_code():
    # One selected IoU 1/2 among four: mean 1/8, squared deviations 3 (1/8)^2 + (3/8)^2 =
    # 12/64; unbiased variance 12/64 / 3 = 1/16: t = 1/8 + 1/4 = 3/8 (biased: 0.34151).
    iou = torch.tensor([[0.0, 0.0, 0.0, 0.5, 0.9]])
    selected = torch.tensor([[True, True, True, True, False]])
    torch.testing.assert_close(iou_thresholds(iou, selected), torch.tensor([0.375]))
    g = torch.Generator().manual_seed(0)
    iou = torch.rand(3, 20, generator=g)
    selected = torch.rand(3, 20, generator=g) > 0.5
    expected = [iou[i][selected[i]].mean() + iou[i][selected[i]].std() for i in range(3)]
    torch.testing.assert_close(iou_thresholds(iou, selected), torch.stack(expected))
    # One selected candidate: std 0, the threshold is its IoU; none: nothing passes.
    single = iou_thresholds(
        torch.tensor([[0.3, 0.7], [0.3, 0.7]]), torch.tensor([[False, True], [False, False]])
    )
    assert single.tolist() == [pytest.approx(0.7), math.inf]


def test_levels_that_do_not_sum_to_the_candidates_name_the_config_key():
    cfg = retinanet_atss_cfg()
    matcher = build_matcher(cfg, cfg.MODEL.RETINANET.MATCHER)
    with pytest.raises(
        ValueError,
        match=r"MODEL\.RETINANET\.MATCHER\.NAME = ATSSMatcher.*"
        r"\[5, 3\] \(sum 8\) for 9 candidates",
    ):
        match(matcher, num_per_level=[5, 3])
    with pytest.raises(ValueError, match="MODEL.ATSS.TOPK"):
        ATSSMatcher(topk=0)


def retinanet_atss_cfg(*overrides: str):
    cfg = get_cfg()
    cfg.merge_from_file(ATSS_CONFIG)
    cfg.merge_from_list([*SMALL, *overrides])
    return cfg


def test_config_keys_reach_the_matcher_and_change_the_labels():
    cfg = retinanet_atss_cfg()
    assert cfg.IMPORTS == ["projects.retinanet", "projects.atss"]
    assert cfg.MODEL.RETINANET.MATCHER.NAME == "ATSSMatcher"
    assert cfg.MODEL.ATSS.TOPK == 108  # 9 positions x 12 anchors per position
    # CENTER_IN_GT_EPS -3: centres up to 3 px outside a box count as inside. In the hand
    # case b0 (centre -2, IoU 2/5 >= t0 = 0.33989) becomes positive for g0.
    cfg = retinanet_atss_cfg("MODEL.ATSS.TOPK", "3", "MODEL.ATSS.CENTER_IN_GT_EPS", "-3.0")
    matcher = build_matcher(cfg, cfg.MODEL.RETINANET.MATCHER)
    assert (matcher.topk, matcher.center_in_gt_eps) == (3, -3.0)
    matches, labels = match(matcher)
    assert labels.tolist() == [0, 0, 0, 0, 0, 1, 1, 0, 0]
    assert matches[5].item() == 0 and matches[6].item() == 1
    # TOPK 2: g0's candidates are a0, a1, b1, b0, IoUs {0, 0, 2/5, 2/5}: mean 1/5, unbiased
    # variance 4 (1/5)^2 / 3, std 0.23094, t0 = 0.43094 > 2/5: g0 has no positive (the
    # biased std, 1/5, would give t0 = 2/5 and make b0 positive). g1: a0, a1, b1, b2, IoUs
    # {3/11, 3/11, 1/2, 2/5}: t1 = 0.36136 + 0.11019 = 0.47155: b1.
    cfg = retinanet_atss_cfg("MODEL.ATSS.TOPK", "2", "MODEL.ATSS.CENTER_IN_GT_EPS", "-3.0")
    _, labels = match(build_matcher(cfg, cfg.MODEL.RETINANET.MATCHER))
    assert labels.tolist() == [0, 0, 0, 0, 0, 0, 1, 0, 0]
    # CENTER_IN_GT_EPS 4.5: b1's centre 6 is 2 px inside g0's right side and 4 px inside
    # g1's left side, not more than 4.5: no positive at all.
    cfg = retinanet_atss_cfg("MODEL.ATSS.TOPK", "3", "MODEL.ATSS.CENTER_IN_GT_EPS", "4.5")
    _, labels = match(build_matcher(cfg, cfg.MODEL.RETINANET.MATCHER))
    assert labels.tolist() == [0] * 9


def test_plugin_is_reached_through_imports_only():
    # A fresh interpreter: ATSSMatcher is unknown until a config lists projects.atss.
    script = textwrap.dedent(
        f"""
        import sys
        from detkit.config import get_cfg
        from detkit.modeling import build_matcher, build_model
        cfg = get_cfg()
        cfg.MODEL.RPN.MATCHER.NAME = "ATSSMatcher"
        try:
            build_matcher(cfg, cfg.MODEL.RPN.MATCHER)
        except KeyError as e:
            assert "MODEL.RPN.MATCHER.NAME: No component named 'ATSSMatcher'" in str(e), e
        else:
            raise AssertionError("ATSSMatcher resolved without IMPORTS")
        assert "projects.atss" not in sys.modules
        cfg = get_cfg()
        cfg.merge_from_file({ATSS_CONFIG!r})
        cfg.merge_from_list({SMALL!r})
        model = build_model(cfg)
        matcher = type(model.anchor_matcher)
        print(matcher.__module__, matcher.__name__, model.anchor_matcher.topk)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["projects.atss.matcher", "ATSSMatcher", "108"]


def finite(losses: dict[str, torch.Tensor]) -> bool:
    return all(torch.isfinite(v).item() for v in losses.values())


def test_retinanet_with_atss_trains_a_step_and_infers():
    torch.manual_seed(0)
    model = build_model(retinanet_atss_cfg())
    batch = [two_shapes_example(seed=0), two_shapes_example(height=144, width=192, seed=1)]
    # Every image with objects gets positive anchors, and every object some.
    images = model.preprocessor(batch)
    maps = [model.backbone(images.tensor)[f] for f in model.in_features]
    anchors = model.anchor_generator(maps)
    gt = model.preprocessor.ground_truth(batch)
    classes, boxes = model.label_anchors(torch.cat(anchors), gt, [len(a) for a in anchors])
    for i, instances in enumerate(gt):
        positive = (classes[i] >= 0) & (classes[i] < model.num_classes)
        assert positive.any()
        for box in instances.gt_boxes.tensor:
            assert (positive & (boxes[i] == box).all(dim=1)).any()

    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    losses = model(batch)
    assert set(losses) == {"loss_cls", "loss_box_reg"} and finite(losses)
    assert losses["loss_box_reg"].item() > 0  # positives exist
    optimizer.zero_grad()
    sum(losses.values()).backward()
    optimizer.step()
    assert finite(model(batch))

    model.eval()
    with torch.no_grad():
        outputs = model(batch)
    assert len(outputs) == 2
    for out, example in zip(outputs, batch):
        det = out["instances"]
        assert det.image_size == (example["height"], example["width"])
        assert torch.isfinite(det.pred_boxes.tensor).all()


class RecordingMatcher:
    """Calls a matcher and keeps each call's ``num_per_level`` and labels."""

    def __init__(self, matcher):
        self.matcher = matcher
        self.calls: list[tuple[list[int] | None, torch.Tensor]] = []

    def __call__(self, inputs: MatchInputs):
        matches, labels = self.matcher(inputs)
        self.calls.append((inputs.num_per_level, labels))
        return matches, labels


def test_atss_as_the_rpn_matcher_of_the_quickstart_trains_a_step():
    torch.manual_seed(0)
    cfg = get_cfg()
    cfg.merge_from_file(QUICKSTART_CONFIG)
    cfg.merge_from_list(
        ["IMPORTS", "['projects.atss']", "MODEL.RPN.MATCHER.NAME", "ATSSMatcher", *SMALL]
    )
    model = build_model(cfg)
    rpn = model.proposal_generator
    assert isinstance(rpn.anchor_matcher, ATSSMatcher)
    assert rpn.anchor_matcher.config_key == "MODEL.RPN.MATCHER.NAME"
    rpn.anchor_matcher = RecordingMatcher(rpn.anchor_matcher)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    losses = model([two_shapes_example()])
    assert finite(losses) and "loss_rpn_loc" in losses and losses["loss_rpn_loc"].item() > 0
    optimizer.zero_grad()
    sum(losses.values()).backward()
    optimizer.step()
    num_per_level, labels = rpn.anchor_matcher.calls[0]
    # One stride-16 map (MODEL.RPN.IN_FEATURES [stage4]) of 8 x 10 positions x 12 anchors.
    assert num_per_level == [8 * 10 * 12]
    assert (labels == 1).any()
