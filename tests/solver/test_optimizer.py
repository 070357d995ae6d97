"""SGD parameter groups: bias lr x2 and bias weight decay (PAPER.md choice 9), norm layers,
frozen and shared parameters.

Oracles: group membership written out by hand for a small model; SGD updates computed by
hand (two steps, so momentum counts); every trainable parameter of a real model counted
exactly once.
"""

import pytest
import torch
from torch import nn

from detkit.config import get_cfg
from detkit.modeling import build_model
from detkit.solver import build_optimizer, get_param_groups


class SmallNet(nn.Module):
    """conv (+bias), BatchNorm, GroupNorm, a linear layer with a frozen weight, and that
    linear layer registered a second time under another name (shared parameters)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.gn = nn.GroupNorm(2, 4)
        self.fc = nn.Linear(4, 2)
        self.fc.weight.requires_grad_(False)
        self.fc_alias = self.fc  # same module twice: its bias must be counted once


def _solver_cfg(**solver):
    cfg = get_cfg()
    cfg.SOLVER.BASE_LR = 0.01
    cfg.SOLVER.MOMENTUM = 0.9
    cfg.SOLVER.WEIGHT_DECAY = 1e-4
    cfg.SOLVER.WEIGHT_DECAY_BIAS = 5e-5
    cfg.SOLVER.WEIGHT_DECAY_NORM = 0.0
    cfg.SOLVER.BIAS_LR_FACTOR = 2.0
    for key, value in solver.items():
        cfg.SOLVER[key] = value
    return cfg


def _ids(params):
    return sorted(id(p) for p in params)


def test_groups_by_hand():
    model = SmallNet()
    optimizer = build_optimizer(_solver_cfg(), model)
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert set(groups) == {"weight", "bias", "norm"}
    # Hand-written membership: fc.weight is frozen, fc's bias appears once despite the alias.
    assert _ids(groups["weight"]["params"]) == _ids([model.conv.weight])
    assert _ids(groups["bias"]["params"]) == _ids([model.conv.bias, model.fc.bias])
    norm = [model.bn.weight, model.bn.bias, model.gn.weight, model.gn.bias]
    assert _ids(groups["norm"]["params"]) == _ids(norm)
    # lr and weight decay per kind: weights (0.01, 1e-4), biases (0.02, 5e-5), norm (0.01, 0).
    assert (groups["weight"]["lr"], groups["weight"]["weight_decay"]) == (0.01, 1e-4)
    assert (groups["bias"]["lr"], groups["bias"]["weight_decay"]) == (0.02, 5e-5)
    assert (groups["norm"]["lr"], groups["norm"]["weight_decay"]) == (0.01, 0.0)
    assert [groups[k]["lr_factor"] for k in ("weight", "bias", "norm")] == [1.0, 2.0, 1.0]
    assert optimizer.defaults["momentum"] == 0.9 and optimizer.defaults["nesterov"] is False


def test_two_sgd_steps_by_hand():
    # One weight and one bias, both 2.0 with gradient 1.0 at every step.
    # weight: d1 = 1 + 1e-4 * 2 = 1.0002, w1 = 2 - 0.01 * 1.0002 = 1.989998;
    #         d2 = 1 + 1e-4 * 1.989998, v2 = 0.9 * 1.0002 + d2 = 1.9003789998,
    #         w2 = 1.989998 - 0.01 * 1.9003789998 = 1.970994210002.
    # bias:   d1 = 1 + 5e-5 * 2 = 1.0001, b1 = 2 - 0.02 * 1.0001 = 1.979998;
    #         d2 = 1 + 5e-5 * 1.979998 = 1.0000989999, v2 = 0.9 * 1.0001 + d2 = 1.9001889999,
    #         b2 = 1.979998 - 0.02 * 1.9001889999 = 1.941994220002.
    model = nn.Linear(1, 1)
    with torch.no_grad():
        model.weight.fill_(2.0)
        model.bias.fill_(2.0)
    optimizer = build_optimizer(_solver_cfg(), model)
    for _ in range(2):
        optimizer.zero_grad()
        model.weight.grad = torch.ones_like(model.weight)
        model.bias.grad = torch.ones_like(model.bias)
        optimizer.step()
    torch.testing.assert_close(model.weight.item(), 1.970994210002, rtol=0, atol=1e-6)
    torch.testing.assert_close(model.bias.item(), 1.941994220002, rtol=0, atol=1e-6)


def test_weight_decay_bias_defaults_to_weight_decay():
    model = nn.Linear(2, 2)
    groups = get_param_groups(model, base_lr=0.1, weight_decay=0.3, bias_lr_factor=1.0)
    assert [(g["name"], g["lr"], g["weight_decay"]) for g in groups] == [
        ("weight", 0.1, 0.3),
        ("bias", 0.1, 0.3),
    ]


def test_nothing_to_train_is_an_error():
    model = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no parameter with requires_grad=True"):
        build_optimizer(_solver_cfg(), model)


def test_real_model_every_trainable_parameter_once():
    # The quickstart model: BN backbone, conv/fc heads with biases.
    cfg = get_cfg()
    cfg.merge_from_file("configs/quickstart/faster_rcnn_tiny.yaml")
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    model.backbone.stage1.requires_grad_(False)  # frozen parameters must be left out
    optimizer = build_optimizer(_solver_cfg(), model)
    grouped = [id(p) for g in optimizer.param_groups for p in g["params"]]
    named = dict(model.named_parameters())
    trainable = {id(p) for p in named.values() if p.requires_grad}
    assert len(grouped) == len(set(grouped)) == len(trainable)
    assert set(grouped) == trainable
    groups = {g["name"]: {id(p) for p in g["params"]} for g in optimizer.param_groups}
    assert id(named["backbone.stage2.0.norm.weight"]) in groups["norm"]
    assert id(named["backbone.stage2.0.norm.bias"]) in groups["norm"]
    assert id(named["roi_heads.box_predictor.cls_score.bias"]) in groups["bias"]
    assert id(named["roi_heads.box_head.fcs.0.weight"]) in groups["weight"]
    assert id(named["backbone.stage1.0.conv.weight"]) not in set(grouped)


def test_adamw_first_step_by_hand():
    # AdamW's first step moves each weight by lr * sign(grad) (m/sqrt(v) = g/|g| after bias
    # correction, eps aside), after decoupled decay w *= 1 - lr * wd:
    # weight 2 * (1 - 0.01 * 1e-4) - 0.01 = 1.989998; bias 2 * (1 - 0.02 * 5e-5) - 0.02.
    model = nn.Linear(1, 1)
    with torch.no_grad():
        model.weight.fill_(2.0)
        model.bias.fill_(2.0)
    optimizer = build_optimizer(_solver_cfg(OPTIMIZER="AdamW"), model)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.defaults["betas"] == (0.9, 0.999)
    model.weight.grad = torch.full_like(model.weight, 3.0)
    model.bias.grad = torch.full_like(model.bias, -0.5)
    optimizer.step()
    torch.testing.assert_close(model.weight.item(), 2 * (1 - 1e-6) - 0.01, rtol=0, atol=1e-6)
    torch.testing.assert_close(model.bias.item(), 2 * (1 - 1e-6) + 0.02, rtol=0, atol=1e-6)


def test_unknown_optimizer_names_the_key():
    with pytest.raises(ValueError, match="SOLVER.OPTIMIZER"):
        build_optimizer(_solver_cfg(OPTIMIZER="Adam"), nn.Linear(1, 1))
