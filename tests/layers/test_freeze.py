"""MODEL.FROZEN_MODULES: frozen parts stay bitwise unchanged through SGD steps with weight
decay and momentum, their BatchNorm keeps its statistics, the rest trains; names and globs."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from detkit.config import get_cfg
from detkit.layers import freeze_modules_by_name
from detkit.modeling import build_model
from detkit.solver import build_optimizer
from detkit.structures import Boxes, Instances


def tiny_cfg(frozen):
    cfg = get_cfg()
    cfg.merge_from_file("configs/quickstart/shapes.yaml")
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.TINY.CHANNELS = [8, 8, 16, 16]
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 16
    cfg.MODEL.FROZEN_MODULES = frozen
    cfg.SOLVER.BASE_LR, cfg.SOLVER.WEIGHT_DECAY = 0.05, 0.1  # large: any update would show
    cfg.SOLVER.WEIGHT_DECAY_NORM = 0.1
    return cfg


def batch():
    gt = Instances(
        (96, 128),
        gt_boxes=Boxes(torch.tensor([[10.0, 12.0, 50.0, 60.0], [60.0, 20.0, 120.0, 80.0]])),
        gt_classes=torch.tensor([0, 2]),
    )
    return [{"image": torch.rand(3, 96, 128) * 255, "instances": gt} for _ in range(2)]


def test_frozen_modules_stay_bitwise_unchanged_while_the_others_train():
    torch.manual_seed(0)
    frozen = ["backbone.stage[12]", "proposal_generator.head", "roi_heads.box_head"]
    model = build_model(tiny_cfg(frozen))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = build_optimizer(tiny_cfg(frozen), model)
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    model.train()
    for _ in range(3):
        optimizer.zero_grad()
        sum(model(batch()).values()).backward()
        optimizer.step()
    after = model.state_dict()
    frozen_prefixes = (
        "backbone.stage1.",
        "backbone.stage2.",
        "proposal_generator.head.",
        "roi_heads.box_head.",
    )
    for name, parameter in model.named_parameters():
        is_frozen = name.startswith(frozen_prefixes)
        assert parameter.requires_grad is not is_frozen, name
        assert (id(parameter) in in_optimizer) is not is_frozen, name  # no decay step either
        assert parameter.grad is None or not is_frozen, name
    for name, value in after.items():
        if name.startswith(frozen_prefixes):
            assert torch.equal(value, before[name]), name  # weights and BN statistics
    # Trained: stage 3, the RPN's... nothing else of the RPN, and the box predictor.
    for name in (
        "backbone.stage3.0.conv.weight",
        "backbone.stage3.0.norm.running_mean",
        "roi_heads.box_predictor.cls_score.weight",
    ):
        assert not torch.equal(after[name], before[name]), name
    # Frozen BatchNorm computes with fixed statistics in training mode too.
    assert isinstance(model.backbone.stage1[0].norm, FrozenBatchNorm2d)
    assert isinstance(model.backbone.stage3[0].norm, nn.BatchNorm2d)
    # The box head's BatchNorm1d (no frozen 1-D type exists) is held in eval mode instead.
    norm1d = model.roi_heads.box_head.fc_norms[0]
    assert isinstance(norm1d, nn.BatchNorm1d) and not norm1d.training


def test_patterns_match_names_and_globs_and_report_the_outermost_modules():
    model = build_model(tiny_cfg([]))
    frozen = freeze_modules_by_name(model, ["backbone.stage1", "backbone.stage1.0", "roi_heads.*"])
    # stage1.0 is inside stage1; roi_heads.* matches the children (and grandchildren) of
    # roi_heads, of which the children are the outermost.
    children = [n for n, _ in model.roi_heads.named_children()]
    assert frozen == ["backbone.stage1", *[f"roi_heads.{c}" for c in children]]


def test_a_pattern_that_names_nothing_says_what_exists():
    with pytest.raises(
        ValueError,
        match=r"MODEL.FROZEN_MODULES: 'backbone.stag2' names no "
        r"module.*Did you mean 'backbone.stage2'",
    ):
        build_model(tiny_cfg(["backbone.stag2"]))
    with pytest.raises(ValueError, match=r"Modules at that level: backbone, proposal_generator"):
        build_model(tiny_cfg(["backbone_x"]))
