"""DeltaXYWHBoxCoder: Eq. 2 by hand, round trips in both width conventions, weights, clamp."""

from __future__ import annotations

import math

import pytest
import torch

from detkit.config import get_cfg
from detkit.modeling.box_coder import DeltaXYWHBoxCoder, build_box_coder

LOG2 = math.log(2.0)


def random_boxes(n: int, generator: torch.Generator) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=generator, dtype=torch.float64) * 500
    wh = torch.rand(n, 2, generator=generator, dtype=torch.float64) * 300 + 2
    return torch.cat([xy, xy + wh], dim=1)


def test_eq2_by_hand_modern():
    coder = DeltaXYWHBoxCoder(weights=(1, 1, 1, 1))
    # Reference: centre (5, 10), size 10 x 20. Target: centre (12, 24), size 20 x 40.
    reference = torch.tensor([[0.0, 0.0, 10.0, 20.0], [10.0, 10.0, 20.0, 20.0]])
    target = torch.tensor([[2.0, 4.0, 22.0, 44.0], [10.0, 10.0, 20.0, 20.0]])
    deltas = coder.encode(reference, target)
    expected = torch.tensor([[0.7, 0.7, LOG2, LOG2], [0.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(deltas, expected)


def test_eq2_by_hand_legacy_plus_one():
    coder = DeltaXYWHBoxCoder(weights=(1, 1, 1, 1), legacy_plus_one=True)
    # +1 widths: reference 10 x 20, centre (0 + 5, 0 + 10); target 20 x 40, centre (12, 24).
    reference = torch.tensor([[0.0, 0.0, 9.0, 19.0]])
    target = torch.tensor([[2.0, 4.0, 21.0, 43.0]])
    torch.testing.assert_close(
        coder.encode(reference, target), torch.tensor([[0.7, 0.7, LOG2, LOG2]])
    )
    # Decoding the hand deltas gives the target back, x2 = centre + w / 2 - 1.
    torch.testing.assert_close(
        coder.decode(torch.tensor([[0.7, 0.7, LOG2, LOG2]]), reference), target
    )


def test_decode_by_hand_modern():
    coder = DeltaXYWHBoxCoder(weights=(1, 1, 1, 1))
    reference = torch.tensor([[0.0, 0.0, 10.0, 20.0]])
    # Centre moves by (0.5 * 10, -0.5 * 20) to (10, 0); size doubles in x, halves in y.
    boxes = coder.decode(torch.tensor([[0.5, -0.5, LOG2, -LOG2]]), reference)
    torch.testing.assert_close(boxes, torch.tensor([[0.0, -5.0, 20.0, 5.0]]))


@pytest.mark.parametrize("legacy_plus_one", [False, True])
@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_round_trip_class_specific(legacy_plus_one, weights):
    generator = torch.Generator().manual_seed(0)
    coder = DeltaXYWHBoxCoder(weights=weights, legacy_plus_one=legacy_plus_one)
    num_boxes, num_classes = 50, 3
    reference = random_boxes(num_boxes, generator)
    targets = [random_boxes(num_boxes, generator) for _ in range(num_classes)]
    deltas = torch.cat([coder.encode(reference, t) for t in targets], dim=1)  # [N, 4K]
    assert deltas.shape == (num_boxes, 4 * num_classes)
    decoded = coder.decode(deltas, reference)
    torch.testing.assert_close(decoded, torch.cat(targets, dim=1), rtol=0, atol=1e-9)


def test_roi_weights_are_targets_divided_by_0_1_and_0_2():
    generator = torch.Generator().manual_seed(1)
    reference, target = random_boxes(20, generator), random_boxes(20, generator)
    unit = DeltaXYWHBoxCoder(weights=(1, 1, 1, 1)).encode(reference, target)
    roi = DeltaXYWHBoxCoder(weights=(10, 10, 5, 5)).encode(reference, target)
    stds = torch.tensor([0.1, 0.1, 0.2, 0.2], dtype=torch.float64)
    torch.testing.assert_close(roi, unit / stds)
    # Decoding divides by the weights: weighted deltas give the same boxes as unit deltas.
    torch.testing.assert_close(
        DeltaXYWHBoxCoder(weights=(10, 10, 5, 5)).decode(roi, reference),
        DeltaXYWHBoxCoder(weights=(1, 1, 1, 1)).decode(unit, reference),
    )


def test_huge_dw_is_clamped_not_inf():
    coder = DeltaXYWHBoxCoder(weights=(1, 1, 1, 1))
    reference = torch.tensor([[0.0, 0.0, 16.0, 16.0]])
    boxes = coder.decode(torch.tensor([[0.0, 0.0, 1e4, 1e4]]), reference)
    assert torch.isfinite(boxes).all()
    # Clamp at log(1000 / 16): at most 1000 pixels wide for a 16-pixel reference.
    torch.testing.assert_close(boxes, torch.tensor([[-492.0, -492.0, 508.0, 508.0]]))


def test_clamp_applies_after_dividing_by_weights():
    coder = DeltaXYWHBoxCoder(weights=(1, 1, 5, 5), scale_clamp=1.0)
    reference = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    # dw = 4 / 5 = 0.8 is under the clamp; dw = 50 / 5 = 10 is clamped to 1.
    boxes = coder.decode(torch.tensor([[0.0, 0.0, 4.0, 50.0]]), reference)
    width, height = boxes[0, 2] - boxes[0, 0], boxes[0, 3] - boxes[0, 1]
    assert width.item() == pytest.approx(10 * math.exp(0.8), rel=1e-6)
    assert height.item() == pytest.approx(10 * math.e, rel=1e-6)


def test_empty_inputs():
    coder = DeltaXYWHBoxCoder(weights=(10, 10, 5, 5))
    assert coder.encode(torch.zeros(0, 4), torch.zeros(0, 4)).shape == (0, 4)
    assert coder.decode(torch.zeros(0, 8), torch.zeros(0, 4)).shape == (0, 8)


def test_shape_errors():
    coder = DeltaXYWHBoxCoder(weights=(1, 1, 1, 1))
    with pytest.raises(ValueError, match=r"\[N, 4 \* K\]"):
        coder.decode(torch.zeros(3, 6), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="same shape"):
        coder.encode(torch.zeros(3, 4), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="4 positive weights"):
        DeltaXYWHBoxCoder(weights=(1, 1, 1))


@pytest.mark.parametrize("node_name", ["RPN", "ROI_HEADS"])
def test_build_from_config(node_name):
    cfg = get_cfg()
    cfg.MODEL.LEGACY_PLUS_ONE = True
    node = getattr(cfg.MODEL, node_name).BOX_CODER
    node.NAME = "DeltaXYWHBoxCoder"
    coder = build_box_coder(cfg, node)
    assert isinstance(coder, DeltaXYWHBoxCoder)
    assert coder.weights == tuple(node.WEIGHTS)
    assert coder.weights == ((1.0,) * 4 if node_name == "RPN" else (10.0, 10.0, 5.0, 5.0))
    assert coder.scale_clamp == node.SCALE_CLAMP == pytest.approx(math.log(1000 / 16))
    assert coder.legacy_plus_one is True
