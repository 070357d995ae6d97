"""Warm-up + multi-step lr schedule.

Oracles: learning rates computed by hand at iteration 0, during and at the end of warm-up,
and around each step; PAPER.md's VOC07 schedule (0.001, x0.1 at 50k; biases x2); the
identity "save and resume = uninterrupted run".
"""

import io

import pytest
import torch
from torch import nn

from detkit.config import get_cfg
from detkit.solver import WarmupCosineLR, WarmupMultiStepLR, build_lr_scheduler, build_optimizer


def _cfg(**solver):
    cfg = get_cfg()
    cfg.SOLVER.BASE_LR = 0.01
    cfg.SOLVER.BIAS_LR_FACTOR = 2.0
    cfg.SOLVER.MAX_ITER = 40
    cfg.SOLVER.STEPS = [20, 30]
    cfg.SOLVER.GAMMA = 0.1
    cfg.SOLVER.WARMUP_ITERS = 10
    cfg.SOLVER.WARMUP_FACTOR = 0.001
    cfg.SOLVER.WARMUP_METHOD = "linear"
    for key, value in solver.items():
        cfg.SOLVER[key] = value
    return cfg


def _build(cfg):
    model = nn.Linear(2, 1)
    optimizer = build_optimizer(cfg, model)
    return optimizer, build_lr_scheduler(cfg, optimizer)


def _run(optimizer, scheduler, num_iters):
    """What the train loop does: record the lr of each update, step, then step the schedule."""
    lrs = []
    for _ in range(num_iters):
        lrs.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return lrs


def test_linear_warmup_and_steps_by_hand():
    optimizer, scheduler = _build(_cfg())
    assert [g["name"] for g in optimizer.param_groups] == ["weight", "bias"]
    lrs = _run(optimizer, scheduler, 40)
    expected = {
        0: 0.01 * 0.001,  # warm-up starts at WARMUP_FACTOR
        5: 0.01 * (0.001 * 0.5 + 0.5),  # alpha = 5 / 10: 0.005005
        9: 0.01 * (0.001 * 0.1 + 0.9),  # alpha = 0.9: 0.009001
        10: 0.01,  # warm-up over
        19: 0.01,
        20: 0.001,  # first step: update 20 is the first one at x0.1
        29: 0.001,
        30: 0.0001,  # second step
        39: 0.0001,
    }
    for iteration, lr in expected.items():
        weight_lr, bias_lr = lrs[iteration]
        assert weight_lr == pytest.approx(lr, rel=1e-12), iteration
        assert bias_lr == pytest.approx(2 * lr, rel=1e-12), iteration  # bias lr x2 kept


def test_constant_warmup_and_no_warmup():
    lrs = _run(*_build(_cfg(WARMUP_METHOD="constant")), 11)
    assert lrs[0][0] == pytest.approx(1e-5) and lrs[9][0] == pytest.approx(1e-5)
    assert lrs[10][0] == pytest.approx(0.01)
    lrs = _run(*_build(_cfg(WARMUP_ITERS=0)), 21)
    assert lrs[0][0] == pytest.approx(0.01) and lrs[20][0] == pytest.approx(0.001)


def test_paper_voc07_schedule():
    # PAPER.md "Training": lr 0.001, x0.1 at 50,000 of 70,000 updates; bias lr x2.
    cfg = get_cfg()
    cfg.merge_from_file("configs/faster_rcnn_vgg16.yaml")
    optimizer, scheduler = _build(cfg)
    assert cfg.SOLVER.WARMUP_ITERS == 0  # released code: no warm-up
    for iteration, lr in [(0, 0.001), (49999, 0.001), (50000, 0.0001), (69999, 0.0001)]:
        scale = scheduler.lr_factor(iteration)
        assert [b * scale for b in scheduler.base_lrs] == pytest.approx([lr, 2 * lr])


@pytest.mark.parametrize("steps", [[30, 20], [20, 20], [-1, 20]])
def test_bad_steps_name_the_key(steps):
    with pytest.raises(ValueError, match="SOLVER.STEPS"):
        _build(_cfg(STEPS=steps))


def test_step_beyond_max_iter_warns(log):
    _build(_cfg(STEPS=[20, 40]))
    assert "SOLVER.STEPS [40]" in log.text and "SOLVER.MAX_ITER = 40" in log.text


