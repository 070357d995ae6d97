"""IoUMatcher: interval labels, exact thresholds, the best-anchor rule (paper 3.1.2), edge cases."""

from __future__ import annotations

import pytest
import torch

from detkit.config import get_cfg
from detkit.modeling.matcher import IoUMatcher, build_matcher


def rpn_matcher(**overrides) -> IoUMatcher:
    kwargs = dict(thresholds=[0.3, 0.7], labels=[0, -1, 1], allow_low_quality_matches=True)
    kwargs.update(overrides)
    return IoUMatcher(**kwargs)


def test_values_on_a_threshold_go_to_the_upper_interval():
    matcher = rpn_matcher(allow_low_quality_matches=False)
    iou = torch.tensor([[0.0, 0.29, 0.3, 0.5, 0.69, 0.7, 0.9]])
    matches, labels = matcher(iou)
    assert labels.tolist() == [0, 0, -1, -1, -1, 1, 1]
    assert matches.tolist() == [0] * 7
    assert matches.dtype == torch.int64 and labels.dtype == torch.int8


def test_matches_are_argmax_over_ground_truth():
    matcher = rpn_matcher(allow_low_quality_matches=False)
    iou = torch.tensor(
        [
            [0.1, 0.8, 0.5, 0.0],
            [0.9, 0.2, 0.6, 0.2],
        ]
    )
    matches, labels = matcher(iou)
    assert matches.tolist() == [1, 0, 1, 1]
    assert labels.tolist() == [1, 1, -1, 0]


def test_low_quality_rule_includes_ties_and_overrides_negatives():
    matcher = rpn_matcher()
    iou = torch.tensor(
        [
            [0.4, 0.1, 0.4, 0.2, 0.0],  # gt 0: best 0.4, tied at predictions 0 and 2
            [0.0, 0.2, 0.1, 0.8, 0.0],  # gt 1: best 0.8 at prediction 3 (already positive)
            [0.0, 0.25, 0.0, 0.0, 0.1],  # gt 2: best 0.25 (a negative IoU) at prediction 1
        ]
    )
    matches, labels = matcher(iou)
    # Interval labels would be [-1, 0, -1, 1, 0]; predictions 0, 2 (ties) and 1 become positive.
    assert labels.tolist() == [1, 1, 1, 1, 0]
    assert matches.tolist() == [0, 2, 0, 1, 2]
    without = rpn_matcher(allow_low_quality_matches=False)(iou)[1]
    assert without.tolist() == [-1, 0, -1, 1, 0]


def test_released_code_rule_gt_overlapping_nothing_makes_every_zero_iou_positive():
    iou = torch.tensor(
        [
            [0.8, 0.1, 0.0, 0.0],
            [0.0, 0.0, 0.0, 0.0],  # a ground truth that overlaps no prediction
        ]
    )
    # Minimum 0 (released code): every prediction has IoU 0 with gt 1, so all are its "best"
    # matches and positive, even prediction 1 (IoU 0.1 with gt 0: a negative otherwise).
    labels = rpn_matcher(low_quality_min_iou=0.0)(iou)[1]
    assert labels.tolist() == [1, 1, 1, 1]
    # Minimum 0.3 disables the rule for gt 1 (best 0.0) and keeps it for gt 0 (best 0.8).
    labels = rpn_matcher(low_quality_min_iou=0.3)(iou)[1]
    assert labels.tolist() == [1, 0, 0, 0]


def test_min_iou_gates_the_rule_per_ground_truth():
    iou = torch.tensor([[0.25, 0.1], [0.1, 0.35]])
    labels = rpn_matcher(low_quality_min_iou=0.3)(iou)[1]
    assert labels.tolist() == [0, 1]  # gt 0's best (0.25) is under 0.3; gt 1's (0.35) is not


def test_excluded_predictions_at_minus_one_are_never_best_matches():
    # The RPN marks anchors outside the image with IoU -1 for every ground truth.
    iou = torch.tensor([[-1.0, 0.0, 0.5], [-1.0, 0.0, 0.0]])
    labels = rpn_matcher()(iou)[1]
    assert labels.tolist() == [0, 1, 1]  # -1 is below gt 1's best (0.0): stays negative


def test_no_ground_truth_rpn_defaults_all_negative():
    matches, labels = rpn_matcher()(torch.zeros(0, 5))
    assert matches.tolist() == [0] * 5 and matches.dtype == torch.int64
    assert labels.tolist() == [0] * 5 and labels.dtype == torch.int8


def test_no_ground_truth_label_of_interval_containing_zero():
    # Released Fast R-CNN recipe [0.0, 0.5] -> [-1, 0, 1]: IoU 0 is in [0.0, 0.5): background.
    roi = IoUMatcher(thresholds=[0.0, 0.5], labels=[-1, 0, 1], allow_low_quality_matches=False)
    assert roi(torch.zeros(0, 3))[1].tolist() == [0, 0, 0]
    # Defaults of later frameworks [0.1, 0.5]: IoU 0 is below the background bound: ignored.
    lo = IoUMatcher(thresholds=[0.1, 0.5], labels=[-1, 0, 1], allow_low_quality_matches=False)
    assert lo(torch.zeros(0, 3))[1].tolist() == [-1, -1, -1]


@pytest.mark.parametrize("num_gt", [0, 3])
def test_no_predictions(num_gt):
    matches, labels = rpn_matcher()(torch.zeros(num_gt, 0))
    assert matches.shape == labels.shape == (0,)
    assert matches.dtype == torch.int64 and labels.dtype == torch.int8


def test_invalid_arguments_are_explained():
    with pytest.raises(ValueError, match="non-decreasing"):
        IoUMatcher(thresholds=[0.7, 0.3], labels=[0, -1, 1], allow_low_quality_matches=True)
    with pytest.raises(ValueError, match="one label per IoU interval"):
        IoUMatcher(thresholds=[0.3, 0.7], labels=[0, 1], allow_low_quality_matches=True)
    with pytest.raises(ValueError, match=r"-1 \(ignore\), 0 \(negative\) or 1"):
        IoUMatcher(thresholds=[0.3, 0.7], labels=[0, 2, 1], allow_low_quality_matches=True)
    with pytest.raises(ValueError, match=r"\[M ground truths, N predictions\]"):
        rpn_matcher()(torch.zeros(3))


@pytest.mark.parametrize("node_name", ["RPN", "ROI_HEADS"])
def test_build_from_config(node_name):
    cfg = get_cfg()
    node = getattr(cfg.MODEL, node_name).MATCHER
    node.NAME = "IoUMatcher"
    node.LOW_QUALITY_MIN_IOU = 0.3
    matcher = build_matcher(cfg, node)
    assert isinstance(matcher, IoUMatcher)
    assert matcher.thresholds == list(node.IOU_THRESHOLDS)
    assert matcher.labels == list(node.IOU_LABELS)
    assert matcher.allow_low_quality_matches == node.ALLOW_LOW_QUALITY_MATCHES
    assert matcher.allow_low_quality_matches == (node_name == "RPN")
    assert matcher.low_quality_min_iou == 0.3
