"""Samplers: balanced random sampling (counts, uniformity, seeds) and OHEM (top-k by loss)."""

from __future__ import annotations

import pytest
import torch

from detkit.config import get_cfg
from detkit.modeling.sampler import BalancedPositiveNegativeSampler, OHEMSampler, build_sampler


def make_labels(num_pos: int, num_neg: int, num_ignore: int = 0, seed: int = 0) -> torch.Tensor:
    """Labels 1/0/-1 in a shuffled order, so index order says nothing about the label."""
    labels = torch.tensor([1] * num_pos + [0] * num_neg + [-1] * num_ignore, dtype=torch.int8)
    order = torch.randperm(labels.numel(), generator=torch.Generator().manual_seed(seed))
    return labels[order]


def check_valid(labels: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> None:
    assert positive.dtype == negative.dtype == torch.int64
    assert (labels[positive] == 1).all() and (labels[negative] == 0).all()
    both = torch.cat([positive, negative])
    assert both.unique().numel() == both.numel()  # no repeats, disjoint


@pytest.mark.parametrize(
    "num_pos, num_neg, expected",
    [
        (300, 1000, (128, 128)),  # enough of both: half and half (paper 3.1.3)
        (10, 1000, (10, 246)),  # few positives: negatives pad the batch to 256
        (10, 20, (10, 20)),  # too few in total: a smaller batch, not padded
        (300, 5, (128, 5)),  # few negatives: positives stay capped at half
        (0, 0, (0, 0)),
    ],
)
def test_balanced_counts(num_pos, num_neg, expected):
    sampler = BalancedPositiveNegativeSampler(
        batch_size_per_image=256, positive_fraction=0.5, seed=0
    )
    labels = make_labels(num_pos, num_neg, num_ignore=50)
    positive, negative = sampler(labels)
    assert (positive.numel(), negative.numel()) == expected
    check_valid(labels, positive, negative)


def test_balanced_fraction_rounds_down():
    # Fast R-CNN: 128 RoIs, 25% foreground -> 32; 0.39 * 10 = 3.9 -> 3 (int, not round).
    labels = make_labels(100, 500)
    roi = BalancedPositiveNegativeSampler(batch_size_per_image=128, positive_fraction=0.25)
    assert [t.numel() for t in roi(labels)] == [32, 96]
    odd = BalancedPositiveNegativeSampler(batch_size_per_image=10, positive_fraction=0.39)
    assert [t.numel() for t in odd(labels)] == [3, 7]


def test_balanced_never_picks_ignored():
    labels = make_labels(5, 5, num_ignore=1000)
    sampler = BalancedPositiveNegativeSampler(batch_size_per_image=256, positive_fraction=0.5)
    positive, negative = sampler(labels)
    assert (positive.numel(), negative.numel()) == (5, 5)
    check_valid(labels, positive, negative)


def test_balanced_seed_is_reproducible_and_independent_of_global_rng():
    labels = make_labels(200, 800)

    def draws(seed: int, global_seed: int) -> list[list[int]]:
        torch.manual_seed(global_seed)
        sampler = BalancedPositiveNegativeSampler(
            batch_size_per_image=64, positive_fraction=0.5, seed=seed
        )
        return [torch.cat(sampler(labels)).tolist() for _ in range(3)]

    first = draws(seed=7, global_seed=0)
    assert draws(seed=7, global_seed=123) == first  # global RNG does not matter
    assert draws(seed=8, global_seed=0) != first  # the seed does
    assert first[0] != first[1]  # successive draws differ
    state = torch.get_rng_state()
    BalancedPositiveNegativeSampler(batch_size_per_image=64, positive_fraction=0.5, seed=7)(labels)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is not consumed


def test_balanced_without_seed_uses_global_rng():
    labels = make_labels(200, 800)
    sampler = BalancedPositiveNegativeSampler(batch_size_per_image=64, positive_fraction=0.5)
    torch.manual_seed(3)
    first = torch.cat(sampler(labels)).tolist()
    torch.manual_seed(3)
    assert torch.cat(sampler(labels)).tolist() == first
    torch.manual_seed(4)
    assert torch.cat(sampler(labels)).tolist() != first


def test_balanced_is_uniform():
    """Each of 20 positives (and 30 negatives) is chosen about equally often.

    4 of 20 positives per draw, 2,000 draws: each is expected 400 times, std 17.9; the band
    +-100 is more than 5 std wide (and the seed is fixed, so the test cannot flake).
    """
    labels = make_labels(20, 30)
    sampler = BalancedPositiveNegativeSampler(batch_size_per_image=8, positive_fraction=0.5, seed=0)
    pos_counts = torch.zeros(labels.numel())
    neg_counts = torch.zeros(labels.numel())
    for _ in range(2000):
        positive, negative = sampler(labels)
        pos_counts[positive] += 1
        neg_counts[negative] += 1
    assert pos_counts.sum() == 2000 * 4 and neg_counts.sum() == 2000 * 4
    pos_counts = pos_counts[labels == 1]
    neg_counts = neg_counts[labels == 0]  # expected 2000 * 4 / 30 = 266.7 each, std 15.2
    assert ((pos_counts - 400).abs() < 100).all(), pos_counts
    assert ((neg_counts - 2000 * 4 / 30).abs() < 80).all(), neg_counts


def test_balanced_invalid_arguments():
    with pytest.raises(ValueError, match="POSITIVE_FRACTION"):
        BalancedPositiveNegativeSampler(batch_size_per_image=8, positive_fraction=1.5)
    with pytest.raises(ValueError, match="BATCH_SIZE_PER_IMAGE"):
        BalancedPositiveNegativeSampler(batch_size_per_image=-1, positive_fraction=0.5)


def ohem_oracle(labels: list[int], losses: list[float], k: int) -> tuple[list[int], list[int]]:
    """Sort by (-loss, index) in Python, keep k labelled examples, split by label."""
    ranked = sorted((i for i in range(len(labels)) if labels[i] >= 0), key=lambda i: -losses[i])
    kept = ranked[:k]  # Python's sort is stable: equal losses keep index order
    return [i for i in kept if labels[i] == 1], [i for i in kept if labels[i] == 0]


def test_ohem_keeps_top_k_by_loss():
    generator = torch.Generator().manual_seed(0)
    labels = make_labels(30, 60, num_ignore=30)
    losses = torch.rand(labels.numel(), generator=generator)
    sampler = OHEMSampler(batch_size_per_image=25)
    positive, negative = sampler(labels, losses=losses)
    assert (positive.tolist(), negative.tolist()) == ohem_oracle(
        labels.tolist(), losses.tolist(), 25
    )
    assert positive.numel() + negative.numel() == 25
    check_valid(labels, positive, negative)


def test_ohem_ignores_minus_one_even_with_highest_loss():
    labels = torch.tensor([-1, 0, 1, -1, 0], dtype=torch.int8)
    losses = torch.tensor([9.0, 1.0, 2.0, 8.0, 3.0])
    positive, negative = OHEMSampler(batch_size_per_image=2)(labels, losses=losses)
    assert positive.tolist() == [2] and negative.tolist() == [4]
    positive, negative = OHEMSampler(batch_size_per_image=3)(labels, losses=losses)
    assert positive.tolist() == [2] and negative.tolist() == [4, 1]


def test_ohem_ties_broken_by_lower_index():
    labels = torch.tensor([0, 1, 0, 1, 0, 1], dtype=torch.int8)
    losses = torch.tensor([1.0, 2.0, 1.0, 2.0, 1.0, 2.0])
    positive, negative = OHEMSampler(batch_size_per_image=4)(labels, losses=losses)
    assert positive.tolist() == [1, 3, 5] and negative.tolist() == [0]


def test_ohem_fewer_than_k_available_keeps_all_labelled():
    labels = torch.tensor([1, -1, 0, 0], dtype=torch.int8)
    positive, negative = OHEMSampler(batch_size_per_image=128)(
        labels, losses=torch.tensor([0.1, 0.5, 0.3, 0.2])
    )
    assert positive.tolist() == [0] and negative.tolist() == [2, 3]


def test_ohem_needs_losses():
    sampler = OHEMSampler(batch_size_per_image=4)
    assert sampler.needs_losses is True
    assert BalancedPositiveNegativeSampler.needs_losses is False
    with pytest.raises(ValueError, match="must pass per-example losses"):
        sampler(torch.tensor([1, 0], dtype=torch.int8))
    with pytest.raises(ValueError, match="one loss per label"):
        sampler(torch.tensor([1, 0], dtype=torch.int8), losses=torch.zeros(3))


@pytest.mark.parametrize("node_name", ["RPN", "ROI_HEADS"])
def test_build_balanced_from_config(node_name):
    cfg = get_cfg()
    node = getattr(cfg.MODEL, node_name).SAMPLER
    node.NAME = "BalancedPositiveNegativeSampler"
    sampler = build_sampler(cfg, node)
    assert isinstance(sampler, BalancedPositiveNegativeSampler)
    assert sampler.batch_size_per_image == node.BATCH_SIZE_PER_IMAGE
    assert sampler.positive_fraction == node.POSITIVE_FRACTION
    assert (sampler.batch_size_per_image, sampler.positive_fraction) == (
        (256, 0.5) if node_name == "RPN" else (128, 0.25)
    )
    assert sampler.seed is None


def test_build_ohem_from_config():
    cfg = get_cfg()
    node = cfg.MODEL.ROI_HEADS.SAMPLER
    node.NAME = "OHEMSampler"
    node.BATCH_SIZE_PER_IMAGE = 64
    sampler = build_sampler(cfg, node)
    assert isinstance(sampler, OHEMSampler)
    assert sampler.batch_size_per_image == 64
