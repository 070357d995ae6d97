"""Tests of detkit.structures.boxes: Boxes under both width conventions, pairwise_iou."""

from __future__ import annotations

import pytest
import torch

from detkit.structures import Boxes, pairwise_iou


def boxes(rows, legacy: bool = False) -> Boxes:
    return Boxes(torch.tensor(rows, dtype=torch.float32), legacy_plus_one=legacy)


def test_empty_input_becomes_zero_by_four():
    for empty in (torch.zeros(0), torch.zeros(0, 4), []):
        b = Boxes(empty)
        assert b.tensor.shape == (0, 4) and len(b) == 0
        assert b.area().shape == (0,)


def test_wrong_shape_is_an_error_naming_the_shape():
    with pytest.raises(ValueError, match=r"\(N, 4\); got \(2, 3\)"):
        Boxes(torch.zeros(2, 3))


@pytest.mark.parametrize(
    ("legacy", "widths", "heights", "areas"),
    [
        (False, [10.0, 3.0, 0.0], [10.0, 6.0, 4.0], [100.0, 18.0, 0.0]),
        (True, [11.0, 4.0, 1.0], [11.0, 7.0, 5.0], [121.0, 28.0, 5.0]),  # x2 - x1 + 1
    ],
)
def test_widths_heights_area(legacy, widths, heights, areas):
    b = boxes([[0, 0, 10, 10], [1, 2, 4, 8], [5, 5, 5, 9]], legacy)
    assert b.widths().tolist() == widths
    assert b.heights().tolist() == heights
    assert b.area().tolist() == areas


@pytest.mark.parametrize(
    ("legacy", "expected"),
    [
        (False, [[0, 0, 10, 8], [2, 3, 4, 5], [10, 8, 10, 8]]),  # [0, W] x [0, H]
        (True, [[0, 0, 9, 7], [2, 3, 4, 5], [9, 7, 9, 7]]),  # [0, W - 1] x [0, H - 1]
    ],
)
def test_clip_to_height_8_width_10(legacy, expected):
    b = boxes([[-2, -1, 12, 9], [2, 3, 4, 5], [11, 9, 15, 20]], legacy)
    b.clip((8, 10))
    assert b.tensor.tolist() == expected


def test_nonempty_under_both_conventions():
    rows = [[0, 0, 10, 10], [3, 3, 3, 8], [3, 3, 8, 3], [4, 4, 2, 8]]
    # A zero-width box (x1 == x2) covers one pixel column under the legacy convention.
    assert boxes(rows).nonempty().tolist() == [True, False, False, False]
    assert boxes(rows, legacy=True).nonempty().tolist() == [True, True, True, False]
    assert boxes(rows).nonempty(threshold=5.0).tolist() == [True, False, False, False]
    assert boxes(rows, legacy=True).nonempty(threshold=5.0).tolist() == [True, False, False, False]


def test_scale_multiplies_x_and_y_separately():
    b = boxes([[1, 2, 3, 4], [0, 0, 10, 20]])
    b.scale(2.0, 0.5)
    assert b.tensor.tolist() == [[2, 1, 6, 2], [0, 0, 20, 10]]


@pytest.mark.parametrize(
    ("legacy", "expected"),
    [
        (False, [[6, 2, 9, 5], [0, 0, 10, 10]]),  # x -> 10 - x
        (True, [[5, 2, 8, 5], [-1, 0, 9, 10]]),  # x -> 9 - x (the last pixel index)
    ],
)
def test_flip_horizontal_in_width_10(legacy, expected):
    b = boxes([[1, 2, 4, 5], [0, 0, 10, 10]], legacy)
    flipped = b.flip_horizontal(10)
    assert flipped.tensor.tolist() == expected
    assert flipped.legacy_plus_one is legacy
    assert torch.equal(flipped.area(), b.area())  # mirroring keeps sizes
    assert b.tensor.tolist() == [[1, 2, 4, 5], [0, 0, 10, 10]]  # the original is untouched


@pytest.mark.parametrize("legacy", [False, True])
def test_flip_twice_is_identity(legacy):
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(20, 2, generator=g) * 50
    wh = torch.rand(20, 2, generator=g) * 30
    b = Boxes(torch.cat([xy, xy + wh], dim=1), legacy)
    twice = b.flip_horizontal(97).flip_horizontal(97)
    torch.testing.assert_close(twice.tensor, b.tensor)


def test_centers():
    b = boxes([[0, 0, 10, 10], [1, 2, 4, 8]])
    assert b.centers().tolist() == [[5.0, 5.0], [2.5, 5.0]]


