"""Resize-shortest-edge arithmetic (PAPER.md) and box transforms, checked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from detkit.data.transforms import (
    HFlipTransform,
    ResizeTransform,
    apply_transforms,
    clip_boxes,
    nondegenerate,
    resize_shortest_edge_shape,
)


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((375, 500), (600, 800)),  # VOC-typical: scale 600 / 375 = 1.6
        ((500, 375), (800, 600)),  # portrait
        ((333, 1000), (333, 1000)),  # 1802 > 1000: scale = 1000 / 1000
        ((200, 600), (333, 1000)),  # capped: 1000 / 600 * 200 = 333.3
        # round(600 / 479 * 799) = round(1000.8) = 1001 > 1000: scale = 1000 / 799, so the
        # short side is round(599.499) = 599, not 600.
        ((479, 799), (599, 1000)),
        ((480, 800), (600, 1000)),  # exactly 1000 is allowed
    ],
)
def test_resize_shortest_edge_paper_rule(size, expected):
    assert resize_shortest_edge_shape(*size, 600, 1000) == expected


def test_no_cap_when_max_size_is_zero():
    assert resize_shortest_edge_shape(100, 1000, 600, 0) == (600, 6000)


def test_resize_and_flip_boxes_by_hand():
    image = np.zeros((10, 20, 3), np.uint8)
    image[:, :5] = 255  # a white band on the left
    boxes = np.array([[1.0, 2.0, 4.0, 5.0], [0.0, 0.0, 20.0, 10.0]], np.float32)
    out_image, out_boxes = apply_transforms(
        [ResizeTransform(10, 20, 15, 40), HFlipTransform(40)], image, boxes
    )
    assert out_image.shape == (15, 40, 3)
    # x * 2, y * 1.5, then x -> 40 - x with x1 and x2 swapped.
    np.testing.assert_allclose(out_boxes, [[32.0, 3.0, 38.0, 7.5], [0.0, 0.0, 40.0, 15.0]])
    assert out_image[7, 39].tolist() == [255, 255, 255] and out_image[7, 0].tolist() == [0, 0, 0]
    # Flipping twice is the identity.
    flip = HFlipTransform(20)
    np.testing.assert_array_equal(flip.apply_boxes(flip.apply_boxes(boxes)), boxes)
    np.testing.assert_array_equal(flip.apply_image(flip.apply_image(image)), image)


def test_clip_and_degenerate():
    boxes = np.array([[-3.0, -1.0, 5.0, 4.0], [8.0, 2.0, 12.0, 3.5], [2.0, 2.0, 2.5, 9.0]])
    clipped = clip_boxes(boxes, height=4, width=10)
    np.testing.assert_allclose(clipped, [[0, 0, 5, 4], [8, 2, 10, 3.5], [2, 2, 2.5, 4]])
    assert nondegenerate(clipped).tolist() == [True, True, False]  # last is 0.5 px wide
