"""The separable RoIAlign agrees with torchvision's kernel (values and gradients)."""

import pytest
import torch
from torchvision.ops import roi_align

from detkit.layers.roi_align_separable import roi_align_separable, roi_align_weights


def random_case(seed, num_images=2, channels=5, height=9, width=13, per_image=(7, 0)):
    g = torch.Generator().manual_seed(seed)
    feature = torch.randn(num_images, channels, height, width, generator=g, dtype=torch.float64)
    boxes = []
    for count in per_image[:num_images]:
        # Boxes in input pixels at stride 8, some reaching past the map, some tiny.
        xy = (
            torch.rand(count, 2, generator=g, dtype=torch.float64)
            * torch.tensor([width * 8.0, height * 8.0], dtype=torch.float64)
            - 8
        )
        wh = torch.rand(count, 2, generator=g, dtype=torch.float64) * 60 + 0.5
        boxes.append(torch.cat([xy, xy + wh], dim=1))
    return feature, boxes


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [1, 2, 3])
def test_values_and_gradients_match_torchvision(aligned, sampling_ratio):
    feature, boxes = random_case(sampling_ratio)
    mine_input = feature.clone().requires_grad_(True)
    theirs_input = feature.clone().requires_grad_(True)
    mine = roi_align_separable(mine_input, boxes, 4, 1 / 8, sampling_ratio, aligned)
    theirs = roi_align(theirs_input, boxes, 4, 1 / 8, sampling_ratio, aligned)
    assert mine.shape == theirs.shape == (7, 5, 4, 4)
    assert torch.allclose(mine, theirs, atol=1e-10)
    weights = torch.randn_like(mine)
    (mine * weights).sum().backward()
    (theirs * weights).sum().backward()
    assert torch.allclose(mine_input.grad, theirs_input.grad, atol=1e-10)


def test_weights_by_hand():
    # One RoI from 0.25 to 2.25 on a 3-cell axis, one bin, two samples: at 0.75 and 1.75.
    # 0.75 -> 0.25 * cell 0 + 0.75 * cell 1; 1.75 -> 0.25 * cell 1 + 0.75 * cell 2; mean.
    w = roi_align_weights(torch.tensor([0.25]), torch.tensor([2.0]), 1, 2, 3)
    assert torch.allclose(w, torch.tensor([[[0.125, 0.5, 0.375]]]))
    # A sample more than one cell outside contributes nothing; within one cell, the border.
    w = roi_align_weights(torch.tensor([-3.0]), torch.tensor([2.5]), 1, 1, 3)  # at -1.75
    assert torch.equal(w, torch.zeros(1, 1, 3))
    w = roi_align_weights(torch.tensor([-1.0]), torch.tensor([1.0]), 1, 1, 3)  # at -0.5
    assert torch.equal(w, torch.tensor([[[1.0, 0.0, 0.0]]]))


def test_empty_and_sampling_ratio_errors():
    feature, boxes = random_case(0, per_image=(0, 0))
    assert roi_align_separable(feature, boxes, 7, 1 / 8, 2).shape == (0, 5, 7, 7)
    with pytest.raises(ValueError, match="sampling_ratio > 0"):
        roi_align_separable(feature, boxes, 7, 1 / 8, 0)


def test_pooler_implementations_agree():
    from detkit.modeling.poolers.roi_pool import ROIAlign
    from detkit.structures import Boxes

    feature, boxes = random_case(5)
    kwargs = dict(output_size=7, spatial_scale=1 / 8, in_channels=5, sampling_ratio=2)
    fast = ROIAlign(implementation="separable", **kwargs)
    reference = ROIAlign(implementation="torchvision", **kwargs)
    assert ROIAlign(implementation="auto", **kwargs)._use_separable(feature)
    assert not ROIAlign(implementation="auto", **{**kwargs, "sampling_ratio": 0})._use_separable(
        feature
    )
    out = fast([feature], [Boxes(b) for b in boxes])
    assert torch.allclose(out, reference([feature], [Boxes(b) for b in boxes]), atol=1e-10)
    with pytest.raises(ValueError, match="SAMPLING_RATIO"):
        ROIAlign(implementation="separable", **{**kwargs, "sampling_ratio": 0})


@pytest.mark.parametrize("implementation", ["separable", "torchvision"])
def test_aligned_flag_by_hand_at_stride_2(implementation):
    # Channel 0 holds each cell's x index, channel 1 its y index, so a bilinear sample at
    # (x, y) reads exactly (x, y). Box (2, 4, 10, 8) in input pixels at stride 2 is cells
    # (1, 2) to (5, 4); 2 x 2 bins of 2 x 1 cells, one sample each at the bin centre:
    # x = 2, 4 and y = 2.5, 3.5 without the shift; half a cell less with it.
    ys, xs = torch.meshgrid(torch.arange(6.0), torch.arange(8.0), indexing="ij")
    feature = torch.stack([xs, ys])[None]
    box = [torch.tensor([[2.0, 4.0, 10.0, 8.0]])]
    function = roi_align_separable if implementation == "separable" else roi_align
    unaligned = function(feature, box, 2, 0.5, 1, False)[0]
    aligned = function(feature, box, 2, 0.5, 1, True)[0]
    assert unaligned.tolist() == [[[2.0, 4.0], [2.0, 4.0]], [[2.5, 2.5], [3.5, 3.5]]]
    assert aligned.tolist() == [[[1.5, 3.5], [1.5, 3.5]], [[2.0, 2.0], [3.0, 3.0]]]
