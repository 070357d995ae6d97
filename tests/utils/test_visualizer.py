"""detkit.utils.visualizer: labels never hide one another and stay in the picture; the
ground truth is drawn beside the predictions."""

from __future__ import annotations

import numpy as np
import torch

from detkit.structures import Boxes, Instances
from detkit.utils.visualizer import (
    TITLE_STRIP_HEIGHT,
    class_color,
    draw_annotations,
    draw_boxes,
    draw_predictions_and_ground_truth,
    place_labels,
)


def _intersect(a, b) -> bool:
    """Half-open rectangles (x1, y1, x2, y2) share a pixel."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _assert_disjoint_and_inside(rects, image_size):
    height, width = image_size
    for i, a in enumerate(rects):
        assert 0 <= a[0] < a[2] <= width and 0 <= a[1] < a[3] <= height, a
        for b in rects[i + 1 :]:
            assert not _intersect(a, b), (a, b)


def test_labels_of_identical_boxes_are_stacked_without_overlap():
    # Five copies of one box: every preferred spot is the same for each; the fallback must
    # still find distinct free places.
    boxes = np.tile([[40.0, 40.0, 120.0, 100.0]], (5, 1))
    rects = place_labels(boxes, [(50, 14)] * 5, (200, 200))
    assert all(r is not None for r in rects)
    _assert_disjoint_and_inside(rects, (200, 200))
    # The first label takes the first choice: just above the top-left corner.
    assert rects[0] == (40, 26, 90, 40)
    # The second one: below the bottom-left corner.
    assert rects[1] == (40, 100, 90, 114)


def test_many_overlapping_boxes_at_the_border_give_disjoint_labels_inside_the_image():
    rng = np.random.default_rng(0)
    xy = rng.uniform(-20, 150, size=(40, 2))  # some boxes start outside the image
    boxes = np.concatenate([xy, xy + rng.uniform(10, 60, size=(40, 2))], axis=1)
    sizes = [(int(w), int(h)) for w, h in rng.integers([20, 10], [60, 18], size=(40, 2))]
    rects = place_labels(boxes, sizes, (180, 240))
    placed = [r for r in rects if r is not None]
    assert len(placed) >= 30  # 40 labels of ~40x14 px cover half of 180x240: most fit
    _assert_disjoint_and_inside(placed, (180, 240))
    for rect, (w, h) in zip(rects, sizes):
        if rect is not None:
            assert (rect[2] - rect[0], rect[3] - rect[1]) == (w, h)


def test_a_label_with_no_free_place_is_dropped():
    # A 20x10 image holds two 20x5 labels; the third has no place.
    rects = place_labels(np.zeros((3, 4)), [(20, 5)] * 3, (10, 20))
    assert rects[2] is None
    _assert_disjoint_and_inside(rects[:2], (10, 20))
    assert place_labels(np.zeros((1, 4)), [(30, 5)], (10, 20)) == [None]  # wider than image


def test_drawn_labels_do_not_overlap_and_have_a_filled_background():
    canvas = np.full((200, 300, 3), 255, dtype=np.uint8)
    boxes = np.array([[50, 50, 150, 150], [52, 52, 152, 152], [55, 48, 140, 160]], float)
    colors = [class_color(i) for i in range(3)]
    rects = draw_boxes(canvas, boxes, ["circle 0.99", "square 0.80", "triangle 0.51"], colors)
    _assert_disjoint_and_inside(rects, canvas.shape[:2])
    for (x1, y1, x2, y2), color in zip(rects, colors):
        # The background fills the rectangle's border pixels (text is inside the padding).
        assert tuple(canvas[y1, x1]) == color and tuple(canvas[y2 - 1, x2 - 1]) == color


def test_ground_truth_is_drawn_left_of_the_predictions_in_its_class_colour():
    image = np.zeros((100, 120, 3), dtype=np.uint8)
    annotations = [{"bbox": [10.0, 60.0, 50.0, 90.0], "category_id": 2}]
    predictions = Instances(
        (100, 120),
        pred_boxes=Boxes(torch.tensor([[70.0, 20.0, 110.0, 50.0]])),
        scores=torch.tensor([0.9]),
        pred_classes=torch.tensor([1]),
    )
    picture = draw_predictions_and_ground_truth(
        image, predictions, annotations, ["circle", "square", "triangle"]
    )
    gt_color, pred_color = class_color(2), class_color(1)
    assert picture.shape == (100 + TITLE_STRIP_HEIGHT, 2 * 120 + 8, 3)
    left = picture[TITLE_STRIP_HEIGHT:, :120]
    right = picture[TITLE_STRIP_HEIGHT:, 128:]
    # The ground-truth box's bottom edge (y = 90, clear of its label above the box) and
    # right edge (x = 50) in the left panel; nothing of it in the right one.
    assert tuple(left[90, 30]) == gt_color and tuple(left[75, 50]) == gt_color
    assert not (right == np.array(gt_color, dtype=np.uint8)).all(axis=-1).any()
    # The prediction: in the right panel only.
    assert tuple(right[50, 90]) == pred_color and tuple(right[35, 110]) == pred_color
    assert not (left == np.array(pred_color, dtype=np.uint8)).all(axis=-1).any()


def test_annotations_are_scaled_with_the_picture():
    image = np.zeros((50, 60, 3), dtype=np.uint8)
    drawn = draw_annotations(image, [{"bbox": [10, 20, 30, 40], "category_id": 0}], scale=2.0)
    assert drawn.shape == (100, 120, 3)
    assert tuple(drawn[80, 40]) == class_color(0)  # bottom edge y = 40 * 2, x inside