def test_indexing_int_slice_mask_and_index_tensor():
    rows = [[0, 0, 1, 1], [1, 1, 2, 2], [2, 2, 3, 3], [3, 3, 4, 4]]
    b = boxes(rows, legacy=True)
    assert b[1].tensor.tolist() == [rows[1]]  # an int keeps the (N, 4) shape
    assert b[-1].tensor.tolist() == [rows[3]]
    assert b[1:3].tensor.tolist() == rows[1:3]
    assert b[torch.tensor([True, False, False, True])].tensor.tolist() == [rows[0], rows[3]]
    assert b[torch.tensor([2, 0])].tensor.tolist() == [rows[2], rows[0]]
    assert len(b[torch.zeros(4, dtype=torch.bool)]) == 0
    assert all(x.legacy_plus_one for x in (b[1], b[1:3], b[torch.tensor([2, 0])]))


def test_cat():
    a = boxes([[0, 0, 1, 1]])
    b = boxes([[1, 1, 2, 2], [2, 2, 3, 3]])
    assert Boxes.cat([a, b]).tensor.tolist() == [[0, 0, 1, 1], [1, 1, 2, 2], [2, 2, 3, 3]]
    assert Boxes.cat([boxes([[0, 0, 1, 1]], True)] * 2).legacy_plus_one is True
    assert Boxes.cat([]).tensor.shape == (0, 4)
    with pytest.raises(ValueError, match="different width conventions"):
        Boxes.cat([a, boxes([[0, 0, 1, 1]], legacy=True)])


def test_pairwise_iou_hand_computed():
    a = boxes([[0, 0, 10, 10]])
    b = boxes([[5, 5, 15, 15], [0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 5, 10]])
    iou = pairwise_iou(a, b)
    assert iou.shape == (1, 4)
    # overlap 5 x 5 = 25, union 100 + 100 - 25 = 175; identical; disjoint; half inside
    torch.testing.assert_close(iou, torch.tensor([[25 / 175, 1.0, 0.0, 0.5]]))


def test_pairwise_iou_legacy_hand_computed():
    a = boxes([[0, 0, 10, 10]], legacy=True)
    b = boxes([[5, 5, 15, 15], [10, 10, 20, 20]], legacy=True)
    # overlap 6 x 6 = 36, union 121 + 121 - 36 = 206; touching corner pixel: 1 / (242 - 1)
    torch.testing.assert_close(pairwise_iou(a, b), torch.tensor([[36 / 206, 1 / 241]]))


def voc_devkit_iou(box_a: list[float], box_b: list[float]) -> float:
    """IoU as in the VOC devkit / py-faster-rcnn (inclusive pixel coordinates, +1)."""
    iw = min(box_a[2], box_b[2]) - max(box_a[0], box_b[0]) + 1
    ih = min(box_a[3], box_b[3]) - max(box_a[1], box_b[1]) + 1
    if iw <= 0 or ih <= 0:
        return 0.0
    area_a = (box_a[2] - box_a[0] + 1) * (box_a[3] - box_a[1] + 1)
    area_b = (box_b[2] - box_b[0] + 1) * (box_b[3] - box_b[1] + 1)
    inter = iw * ih
    return inter / (area_a + area_b - inter)


def naive_iou(box_a: list[float], box_b: list[float]) -> float:
    iw = max(0.0, min(box_a[2], box_b[2]) - max(box_a[0], box_b[0]))
    ih = max(0.0, min(box_a[3], box_b[3]) - max(box_a[1], box_b[1]))
    inter = iw * ih
    area_a = (box_a[2] - box_a[0]) * (box_a[3] - box_a[1])
    area_b = (box_b[2] - box_b[0]) * (box_b[3] - box_b[1])
    return inter / (area_a + area_b - inter)


def random_integer_boxes(n: int, generator: torch.Generator) -> torch.Tensor:
    xy = torch.randint(0, 40, (n, 2), generator=generator)
    wh = torch.randint(0, 25, (n, 2), generator=generator)  # zero-size boxes included
    return torch.cat([xy, xy + wh], dim=1).double()


@pytest.mark.parametrize(("legacy", "reference"), [(True, voc_devkit_iou), (False, naive_iou)])
def test_pairwise_iou_matches_a_naive_loop(legacy, reference):
    g = torch.Generator().manual_seed(1)
    t1, t2 = random_integer_boxes(30, g), random_integer_boxes(25, g)
    if not legacy:  # zero-area pairs have no modern IoU; keep boxes of positive size there
        t1[:, 2:] += 1
        t2[:, 2:] += 1
    iou = pairwise_iou(Boxes(t1, legacy), Boxes(t2, legacy))
    expected = torch.tensor(
        [[reference(a, b) for b in t2.tolist()] for a in t1.tolist()], dtype=torch.float64
    )
    assert (expected > 0).sum() > 20  # enough overlapping pairs for the check to mean much
    torch.testing.assert_close(iou, expected)
