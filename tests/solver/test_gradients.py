"""Gradient clipping and the arithmetic of gradient accumulation (SOLVER.ITER_SIZE).

Oracles: a clipped gradient computed by hand (3-4-5 triangle); the identity "ITER_SIZE = 2
on two halves of a batch, each loss divided by 2, equals one step on the whole batch" for a
linear model, with momentum, weight decay, bias lr x2 and clipping active.
"""

import copy

import torch
from torch import nn

from detkit.solver import clip_gradients, get_param_groups


def test_clip_by_hand():
    a, b = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    a.grad, b.grad = torch.tensor([3.0]), torch.tensor([4.0])
    norm = clip_gradients([a, b], max_norm=1.0)
    # Total norm sqrt(3^2 + 4^2) = 5 -> every gradient scaled by 1/5.
    assert norm == 5.0
    torch.testing.assert_close(a.grad, torch.tensor([0.6]))
    torch.testing.assert_close(b.grad, torch.tensor([0.8]))


def test_clip_disabled_or_not_needed():
    p = nn.Parameter(torch.zeros(2))
    p.grad = torch.tensor([3.0, 4.0])
    assert clip_gradients([p], max_norm=0.0) is None  # SOLVER.CLIP_GRADIENTS = 0: off
    assert clip_gradients([p], max_norm=10.0) == 5.0  # below the limit: unchanged
    torch.testing.assert_close(p.grad, torch.tensor([3.0, 4.0]))


def _sgd(model):
    groups = get_param_groups(
        model, base_lr=0.1, weight_decay=1e-3, bias_lr_factor=2.0, weight_decay_bias=1e-3
    )
    return torch.optim.SGD(groups, lr=0.1, momentum=0.9)


def test_iter_size_2_equals_one_step_on_the_whole_batch():
    torch.manual_seed(0)
    inputs, targets = torch.randn(8, 3), torch.randn(8, 2)
    whole = nn.Linear(3, 2)
    accumulated = copy.deepcopy(whole)
    initial_weight = whole.weight.detach().clone()
    opt_whole, opt_accumulated = _sgd(whole), _sgd(accumulated)
    max_norm = 0.5  # small enough to clip at every update (checked below)
    iter_size = 2
    for _ in range(3):  # several updates, so the momentum buffers matter too
        opt_whole.zero_grad()
        nn.functional.mse_loss(whole(inputs), targets).backward()
        norm_whole = clip_gradients(whole.parameters(), max_norm)
        opt_whole.step()

        # What the train loop does: each pass's loss / ITER_SIZE, one step per update.
        opt_accumulated.zero_grad()
        for half in torch.chunk(torch.arange(8), iter_size):
            loss = nn.functional.mse_loss(accumulated(inputs[half]), targets[half])
            (loss / iter_size).backward()
        norm_accumulated = clip_gradients(accumulated.parameters(), max_norm)
        opt_accumulated.step()

        assert norm_whole > max_norm
        torch.testing.assert_close(norm_accumulated, norm_whole, rtol=1e-5, atol=0)
    torch.testing.assert_close(accumulated.weight, whole.weight, rtol=0, atol=1e-6)
    torch.testing.assert_close(accumulated.bias, whole.bias, rtol=0, atol=1e-6)
    assert (whole.weight - initial_weight).abs().min() > 1e-3  # the updates did move it