def test_bad_warmup_method_names_the_key():
    with pytest.raises(ValueError, match="SOLVER.WARMUP_METHOD"):
        _build(_cfg(WARMUP_METHOD="cosine"))


def test_state_dict_round_trip_continues_the_schedule():
    reference = _run(*_build(_cfg()), 40)
    optimizer, scheduler = _build(_cfg())
    first = _run(optimizer, scheduler, 25)
    saved = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
    # Through torch.save, as in a checkpoint (weights_only: plain values only).
    buffer = io.BytesIO()
    torch.save(saved, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)

    resumed_optimizer, resumed_scheduler = _build(_cfg())
    resumed_optimizer.load_state_dict(saved["optimizer"])
    resumed_scheduler.load_state_dict(saved["scheduler"])
    assert resumed_scheduler.last_epoch == 25
    rest = _run(resumed_optimizer, resumed_scheduler, 15)
    assert first + rest == reference


def test_resume_follows_the_current_steps():
    # Only progress is saved: a run resumed with new SOLVER.STEPS follows them.
    optimizer, scheduler = _build(_cfg())
    _run(optimizer, scheduler, 25)
    state = scheduler.state_dict()
    assert set(state) == {"last_epoch", "base_lrs", "_last_lr"}
    # The saved optimizer holds lr 0.001 for iteration 25; with the second step moved to 24,
    # iteration 25 already runs at 0.0001.
    resumed_optimizer, resumed_scheduler = _build(_cfg(STEPS=[20, 24]))
    resumed_optimizer.load_state_dict(optimizer.state_dict())
    assert resumed_optimizer.param_groups[0]["lr"] == pytest.approx(0.001)
    resumed_scheduler.load_state_dict(state)
    lrs = _run(resumed_optimizer, resumed_scheduler, 2)
    assert [lr[0] for lr in lrs] == pytest.approx([0.0001, 0.0001])  # iterations 25, 26


def test_direct_construction_matches_the_formula():
    # lr = base * warmup(it) * gamma ** (#steps <= it), here with three steps and gamma 0.5.
    param = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    scheduler = WarmupMultiStepLR(
        optimizer, steps=[2, 4, 6], gamma=0.5, warmup_factor=0.25, warmup_iters=2
    )
    lrs = [lr[0] for lr in _run(optimizer, scheduler, 8)]
    assert lrs == pytest.approx([0.25, 0.625, 0.5, 0.5, 0.25, 0.25, 0.125, 0.125])


def test_cosine_schedule_by_hand():
    cfg = _cfg(LR_SCHEDULER_NAME="WarmupCosineLR", MAX_ITER=100)
    optimizer, scheduler = _build(cfg)
    assert isinstance(scheduler, WarmupCosineLR)
    lrs = _run(optimizer, scheduler, 101)
    expected = {
        # warm-up x cosine: (0.001 * 0.5 + 0.5) * (1 + cos(pi * 5 / 100)) / 2
        5: 0.01 * 0.5005 * 0.9938441702975689,
        10: 0.01 * 0.9755282581475768,  # (1 + cos(pi / 10)) / 2, warm-up over
        50: 0.005,  # half way: half the lr
        75: 0.01 * 0.1464466094067262,  # (1 + cos(3 pi / 4)) / 2
        100: 0.0,  # decayed to 0 at MAX_ITER
    }
    for iteration, lr in expected.items():
        weight_lr, bias_lr = lrs[iteration]
        assert weight_lr == pytest.approx(lr, rel=1e-12, abs=1e-15), iteration
        assert bias_lr == pytest.approx(2 * lr, rel=1e-12, abs=1e-15), iteration
    # Steps are ignored; the state round trip continues the same curve.
    resumed_optimizer, resumed = _build(cfg)
    resumed.load_state_dict(scheduler.state_dict())
    assert resumed_optimizer.param_groups[0]["lr"] == pytest.approx(lrs[100][0], abs=1e-15)


def test_unknown_scheduler_name_names_the_key():
    with pytest.raises(ValueError, match="SOLVER.LR_SCHEDULER_NAME"):
        _build(_cfg(LR_SCHEDULER_NAME="Poly"))
