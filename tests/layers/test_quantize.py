"""Dynamic int8 fully connected layers: weights within half a quantization step, outputs
within the error the input's quantization allows, SVD halves included, and the
MODEL.ROI_BOX_HEAD.QUANTIZE key reaching the predictor and refused where it cannot work."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from detkit.config import get_cfg
from detkit.engine import DefaultPredictor
from detkit.layers import LowRankLinear, quantize_linears
from detkit.modeling import build_model
from detkit.modeling.roi_heads import quantize_box_head

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _quantized(module: nn.Module) -> list[str]:
    return [
        n
        for n, m in module.named_modules()
        if type(m).__name__ == "Linear" and "quant" in str(type(m))
    ]


def test_weights_within_half_a_step_per_output_channel():
    torch.manual_seed(0)
    linear = nn.Linear(40, 6).eval()
    with torch.no_grad():  # rows of very different magnitudes: one scale each
        linear.weight.mul_(torch.tensor([0.01, 0.1, 1.0, 10.0, 3.0, 0.5])[:, None])
    holder = nn.Sequential(linear).eval()
    weight = linear.weight.detach().clone()
    assert quantize_linears(holder) == 1
    qweight = holder[0].weight()
    scales = qweight.q_per_channel_scales().float()
    # Symmetric int8 per row: scale = max |w| / 127.5 (up to rounding), error <= scale / 2.
    torch.testing.assert_close(scales, weight.abs().amax(dim=1) / 127.5, rtol=0.02, atol=0)
    error = (qweight.dequantize() - weight).abs()
    assert bool((error <= scales[:, None] / 2 + 1e-7).all())


def test_outputs_within_the_input_quantization_error():
    torch.manual_seed(0)
    linear = nn.Linear(300, 50).eval()
    x = torch.randn(20, 300).relu() * 3.0
    holder = nn.Sequential(linear).eval()
    quantize_linears(holder)
    w = holder[0].weight().dequantize()
    exact_weights = x @ w.T + linear.bias.detach()
    # The input is quantized per call to 8 bits (7 with fbgemm's reduced range) over
    # [min(x, 0), max(x)]: each input is off by at most half a step, each output by at most
    # that times the row's L1 norm.
    step = float(x.max() - min(float(x.min()), 0.0)) / 127
    bound = step / 2 * w.abs().sum(dim=1)
    with torch.no_grad():
        y, float_y = holder(x), linear(x)
    assert bool(((y - exact_weights).abs() <= bound + 1e-4).all())
    assert float((y - float_y).abs().max()) > 0  # really quantized, not the float layer


def test_svd_halves_are_quantized_and_training_mode_is_refused():
    torch.manual_seed(0)
    head = nn.Sequential(
        LowRankLinear.from_linear(nn.Linear(30, 20), 8), nn.ReLU(), nn.Linear(20, 5)
    ).eval()
    x = torch.randn(7, 30)
    with torch.no_grad():
        reference = head(x)
        assert quantize_linears(head) == 3  # reduce, expand and the plain layer
        out = head(x)
    assert out.shape == (7, 5) and float((out - reference).abs().max()) < 0.05
    with pytest.raises(ValueError, match=r"inference.*model.eval\(\)"):
        quantize_linears(nn.Sequential(nn.Linear(3, 3)))  # training mode


def _shapes_cfg(*opts: str):
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(ROOT, "configs/quickstart/shapes.yaml"))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", *opts])
    return cfg


def test_quantize_key_reaches_the_predictor_box_head_only():
    torch.manual_seed(0)
    plain = DefaultPredictor(_shapes_cfg(), allow_random_weights=True).model
    assert _quantized(plain) == []  # the default "" keeps float layers
    torch.manual_seed(0)
    model = DefaultPredictor(
        _shapes_cfg("MODEL.ROI_BOX_HEAD.QUANTIZE", "int8"), allow_random_weights=True
    ).model
    assert _quantized(model) == ["roi_heads.box_head.fcs.0", "roi_heads.box_head.fcs.1"]
    # Same seed, same weights: the head's features agree to the quantization's error.
    pooled = torch.randn(16, 64, 7, 7).relu()
    with torch.no_grad():
        exact, approx = plain.roi_heads.box_head(pooled), model.roi_heads.box_head(pooled)
    assert float((approx - exact).abs().max()) < 0.05 * float(exact.abs().max())


def test_bad_quantize_settings_name_the_key():
    model = build_model(_shapes_cfg()).eval()
    with pytest.raises(ValueError, match="QUANTIZE 'int4'.*valid: '', 'int8'"):
        quantize_box_head(_shapes_cfg("MODEL.ROI_BOX_HEAD.QUANTIZE", "int4"), model)
    cfg = _shapes_cfg("MODEL.META_ARCHITECTURE", "ProposalNetwork")
    cfg.MODEL.ROI_BOX_HEAD.QUANTIZE = "int8"
    with pytest.raises(ValueError, match="ProposalNetwork has no roi_heads.box_head"):
        quantize_box_head(cfg, build_model(cfg).eval())


def test_training_with_quantize_is_refused():
    from detkit.engine import DefaultTrainer

    cfg = _shapes_cfg("MODEL.ROI_BOX_HEAD.QUANTIZE", "int8")
    with pytest.raises(ValueError, match="training run: int8 layers have no backward"):
        DefaultTrainer(cfg)
