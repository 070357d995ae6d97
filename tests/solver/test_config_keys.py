"""Every SOLVER key the optimizer and the lr schedule read, set to a non-default value through
the config and checked against learning rates and SGD updates worked out by hand.

The defaults (GAMMA 0.1, WARMUP_FACTOR 0.001, BIAS_LR_FACTOR 2, MOMENTUM 0.9, decays
0.0005 / 0.0005 / 0) would each give a different number, so an optimizer or schedule that
ignored a key, or read another one, fails.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from detkit.config import get_cfg
from detkit.solver import build_lr_scheduler, build_optimizer


class ConvBN(nn.Module):
    """One conv with a bias and one BatchNorm: a parameter of each group kind."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)
        self.bn = nn.BatchNorm2d(1)


def solver_cfg(**solver: str):
    """Defaults with BASE_LR 0.1, no warm-up, and ``SOLVER.<key> <value>`` for each keyword,
    merged as command-line strings."""
    cfg = get_cfg()
    opts = {"BASE_LR": "0.1", "WARMUP_ITERS": "0", **solver}
    cfg.merge_from_list([x for key, value in opts.items() for x in (f"SOLVER.{key}", value)])
    return cfg


def lrs_by_update(cfg, num_updates: int) -> list[dict[str, float]]:
    """The lr of each group for updates 0 .. num_updates - 1, as the train loop steps them."""
    optimizer = build_optimizer(cfg, ConvBN())
    scheduler = build_lr_scheduler(cfg, optimizer)
    lrs = []
    for _ in range(num_updates):
        lrs.append({g["name"]: g["lr"] for g in optimizer.param_groups})
        optimizer.step()
        scheduler.step()
    return lrs


def test_gamma_and_steps():
    cfg = solver_cfg(STEPS="[3, 5]", GAMMA="0.5", MAX_ITER="7")
    weight = [lr["weight"] for lr in lrs_by_update(cfg, 7)]
    # Powers of two scale exactly: 0.1, then 0.1 x 0.5 from update 3, 0.1 x 0.25 from 5.
    assert weight == [0.1, 0.1, 0.1, 0.05, 0.05, 0.025, 0.025]


@pytest.mark.parametrize(
    "method, expected",
    [
        # Linear from WARMUP_FACTOR 0.2 to 1 over 4 updates: 0.2 + 0.8 * i / 4.
        ("linear", [0.2, 0.4, 0.6, 0.8, 1.0, 1.0]),
        ("constant", [0.2, 0.2, 0.2, 0.2, 1.0, 1.0]),
    ],
)
def test_warmup_factor_iters_and_method(method, expected):
    cfg = solver_cfg(WARMUP_FACTOR="0.2", WARMUP_ITERS="4", WARMUP_METHOD=method, STEPS="[]")
    weight = [lr["weight"] for lr in lrs_by_update(cfg, 6)]
    assert weight == pytest.approx([0.1 * f for f in expected], rel=1e-12)


def test_group_learning_rates_and_weight_decays():
    cfg = solver_cfg(
        BIAS_LR_FACTOR="3.0",
        WEIGHT_DECAY="0.01",
        WEIGHT_DECAY_BIAS="0.02",
        WEIGHT_DECAY_NORM="0.03",
        STEPS="[1]",
        GAMMA="0.5",
    )
    optimizer = build_optimizer(cfg, ConvBN())
    groups = {g["name"]: (g["lr"], g["weight_decay"]) for g in optimizer.param_groups}
    assert groups == {
        "weight": (0.1, 0.01),
        "bias": (pytest.approx(0.3, rel=1e-15), 0.02),  # BASE_LR x BIAS_LR_FACTOR
        "norm": (0.1, 0.03),  # norm parameters take neither the bias factor nor its decay
    }
    # After the step at update 1 every group is at half its own lr.
    assert lrs_by_update(cfg, 2)[1] == {
        "weight": 0.05,
        "bias": pytest.approx(0.15, rel=1e-15),
        "norm": 0.05,
    }


def sgd_by_hand(value: float, lr: float, decay: float, momentum: float, steps: int) -> float:
    """Independent oracle: PyTorch's SGD with a gradient of 1 at every step,
    ``v = momentum * v + (1 + decay * w)``, ``w -= lr * v``."""
    velocity = 0.0
    for step in range(steps):
        direction = 1.0 + decay * value
        velocity = direction if step == 0 else momentum * velocity + direction
        value -= lr * velocity
    return value


def test_sgd_updates_use_momentum_and_each_groups_decay():
    # Two updates of every parameter from 2.0 with gradient 1. Weight: d1 = 1.02, w1 = 1.898;
    # d2 = 1.01898, v2 = 0.5 * 1.02 + 1.01898 = 1.52898, w2 = 1.745102.
    cfg = solver_cfg(
        MOMENTUM="0.5",
        BIAS_LR_FACTOR="3.0",
        WEIGHT_DECAY="0.01",
        WEIGHT_DECAY_BIAS="0.02",
        WEIGHT_DECAY_NORM="0.03",
    )
    assert sgd_by_hand(2.0, 0.1, 0.01, 0.5, 2) == pytest.approx(1.745102, rel=1e-12)
    model = ConvBN()
    params = {
        "conv.weight": (0.1, 0.01),
        "conv.bias": (0.3, 0.02),
        "bn.weight": (0.1, 0.03),
        "bn.bias": (0.1, 0.03),
    }
    named = dict(model.named_parameters())
    with torch.no_grad():
        for name in params:
            named[name].fill_(2.0)
    optimizer = build_optimizer(cfg, model)
    for _ in range(2):
        for name in params:
            named[name].grad = torch.ones_like(named[name])
        optimizer.step()
    for name, (lr, decay) in params.items():
        expected = sgd_by_hand(2.0, lr, decay, 0.5, 2)
        assert named[name].item() == pytest.approx(expected, rel=1e-6), name


def test_adamw_beta1_is_momentum():
    cfg = solver_cfg(OPTIMIZER="AdamW", MOMENTUM="0.8")
    optimizer = build_optimizer(cfg, ConvBN())
    assert optimizer.defaults["betas"] == (0.8, 0.999)
