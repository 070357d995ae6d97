"""Truncated SVD of fully connected layers: exact at full rank, the Eckart-Young error below
it, and the box head's SVD_RANKS key building the factorized layers."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from detkit.config import get_cfg
from detkit.layers import LowRankLinear, factorize_linears
from detkit.modeling import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_full_rank_reproduces_the_layer():
    torch.manual_seed(0)
    linear = nn.Linear(12, 7)
    factorized = LowRankLinear.from_linear(linear, rank=7)  # min(in, out): exact
    x = torch.randn(5, 12)
    torch.testing.assert_close(factorized(x), linear(x), atol=1e-5, rtol=1e-5)
    assert factorized.reduce.weight.shape == (7, 12) and factorized.expand.weight.shape == (7, 7)
    assert factorized.reduce.bias is None
    torch.testing.assert_close(factorized.expand.bias, linear.bias)


def test_truncation_error_is_the_next_singular_value():
    # Eckart-Young: the spectral norm of W - W_r is the (r+1)-th singular value of W.
    torch.manual_seed(0)
    linear = nn.Linear(20, 10, bias=False)
    singular = torch.linalg.svdvals(linear.weight.detach().double())
    for rank in (1, 3, 9):
        factorized = LowRankLinear.from_linear(linear, rank)
        product = (factorized.expand.weight @ factorized.reduce.weight).detach().double()
        error = torch.linalg.matrix_norm(linear.weight.detach().double() - product, ord=2)
        assert float(error) == pytest.approx(float(singular[rank]), rel=1e-5)
        assert factorized.expand.bias is None
    with pytest.raises(ValueError, match=r"\[1, 10\].*SVD_RANKS"):
        LowRankLinear.from_linear(linear, 11)


def test_factorize_linears_replaces_in_order_and_checks_the_count():
    head = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 4), nn.Linear(4, 2))
    assert factorize_linears(head, [3, 2]) == 2
    assert [type(m).__name__ for m in head] == ["LowRankLinear", "ReLU", "LowRankLinear", "Linear"]
    assert (head[0].rank, head[2].rank) == (3, 2)
    with pytest.raises(ValueError, match="SVD_RANKS has 3 ranks.*2 fully connected"):
        factorize_linears(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4)), [2, 2, 2])


def test_svd_ranks_key_builds_the_factorized_head():
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(ROOT, "configs/quickstart/faster_rcnn_tiny.yaml"))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.ROI_BOX_HEAD.SVD_RANKS", "[16, 8]"])
    head = build_model(cfg).roi_heads.box_head
    fc6, fc7 = head.fcs
    assert isinstance(fc6, LowRankLinear) and isinstance(fc7, LowRankLinear)
    assert (fc6.in_features, fc6.rank, fc6.out_features) == (64 * 7 * 7, 16, 256)
    assert (fc7.rank, fc7.out_features) == (8, 256)
    cfg.MODEL.ROI_BOX_HEAD.SVD_RANKS = []  # the default: plain layers
    assert all(type(fc) is nn.Linear for fc in build_model(cfg).roi_heads.box_head.fcs)
