"""Every member of every registry builds from the default config (with only its NAME set)
and runs a CPU forward. A newly registered component is covered here automatically."""

import pytest
import torch

from detkit.config import get_cfg
from detkit.layers import ShapeSpec
from detkit.modeling import (
    ALL_REGISTRIES,
    build_anchor_generator,
    build_backbone,
    build_box_coder,
    build_matcher,
    build_model,
    build_proposal_generator,
    build_roi_box_head,
    build_roi_heads,
    build_roi_pooler,
    build_rpn_head,
    build_sampler,
)
from detkit.modeling.matcher import MatchInputs
from detkit.structures import Boxes, ImageList, Instances, pairwise_iou

# detkit's own members only: a plugin imported by an earlier test (projects/) registers into
# the same registries, and is covered by its own project's tests.
MEMBERS = [
    (reg, name)
    for reg, registry in ALL_REGISTRIES.items()
    for name in registry.names()
    if registry.get(name).__module__.startswith("detkit.")
]


def small_cfg():
    """The defaults with a small backbone and box head, so whole models stay fast on a CPU.
    Component-specific tests below set only the NAME of the component under test."""
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.NAME = "TinyBackbone"
    cfg.MODEL.TINY.CHANNELS = [8, 8, 16, 16]
    cfg.MODEL.RPN.IN_FEATURES = ["stage4"]
    cfg.MODEL.ROI_HEADS.IN_FEATURES = ["stage4"]
    cfg.MODEL.ROI_BOX_HEAD.NAME = "ConvFCHead"
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 32
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 3
    return cfg


def gt_instances(size=(96, 128)):
    return Instances(
        size,
        gt_boxes=Boxes(torch.tensor([[10.0, 10.0, 60.0, 70.0], [64.0, 20.0, 120.0, 90.0]])),
        gt_classes=torch.tensor([0, 2]),
    )


def features_of(cfg, images):
    backbone = build_backbone(cfg)
    return backbone, backbone(images)


