"""Swapping a matcher, sampler, pooler or anchor generator is one line of config."""

import os

import pytest
import torch

from detkit.config import get_cfg
from detkit.modeling import MATCHER_REGISTRY, Matcher, build_model
from detkit.modeling.anchor_generator.legacy import LegacyAnchorGenerator
from detkit.modeling.poolers.roi_pool import ROIAlign, ROIPool
from detkit.modeling.sampler.ohem import OHEMSampler
from detkit.utils.synthetic import two_shapes_example

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class ThresholdOnlyMatcher(Matcher):
    """A user's matcher: positive at IoU >= 0.5, negative below, no best-anchor rule."""

    def __init__(self, *, threshold: float):
        self.threshold = threshold

    @classmethod
    def from_config(cls, cfg, node, input_shape=None):
        return {"threshold": 0.5}

    def __call__(self, inputs):  # MatchInputs: the IoU, the boxes, the levels
        if inputs.iou.numel() == 0:
            n = inputs.iou.shape[1]
            return torch.zeros(n, dtype=torch.int64), torch.zeros(n, dtype=torch.int8)
        values, matches = inputs.iou.max(dim=0)
        return matches, (values >= self.threshold).to(torch.int8)


@pytest.fixture
def user_matcher():
    MATCHER_REGISTRY.register(ThresholdOnlyMatcher)
    yield "ThresholdOnlyMatcher"
    MATCHER_REGISTRY._obj_map.pop("ThresholdOnlyMatcher")


def build(line):
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(ROOT, "configs/quickstart/faster_rcnn_tiny.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    cfg.merge_from_list(line)
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    losses = model([two_shapes_example()])
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    return model


@pytest.mark.parametrize(
    ("line", "component", "expected_type"),
    [
        (["MODEL.ROI_HEADS.POOLER.NAME", "ROIPool"], "roi_heads.pooler", ROIPool),
        (["MODEL.ROI_HEADS.POOLER.NAME", "ROIAlign"], "roi_heads.pooler", ROIAlign),
        (
            ["MODEL.ANCHOR_GENERATOR.NAME", "LegacyAnchorGenerator"],
            "proposal_generator.anchor_generator",
            LegacyAnchorGenerator,
        ),
        (["MODEL.ROI_HEADS.SAMPLER.NAME", "OHEMSampler"], "roi_heads.sampler", OHEMSampler),
    ],
)
def test_one_line_swap(line, component, expected_type):
    model = build(line)
    obj = model
    for part in component.split("."):
        obj = getattr(obj, part)
    assert type(obj) is expected_type


def test_one_line_swap_to_a_user_registered_matcher(user_matcher):
    model = build(["MODEL.RPN.MATCHER.NAME", user_matcher])
    assert type(model.proposal_generator.anchor_matcher) is ThresholdOnlyMatcher
    # The ROI heads keep their own matcher: the nodes are independent.
    assert type(model.roi_heads.proposal_matcher).__name__ == "IoUMatcher"


def test_ohem_keeps_the_hardest_rois():
    model = build(["MODEL.ROI_HEADS.SAMPLER.NAME", "OHEMSampler"])
    heads = model.roi_heads
    example = two_shapes_example()
    gt = example["instances"]
    images = model.preprocessor([example])
    with torch.no_grad():
        feats = model.backbone(images.tensor)
        proposals, _ = model.proposal_generator(images, feats, [gt])
        maps = [feats[f] for f in heads.in_features]
        sampled = heads.label_and_sample_proposals(maps, proposals, [gt])[0]
    # Every candidate has a label here, so OHEM keeps exactly the batch size (or all).
    assert len(sampled) == min(heads.sampler.batch_size_per_image, len(proposals[0]) + 2)
