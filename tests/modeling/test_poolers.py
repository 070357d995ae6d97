"""RoI poolers: hand-computed bins (strides 1, 8, 16, 32; RoIAlign's half-pixel shift and
sampling ratio in both implementations), agreement with whole-map pooling, image order."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from detkit.config import get_cfg
from detkit.layers import ShapeSpec
from detkit.modeling.poolers import ROIAlign, ROIPool, build_roi_pooler
from detkit.structures import Boxes


def boxes(*rows: list[float]) -> Boxes:
    return Boxes(torch.tensor(rows, dtype=torch.float32).reshape(-1, 4))


def test_roi_pool_hand_computed_2x2():
    feature = torch.arange(16.0).reshape(1, 1, 4, 4)
    pooler = ROIPool(output_size=2, spatial_scale=1.0, in_channels=1)
    out = pooler([feature], [boxes([0, 0, 3, 3])])  # cells 0..3 inclusive: 2x2 bins of 2x2
    assert out.tolist() == [[[[5.0, 7.0], [13.0, 15.0]]]]  # max of each quadrant
    out = pooler([feature], [boxes([2, 0, 3, 1])])  # the top-right 2x2 block, one cell per bin
    assert out.tolist() == [[[[2.0, 3.0], [6.0, 7.0]]]]


def test_roi_pool_of_whole_map_is_adaptive_max_pool_with_stride_16():
    generator = torch.Generator().manual_seed(0)
    feature = torch.randn(1, 3, 7, 7, generator=generator)
    pooler = ROIPool(output_size=3, spatial_scale=1 / 16, in_channels=3)
    # Box edges rounded to the nearest cell: 88 / 16 = 5.5 rounds to 6, so the box covers
    # cells 0..6, the whole map (truncation would stop at 5); 87 / 16 = 5.44 rounds to 5.
    out = pooler([feature], [boxes([0, 0, 88, 88])])
    torch.testing.assert_close(out, F.adaptive_max_pool2d(feature, 3))
    out = pooler([feature], [boxes([0, 0, 87, 87])])
    torch.testing.assert_close(out, F.adaptive_max_pool2d(feature[..., :6, :6], 3))


@pytest.mark.parametrize("sampling_ratio", [1, 2])
def test_roi_align_aligned_on_pixel_blocks_is_average_pool(sampling_ratio):
    # With aligned=True pixel i covers [i, i + 1): a box (0, 0, 4, 4) has 2x2 bins of 2x2
    # pixels. One sample at a bin centre interpolates its 4 pixels equally; two samples per
    # side fall on pixel centres. Either way each bin is the mean of its 4 pixels.
    generator = torch.Generator().manual_seed(1)
    feature = torch.randn(1, 2, 4, 4, generator=generator)
    pooler = ROIAlign(
        output_size=2, spatial_scale=1.0, in_channels=2, sampling_ratio=sampling_ratio, aligned=True
    )
    out = pooler([feature], [boxes([0, 0, 4, 4])])
    torch.testing.assert_close(out, F.avg_pool2d(feature, 2))


def position_map(height: int, width: int) -> torch.Tensor:
    """``[1, 2, H, W]``: channel 0 holds each cell's x index, channel 1 its y index. Bilinear
    interpolation of these ramps is exact: a sample at (x, y) reads (x, y)."""
    ys, xs = torch.meshgrid(torch.arange(float(height)), torch.arange(float(width)), indexing="ij")
    return torch.stack([xs, ys])[None]


# implementation "torchvision" is torchvision.ops.roi_align (the kernel "auto" picks on GPUs
# or with adaptive sampling); "separable" is detkit.layers.roi_align_separable.
@pytest.mark.parametrize("implementation", ["separable", "torchvision"])
def test_roi_align_aligned_flag_by_hand(implementation):
    # Box (0, 0, 4, 4), 2 x 2 bins of 2 cells, one sample per bin at the bin centre. Without
    # the half-pixel shift the centres are at 1 and 3; with it (pixel i covers [i, i + 1)),
    # at 0.5 and 2.5, in x and in y.
    feature = position_map(5, 5)
    kwargs = dict(
        output_size=2,
        spatial_scale=1.0,
        in_channels=2,
        sampling_ratio=1,
        implementation=implementation,
    )
    unaligned = ROIAlign(aligned=False, **kwargs)([feature], [boxes([0, 0, 4, 4])])
    aligned = ROIAlign(aligned=True, **kwargs)([feature], [boxes([0, 0, 4, 4])])
    assert unaligned[0].tolist() == [[[1.0, 3.0], [1.0, 3.0]], [[1.0, 1.0], [3.0, 3.0]]]
    assert aligned[0].tolist() == [[[0.5, 2.5], [0.5, 2.5]], [[0.5, 0.5], [2.5, 2.5]]]
    # A box of half a pixel, (1, 2, 1.5, 2.5), one bin: the original RoIAlign widens it to
    # one pixel, sampled at (1.5, 2.5); the aligned one keeps it, (0.5, 1.5) to (1, 2) after
    # the shift, sampled at its centre (0.75, 1.75).
    kwargs["output_size"] = 1
    small = boxes([1, 2, 1.5, 2.5])
    assert ROIAlign(aligned=False, **kwargs)([feature], [small]).flatten().tolist() == [1.5, 2.5]
    assert ROIAlign(aligned=True, **kwargs)([feature], [small]).flatten().tolist() == [0.75, 1.75]


@pytest.mark.parametrize("stride", [8, 32])
@pytest.mark.parametrize(
    "name, implementation, expected",
    [
        # Cells 2..6 x 3..7 after rounding; bins of 2.5 cells: x cells {2, 3, 4} and
        # {4, 5, 6}, y cells {3, 4, 5} and {5, 6, 7}: the max is the last index of each.
        ("ROIPool", "auto", [[[4, 6], [4, 6]], [[5, 5], [7, 7]]]),
        # From (1.5, 2.5) to (5.5, 6.5) after the half-cell shift; bin centres at x = 2.5,
        # 4.5 and y = 3.5, 5.5.
        ("ROIAlign", "separable", [[[2.5, 4.5], [2.5, 4.5]], [[3.5, 3.5], [5.5, 5.5]]]),
        ("ROIAlign", "torchvision", [[[2.5, 4.5], [2.5, 4.5]], [[3.5, 3.5], [5.5, 5.5]]]),
    ],
)
def test_pooled_cells_follow_the_stride_from_config(stride, name, implementation, expected):
    # The RoI covers feature cells (2, 3) to (6, 7) of a map of stride 8 or 32: input
    # pixels (2, 3, 6, 7) x stride. The map's values are the cells' x and y indices.
    cfg = get_cfg()
    cfg.merge_from_list([
        "MODEL.ROI_HEADS.POOLER.NAME", name,
        "MODEL.ROI_HEADS.POOLER.RESOLUTION", "2",
        "MODEL.ROI_HEADS.POOLER.SAMPLING_RATIO", "1",
        "MODEL.ROI_HEADS.POOLER.IMPLEMENTATION", implementation,
    ])  # fmt: skip
    pooler = build_roi_pooler(cfg, input_shape=[ShapeSpec(channels=2, stride=stride)])
    assert pooler.spatial_scale == 1 / stride
    out = pooler([position_map(10, 12)], [boxes([2 * stride, 3 * stride, 6 * stride, 7 * stride])])
    assert out[0].tolist() == expected


@pytest.mark.parametrize("implementation", ["separable", "torchvision"])
def test_sampling_ratio_from_config(implementation):
    # Squared x index, 4 x 4 map, box (0, 0, 4, 4): one bin per side, [-0.5, 3.5) after the
    # shift. Three samples per side, at x = 1/6, 3/2, 17/6, read 1/6, 1 + 3/2, 4 + 25/6
    # (linear between 0, 1, 4, 9): mean 65/18 = 3.61. Sampling ratio 2 (x = 0.5, 2.5) and
    # adaptive sampling (4 samples, x = 0 .. 3) give 3.5, ratio 1 (x = 1.5) 2.5.
    feature = (torch.arange(4.0) ** 2).repeat(4, 1)[None, None]
    cfg = get_cfg()
    cfg.merge_from_list([
        "MODEL.ROI_HEADS.POOLER.NAME", "ROIAlign",
        "MODEL.ROI_HEADS.POOLER.RESOLUTION", "1",
        "MODEL.ROI_HEADS.POOLER.SAMPLING_RATIO", "3",
        "MODEL.ROI_HEADS.POOLER.IMPLEMENTATION", implementation,
    ])  # fmt: skip
    pooler = build_roi_pooler(cfg, input_shape=[ShapeSpec(channels=1, stride=1)])
    out = pooler([feature], [boxes([0, 0, 4, 4])])
    assert out.item() == pytest.approx(65 / 18, rel=1e-6)


@pytest.mark.parametrize("pooler_cls", [ROIPool, ROIAlign])
def test_rois_come_out_in_image_order_from_their_own_image(pooler_cls):
    generator = torch.Generator().manual_seed(2)
    features = torch.randn(3, 2, 8, 8, generator=generator)
    pooler = pooler_cls(output_size=2, spatial_scale=0.5, in_channels=2)
    per_image = [boxes([0, 0, 7, 7], [4, 2, 15, 9]), boxes(), boxes([2, 2, 13, 13])]
    out = pooler([features], per_image)
    assert out.shape == (3, 2, 2, 2)
    # Oracle: pool each image alone (batch of one) and stack in image order.
    singles = [pooler([features[i : i + 1]], [b]) for i, b in enumerate(per_image) if len(b) > 0]
    torch.testing.assert_close(out, torch.cat(singles))
    assert not torch.allclose(out[2], pooler([features[:1]], [per_image[2]])[0])


@pytest.mark.parametrize("pooler_cls", [ROIPool, ROIAlign])
def test_empty_boxes(pooler_cls):
    pooler = pooler_cls(output_size=7, spatial_scale=1 / 16, in_channels=3)
    out = pooler([torch.zeros(2, 3, 5, 5)], [boxes(), boxes()])
    assert out.shape == (0, 3, 7, 7)
    assert pooler.output_shape() == ShapeSpec(channels=3, height=7, width=7)


def test_forward_errors():
    pooler = ROIPool(output_size=2, spatial_scale=1.0, in_channels=3)
    with pytest.raises(ValueError, match="exactly one feature map"):
        pooler([torch.zeros(1, 3, 4, 4)] * 2, [boxes()])
    with pytest.raises(ValueError, match="one Boxes per image"):
        pooler([torch.zeros(2, 3, 4, 4)], [boxes()])
    with pytest.raises(ValueError, match="3 channels"):
        pooler([torch.zeros(1, 4, 4, 4)], [boxes()])


def test_build_with_two_maps_is_an_error():
    cfg = get_cfg()
    shapes = [ShapeSpec(channels=4, stride=8), ShapeSpec(channels=4, stride=16)]
    with pytest.raises(ValueError, match="exactly one feature map"):
        build_roi_pooler(cfg, input_shape=shapes)


@pytest.mark.parametrize("name", ["ROIPool", "ROIAlign"])
def test_build_from_config(name):
    cfg = get_cfg()
    node = cfg.MODEL.ROI_HEADS.POOLER
    node.NAME = name
    node.SAMPLING_RATIO = 2
    node.ALIGNED = False
    pooler = build_roi_pooler(cfg, node, input_shape=[ShapeSpec(channels=5, stride=16)])
    assert type(pooler).__name__ == name
    assert pooler.output_size == node.RESOLUTION == 7
    assert pooler.spatial_scale == 1 / 16
    assert pooler.in_channels == 5
    assert pooler.output_shape() == ShapeSpec(channels=5, height=7, width=7)
    if name == "ROIAlign":
        assert pooler.sampling_ratio == 2 and pooler.aligned is False


def test_concat_roi_align_is_each_maps_roi_align_side_by_side():
    from torchvision.ops import roi_align

    from detkit.modeling.poolers import ConcatROIAlign

    g = torch.Generator().manual_seed(0)
    fine, coarse = torch.randn(2, 3, 16, 20, generator=g), torch.randn(2, 5, 8, 10, generator=g)
    rois = [boxes([8, 8, 60, 70]), boxes([0, 4, 30, 40], [3, 3, 120, 100])]
    pooler = ConcatROIAlign(
        output_size=4, spatial_scales=[1 / 8, 1 / 16], in_channels=[3, 5], sampling_ratio=2
    )
    out = pooler([fine, coarse], rois)
    # Oracle: torchvision's RoIAlign on each map with its own scale, channels side by side.
    tensors = [b.tensor for b in rois]
    expected = torch.cat(
        [
            roi_align(fine, tensors, 4, 1 / 8, sampling_ratio=2, aligned=True),
            roi_align(coarse, tensors, 4, 1 / 16, sampling_ratio=2, aligned=True),
        ],
        dim=1,
    )
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert pooler.output_shape() == ShapeSpec(channels=8, height=4, width=4)
    with pytest.raises(ValueError, match="MODEL.ROI_HEADS.IN_FEATURES"):
        pooler([fine], rois)


def test_concat_roi_align_from_config():
    cfg = get_cfg()
    node = cfg.MODEL.ROI_HEADS.POOLER
    node.NAME, node.SAMPLING_RATIO = "ConcatROIAlign", 2
    shapes = [ShapeSpec(channels=4, stride=8), ShapeSpec(channels=6, stride=16)]
    pooler = build_roi_pooler(cfg, node, input_shape=shapes)
    assert [p.spatial_scale for p in pooler.poolers] == [1 / 8, 1 / 16]
    assert pooler.output_shape() == ShapeSpec(channels=10, height=7, width=7)