def run_meta_arch(name):
    cfg = small_cfg()
    cfg.MODEL.META_ARCHITECTURE = name
    model = build_model(cfg)
    inputs = [{"image": torch.rand(3, 96, 128) * 255, "instances": gt_instances()}]
    model.train()
    losses = model(inputs)
    assert losses and all(torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        assert len(model(inputs)) == 1


def run_backbone(name):
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.NAME = name
    backbone = build_backbone(cfg)
    out = backbone(torch.rand(1, 3, 64, 96))
    shapes = backbone.output_shape()
    assert set(out) == set(shapes)
    for key, spec in shapes.items():
        assert out[key].shape[1] == spec.channels
        assert out[key].shape[-1] == pytest.approx(96 / spec.stride, abs=1)


def run_anchor_generator(name):
    cfg = get_cfg()
    cfg.MODEL.ANCHOR_GENERATOR.NAME = name
    gen = build_anchor_generator(cfg, input_shape=[ShapeSpec(channels=8, stride=16)])
    (anchors,) = gen([torch.zeros(1, 8, 4, 5)])
    assert anchors.shape == (4 * 5 * gen.num_anchors_per_location, 4)


def run_box_coder(name):
    cfg = get_cfg()
    for node in (cfg.MODEL.RPN.BOX_CODER, cfg.MODEL.ROI_HEADS.BOX_CODER):
        node.NAME = name
        coder = build_box_coder(cfg, node)
        ref = torch.tensor([[0.0, 0.0, 10.0, 20.0], [5.0, 5.0, 50.0, 40.0]])
        box = torch.tensor([[1.0, 2.0, 12.0, 18.0], [0.0, 10.0, 60.0, 30.0]])
        assert torch.allclose(coder.decode(coder.encode(ref, box), ref), box, atol=1e-4)


def run_matcher(name):
    cfg = get_cfg()
    g = torch.Generator().manual_seed(0)
    corners = torch.rand(13, 2, generator=g) * 50
    boxes = Boxes(torch.cat([corners, corners + 5 + torch.rand(13, 2, generator=g) * 40], 1))
    inputs = MatchInputs(
        iou=pairwise_iou(boxes[:3], boxes[3:]),
        gt_boxes=boxes[:3],
        candidates=boxes[3:],
        num_per_level=[6, 4],
    )
    for node in (cfg.MODEL.RPN.MATCHER, cfg.MODEL.ROI_HEADS.MATCHER):
        node.NAME = name
        matches, labels = build_matcher(cfg, node)(inputs)
        assert matches.shape == labels.shape == (10,)
        assert set(labels.tolist()) <= {-1, 0, 1}


def run_sampler(name):
    cfg = get_cfg()
    for node in (cfg.MODEL.RPN.SAMPLER, cfg.MODEL.ROI_HEADS.SAMPLER):
        node.NAME = name
        sampler = build_sampler(cfg, node)
        labels = torch.tensor([1] * 50 + [0] * 500 + [-1] * 10, dtype=torch.int8)
        losses = torch.rand(len(labels)) if sampler.needs_losses else None
        pos, neg = sampler(labels, losses=losses)
        assert torch.all(labels[pos] == 1) and torch.all(labels[neg] == 0)
        assert len(pos) + len(neg) == node.BATCH_SIZE_PER_IMAGE


def run_rpn_head(name):
    cfg = get_cfg()
    cfg.MODEL.RPN.HEAD.NAME = name
    head = build_rpn_head(cfg, input_shape=[ShapeSpec(channels=8, stride=16)])
    logits, deltas = head([torch.rand(2, 8, 4, 5)])
    assert logits[0].shape == (2, 9, 4, 5) and deltas[0].shape == (2, 36, 4, 5)


def run_proposal_generator(name):
    cfg = small_cfg()
    cfg.MODEL.PROPOSAL_GENERATOR.NAME = name
    images = ImageList(torch.rand(1, 3, 96, 128), [(96, 128)])
    backbone, feats = features_of(cfg, images.tensor)
    gen = build_proposal_generator(cfg, input_shape=backbone.output_shape())
    gen.train()
    # Proposals that came with the input (a precomputed file): generators that make their
    # own ignore them, PrecomputedProposals passes them on.
    given = [
        Instances(
            (96, 128),
            proposal_boxes=Boxes(torch.tensor([[5.0, 5.0, 50.0, 60.0]])),
            objectness_logits=torch.tensor([1.0]),
        )
    ]
    proposals, losses = gen(images, feats, [gt_instances()], given)
    assert len(proposals) == 1 and all(torch.isfinite(v) for v in losses.values())
    assert len(proposals[0]) > 0


def run_roi_heads(name):
    cfg = small_cfg()
    cfg.MODEL.ROI_HEADS.NAME = name
    images = ImageList(torch.rand(1, 3, 96, 128), [(96, 128)])
    backbone, feats = features_of(cfg, images.tensor)
    heads = build_roi_heads(cfg, input_shape=backbone.output_shape())
    props = [Instances((96, 128), proposal_boxes=Boxes(torch.tensor([[5.0, 5.0, 50.0, 60.0]])))]
    heads.train()
    _, losses = heads(images, feats, props, [gt_instances()])
    assert losses and all(torch.isfinite(v) for v in losses.values())
    heads.eval()
    detections, _ = heads(images, feats, props)
    assert len(detections) == 1


def run_roi_box_head(name):
    cfg = get_cfg()
    cfg.MODEL.ROI_BOX_HEAD.NAME = name
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 64
    # Pooled RoIs as the default config produces them: 512 channels (VGG16), 7x7;
    # a head that needs another input (res5 on res4's 1024 channels) says so in its error.
    for channels, size in ((512, 7), (1024, 14)):
        try:
            head = build_roi_box_head(
                cfg, input_shape=ShapeSpec(channels=channels, height=size, width=size)
            )
        except ValueError:
            continue
        out = head(torch.rand(3, channels, size, size))
        assert out.shape == (3, head.output_shape().channels)
        return
    pytest.fail(f"ROI box head {name} builds for neither 512x7x7 nor 1024x14x14 inputs")


def run_roi_pooler(name):
    cfg = get_cfg()
    cfg.MODEL.ROI_HEADS.POOLER.NAME = name
    pooler = build_roi_pooler(cfg, input_shape=[ShapeSpec(channels=8, stride=16)])
    out = pooler([torch.rand(1, 8, 6, 8)], [Boxes(torch.tensor([[0.0, 0.0, 64.0, 48.0]]))])
    assert out.shape == (1, 8, 7, 7)


RUNNERS = {
    "META_ARCH": run_meta_arch,
    "BACKBONE": run_backbone,
    "ANCHOR_GENERATOR": run_anchor_generator,
    "BOX_CODER": run_box_coder,
    "MATCHER": run_matcher,
    "SAMPLER": run_sampler,
    "PROPOSAL_GENERATOR": run_proposal_generator,
    "RPN_HEAD": run_rpn_head,
    "ROI_HEADS": run_roi_heads,
    "ROI_BOX_HEAD": run_roi_box_head,
    "ROI_POOLER": run_roi_pooler,
}


def test_every_registry_has_a_runner_and_members():
    assert set(RUNNERS) == set(ALL_REGISTRIES)
    assert all(ALL_REGISTRIES[reg].names() for reg in ALL_REGISTRIES)


@pytest.mark.parametrize(("registry", "name"), MEMBERS, ids=[f"{r}:{n}" for r, n in MEMBERS])
def test_member_builds_from_defaults_and_runs(registry, name):
    torch.manual_seed(0)
    RUNNERS[registry](name)
