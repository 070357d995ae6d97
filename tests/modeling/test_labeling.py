"""The one labelling path: what matchers receive (IoU, boxes, levels, valid candidates), the
gt_* fields carried to the sampled RoIs, and samplers refused where they cannot work."""

from __future__ import annotations

import os

import pytest
import torch

from detkit.config import get_cfg
from detkit.modeling import MATCHER_REGISTRY, build_model
from detkit.modeling.labeling import match_candidates, matched_targets
from detkit.modeling.matcher import IoUMatcher, Matcher
from detkit.structures import Boxes, Instances, pairwise_iou
from detkit.utils.synthetic import two_shapes_example

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class RecordingMatcher(Matcher):
    """IoUMatcher's RPN labels, recording every MatchInputs it is given."""

    seen: list = []

    def __init__(self):
        self.inner = IoUMatcher(
            thresholds=[0.3, 0.7], labels=[0, -1, 1], allow_low_quality_matches=True
        )

    @classmethod
    def from_config(cls, cfg, node, input_shape=None):
        return {}

    def __call__(self, inputs):
        RecordingMatcher.seen.append(inputs)
        return self.inner(inputs)


@pytest.fixture
def recording_matcher():
    MATCHER_REGISTRY.register(RecordingMatcher)
    RecordingMatcher.seen = []
    yield "RecordingMatcher"
    MATCHER_REGISTRY._obj_map.pop("RecordingMatcher")


def _cfg(*overrides):
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(ROOT, "configs/quickstart/faster_rcnn_tiny.yaml"))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", *overrides])
    return cfg


def test_invalid_candidates_are_never_matched_and_ignored():
    gt = Boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0]]))
    candidates = Boxes(
        torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0]])
    )
    matcher = IoUMatcher(thresholds=[0.3, 0.7], labels=[0, -1, 1], allow_low_quality_matches=True)
    _, labels = match_candidates(matcher, candidates, gt)
    assert labels.tolist() == [1, 1, 0]
    # The exact box is invalid (e.g. crosses the border): ignored, and the best-match rule
    # then picks the next best (IoU 0.81), not the invalid one.
    valid = torch.tensor([False, True, True])
    _, labels = match_candidates(matcher, candidates, gt, valid=valid)
    assert labels.tolist() == [-1, 1, 0]


def test_matched_targets_copy_every_gt_field():
    gt = Instances(
        (64, 64),
        gt_boxes=Boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 40.0, 40.0]])),
        gt_classes=torch.tensor([2, 0]),
        gt_attributes=torch.tensor([[1.0, 0.0], [0.0, 1.0]]),
    )
    candidates = Boxes(
        torch.tensor([[0.0, 0.0, 10.0, 9.0], [21.0, 20.0, 40.0, 40.0], [50.0, 0.0, 60.0, 10.0]])
    )
    matcher = IoUMatcher(thresholds=[0.0, 0.5], labels=[-1, 0, 1], allow_low_quality_matches=False)
    matches, labels = match_candidates(matcher, candidates, gt.gt_boxes)
    targets = matched_targets(gt, matches, labels, candidates, background_class=3)
    assert labels.tolist() == [1, 1, 0]
    assert targets["gt_classes"].tolist() == [2, 0, 3]  # the third is background (K = 3)
    assert targets["gt_attributes"].tolist() == [[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]
    assert targets["gt_boxes"].tensor[1].tolist() == [20.0, 20.0, 40.0, 40.0]
    # No ground truth: background everywhere, zero attributes, the candidates as boxes.
    empty = Instances(
        (64, 64),
        gt_boxes=Boxes(torch.zeros(0, 4)),
        gt_classes=torch.zeros(0, dtype=torch.int64),
        gt_attributes=torch.zeros(0, 2),
    )
    matches, labels = match_candidates(matcher, candidates, empty.gt_boxes)
    targets = matched_targets(empty, matches, labels, candidates, background_class=3)
    assert targets["gt_classes"].tolist() == [3, 3, 3]
    assert targets["gt_attributes"].shape == (3, 2) and not targets["gt_attributes"].any()
    assert torch.equal(targets["gt_boxes"].tensor, candidates.tensor)


def test_sampled_rois_carry_a_field_the_heads_do_not_know():
    torch.manual_seed(0)
    model = build_model(_cfg()).train()
    example = two_shapes_example()
    gt = example["instances"]
    gt.gt_attributes = torch.arange(len(gt), dtype=torch.float32)[:, None] * 10 + 1
    images = model.preprocessor([example])
    with torch.no_grad():
        features = model.backbone(images.tensor)
        proposals, _ = model.proposal_generator(images, features, [gt])
        maps = [features[f] for f in model.roi_heads.in_features]
        (sampled,) = model.roi_heads.label_and_sample_proposals(maps, proposals, [gt])
    # Independent oracle: each foreground RoI's attribute is that of its highest-IoU object.
    foreground = sampled.gt_classes < model.roi_heads.num_classes
    assert foreground.any()
    best = pairwise_iou(gt.gt_boxes, sampled.proposal_boxes).argmax(dim=0)
    assert torch.equal(sampled.gt_attributes[foreground], gt.gt_attributes[best][foreground])


def test_matchers_receive_boxes_and_levels(recording_matcher):
    cfg = _cfg(
        "MODEL.TINY.CHANNELS", "[16, 32, 64, 64]",
        "MODEL.RPN.IN_FEATURES", "[stage3, stage4]",
        "MODEL.ANCHOR_GENERATOR.SIZES", "[[16, 32], [64, 128]]",
        "MODEL.RPN.MATCHER.NAME", recording_matcher,
        "MODEL.ROI_HEADS.MATCHER.NAME", recording_matcher,
    )  # fmt: skip
    torch.manual_seed(0)
    model = build_model(cfg).train()
    example = two_shapes_example(height=96, width=160)  # stride 8: 12 x 20, stride 16: 6 x 10
    model([example])
    rpn_inputs, roi_inputs = RecordingMatcher.seen
    a = model.proposal_generator.anchor_generator.num_anchors_per_location
    assert rpn_inputs.num_per_level == [12 * 20 * a, 6 * 10 * a]
    assert len(rpn_inputs.candidates) == sum(rpn_inputs.num_per_level)
    assert torch.equal(rpn_inputs.gt_boxes.tensor, example["instances"].gt_boxes.tensor)
    assert rpn_inputs.iou.shape == (len(example["instances"]), len(rpn_inputs.candidates))
    # Proposals have no levels; the ground truth was appended to them.
    assert roi_inputs.num_per_level is None and roi_inputs.valid is None
    assert torch.equal(roi_inputs.candidates.tensor[-2:], example["instances"].gt_boxes.tensor)


@pytest.mark.parametrize("key", ["MODEL.RPN.SAMPLER.NAME"])
def test_samplers_needing_losses_are_refused_where_no_loss_exists(key):
    with pytest.raises(ValueError, match=rf"{key} is OHEMSampler.*the RPN samples before"):
        build_model(_cfg(key, "OHEMSampler"))
    # The ROI heads compute the RoI losses first: OHEM is accepted there.
    model = build_model(_cfg("MODEL.ROI_HEADS.SAMPLER.NAME", "OHEMSampler"))
    assert type(model.roi_heads.sampler).__name__ == "OHEMSampler"
