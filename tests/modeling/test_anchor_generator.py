"""Anchor generators: PAPER.md's legacy anchor table, grid order, counts, modern float anchors."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList as TorchvisionImageList

from detkit.config import get_cfg
from detkit.layers import ShapeSpec
from detkit.modeling.anchor_generator import (
    DefaultAnchorGenerator,
    LegacyAnchorGenerator,
    build_anchor_generator,
)

# PAPER.md, "Anchors": the released code's 9 anchors for stride 16, ratio-major, 0-based.
PAPER_ANCHORS = [
    [-84, -40, 99, 55],  # ratio 0.5, scale 8
    [-176, -88, 191, 103],  # ratio 0.5, scale 16
    [-360, -184, 375, 199],  # ratio 0.5, scale 32
    [-56, -56, 71, 71],  # ratio 1, scale 8
    [-120, -120, 135, 135],  # ratio 1, scale 16
    [-248, -248, 263, 263],  # ratio 1, scale 32
    [-36, -80, 51, 95],  # ratio 2, scale 8
    [-80, -168, 95, 183],  # ratio 2, scale 16
    [-168, -344, 183, 359],  # ratio 2, scale 32
]


def paper_generator() -> LegacyAnchorGenerator:
    return LegacyAnchorGenerator(sizes=[128, 256, 512], aspect_ratios=[0.5, 1, 2], strides=[16])


def feature(height: int, width: int) -> torch.Tensor:
    return torch.zeros(1, 1, height, width)


def test_legacy_reproduces_paper_table_exactly():
    anchors = paper_generator()([feature(1, 1)])[0]
    assert anchors.dtype == torch.float32
    assert torch.equal(anchors, torch.tensor(PAPER_ANCHORS, dtype=torch.float32))


def test_legacy_centres_are_stride_times_index_plus_7_5():
    anchors = paper_generator()([feature(2, 3)])[0]
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    # Position (y, x) = (1, 2) holds anchors 9 * (1 * 3 + 2) .. + 8; centre (16*2+7.5, 16+7.5).
    assert torch.equal(centres[45:54], torch.tensor([[39.5, 23.5]] * 9))


def test_legacy_order_anchor_then_x_then_y_on_2x3_map():
    anchors = paper_generator()([feature(2, 3)])[0]
    assert anchors.shape == (2 * 3 * 9, 4)
    table = torch.tensor(PAPER_ANCHORS, dtype=torch.float32)
    # Hand-picked rows: index = (y * W + x) * A + a.
    assert anchors[9].tolist() == [-84 + 16, -40, 99 + 16, 55]  # y 0, x 1, anchor 0
    assert anchors[3 * 9 + 4].tolist() == [-120, -120 + 16, 135, 135 + 16]  # y 1, x 0, a 4
    assert anchors[53].tolist() == [-168 + 32, -344 + 16, 183 + 32, 359 + 16]  # last
    expected = [
        (table[a] + torch.tensor([16.0 * x, 16.0 * y, 16.0 * x, 16.0 * y])).tolist()
        for y in range(2)
        for x in range(3)
        for a in range(9)
    ]
    assert anchors.tolist() == expected


def test_legacy_rounds_half_to_even():
    # Ratio 0.5 with stride 16: ws = round(22.63) = 23, hs = round(11.5) = 12 (half to even;
    # round-half-up would give 13 and a height of 104 instead of 96 at scale 8).
    gen = LegacyAnchorGenerator(sizes=[16], aspect_ratios=[0.5], strides=[16])
    x1, y1, x2, y2 = gen.cell_anchors[0][0].tolist()
    assert (x2 - x1 + 1, y2 - y1 + 1) == (23, 12)


def test_paper_anchor_count_for_600x1000_image():
    # PAPER.md: "about 20,000 anchors for a 1000x600 image"; VGG16 map 38x63.
    anchors = paper_generator()([feature(38, 63)])[0]
    assert anchors.shape == (38 * 63 * 9, 4) == (21546, 4)


def count_inside_naive(height: int, width: int, map_h: int, map_w: int) -> int:
    """Independent reference: PAPER.md's table shifted by hand, released code's inside test."""
    inside = 0
    for y in range(map_h):
        for x in range(map_w):
            for x1, y1, x2, y2 in PAPER_ANCHORS:
                sx, sy = 16 * x, 16 * y
                if x1 + sx >= 0 and y1 + sy >= 0 and x2 + sx < width and y2 + sy < height:
                    inside += 1
    return inside


def inside_count(anchors: torch.Tensor, height: int, width: int) -> int:
    keep = (
        (anchors[:, 0] >= 0)
        & (anchors[:, 1] >= 0)
        & (anchors[:, 2] < width)
        & (anchors[:, 3] < height)
    )
    return int(keep.sum())


def test_anchors_fully_inside_image():
    """PAPER.md: "about 6,000 lie fully inside". Exactly: 8,151 for 600x1000, 5,944 for 600x800.

    The paper's ~6,000 is a typical VOC image (600x800 after resizing a 500x375 image); the
    600x1000 extreme has more. Both counts agree with a naive count from the PAPER.md table.
    """
    gen = paper_generator()
    big = gen([feature(38, 63)])[0]
    assert inside_count(big, 600, 1000) == count_inside_naive(600, 1000, 38, 63) == 8151
    typical = gen([feature(38, 50)])[0]
    inside = inside_count(typical, 600, 800)
    assert inside == count_inside_naive(600, 800, 38, 50) == 5944
    assert abs(inside - 6000) / 6000 < 0.01  # "about 6,000"


def test_default_cell_anchors_by_hand():
    gen = DefaultAnchorGenerator(sizes=[8, 16], aspect_ratios=[0.25, 1, 4], strides=[4])
    # Ratio r = h / w, area s^2: w = s / sqrt(r). Size 8: r 0.25 16x4, r 1 8x8, r 4 4x16.
    expected = [
        [-8, -2, 8, 2],
        [-16, -4, 16, 4],
        [-4, -4, 4, 4],
        [-8, -8, 8, 8],
        [-2, -8, 2, 8],
        [-4, -16, 4, 16],
    ]
    assert gen.num_anchors_per_location == 6
    assert torch.equal(gen([feature(1, 1)])[0], torch.tensor(expected, dtype=torch.float32))


def test_default_exact_float_sizes():
    gen = DefaultAnchorGenerator(sizes=[128], aspect_ratios=[0.5], strides=[16])
    x1, y1, x2, y2 = gen([feature(1, 1)])[0][0].tolist()
    assert x2 - x1 == pytest.approx(math.sqrt(128**2 / 0.5), rel=1e-6)  # 181.02, not rounded
    assert (y2 - y1) / (x2 - x1) == pytest.approx(0.5, rel=1e-6)


def test_default_offset_and_order():
    gen = DefaultAnchorGenerator(sizes=[4], aspect_ratios=[1, 4], strides=[4], offset=0.5)
    anchors = gen([feature(2, 3)])[0]
    assert anchors.shape == (2 * 3 * 2, 4)
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    expected = [[(x + 0.5) * 4, (y + 0.5) * 4] for y in range(2) for x in range(3) for _ in "ab"]
    assert centres.tolist() == expected
    assert anchors[11].tolist() == [10 - 1, 6 - 4, 10 + 1, 6 + 4]  # y 1, x 2, ratio 4: 2 x 8


def test_default_offset_zero_centres_on_cell_corner():
    gen = DefaultAnchorGenerator(sizes=[2], aspect_ratios=[1], strides=[8])
    assert gen([feature(1, 2)])[0].tolist() == [[-1, -1, 1, 1], [7, -1, 9, 1]]


def test_several_maps_use_own_stride_and_same_sizes():
    gen = DefaultAnchorGenerator(sizes=[2], aspect_ratios=[1], strides=[4, 8], offset=0.5)
    small, large = gen([feature(1, 2), feature(1, 1)])
    assert small.tolist() == [[1, 1, 3, 3], [5, 1, 7, 3]]
    assert large.tolist() == [[3, 3, 5, 5]]


def test_grid_is_cached_per_size():
    gen = paper_generator()
    first = gen([feature(3, 4)])[0]
    assert gen([feature(3, 4)])[0] is first  # same object: not recomputed
    other = gen([feature(4, 3)])[0]
    assert other is not first and other.shape == first.shape
    assert not torch.equal(other, first)


def test_wrong_number_of_maps_is_an_error():
    with pytest.raises(ValueError, match="1 feature map"):
        paper_generator()([feature(1, 1), feature(1, 1)])


def test_build_without_input_shape_is_an_error():
    with pytest.raises(ValueError, match="ShapeSpec"):
        build_anchor_generator(get_cfg())


@pytest.mark.parametrize("name", ["LegacyAnchorGenerator", "DefaultAnchorGenerator"])
def test_build_from_config(name):
    cfg = get_cfg()
    node = cfg.MODEL.ANCHOR_GENERATOR
    node.NAME = name
    node.SIZES = [64, 128]
    node.OFFSET = 0.5
    gen = build_anchor_generator(cfg, node, input_shape=[ShapeSpec(channels=8, stride=16)])
    assert type(gen).__name__ == name
    assert gen.sizes == [64.0, 128.0]
    assert gen.aspect_ratios == list(node.ASPECT_RATIOS) == [0.5, 1.0, 2.0]
    assert gen.strides == [16]
    assert gen.offset == (0.5 if name == "DefaultAnchorGenerator" else 0.0)
    assert gen.num_anchors_per_location == 6


def test_round_to_pixels_reproduces_torchvision_anchors():
    sizes, ratios = [32.0, 64.0, 128.0, 256.0, 512.0], [0.5, 1.0, 2.0]
    # A 96 x 160 batch and a 6 x 10 map: torchvision's stride (image // map) is 16.
    feature = torch.zeros(1, 8, 6, 10)
    reference = AnchorGenerator(sizes=(tuple(sizes),), aspect_ratios=(tuple(ratios),))(
        TorchvisionImageList(torch.zeros(1, 3, 96, 160), [(96, 160)]), [feature]
    )[0]
    rounded = DefaultAnchorGenerator(
        sizes=sizes, aspect_ratios=ratios, strides=[16], offset=0.0, round_to_pixels=True
    )([feature])[0]
    assert torch.equal(rounded, reference)
    # Without rounding the shapes are exact floats: e.g. ratio 0.5, size 32 is 45.25 px wide.
    exact = DefaultAnchorGenerator(sizes=sizes, aspect_ratios=ratios, strides=[16])([feature])[0]
    assert not torch.equal(exact, reference)
    assert float(exact[0, 2] - exact[0, 0]) == pytest.approx(32 * 2**0.5, rel=1e-6)
    assert float(rounded[0, 2] - rounded[0, 0]) == 46.0  # -23 .. 23


def test_round_to_pixels_key():
    cfg = get_cfg()
    cfg.MODEL.ANCHOR_GENERATOR.NAME = "DefaultAnchorGenerator"
    cfg.MODEL.ANCHOR_GENERATOR.ROUND_TO_PIXELS = True
    gen = build_anchor_generator(cfg, input_shape=[ShapeSpec(channels=8, stride=16)])
    assert gen.round_to_pixels
    assert bool((gen.cell_anchors[0] == gen.cell_anchors[0].round()).all())
