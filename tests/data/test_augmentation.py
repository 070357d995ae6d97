"""Augmentations: crop sizes and windows, colour jitter through torchvision, and the mapper's
boxes (and proposals) after crop -> resize -> flip, all checked against hand-computed values."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from detkit.config import get_cfg
from detkit.data import (
    Augmentation,
    ColorJitter,
    DatasetMapper,
    RandomCrop,
    RandomFlip,
    ResizeShortestEdge,
    build_augmentations,
)
from detkit.data.transforms import ColorTransform, CropTransform


class FixedCrop(Augmentation):
    """A crop at a fixed window: the random position taken out, for hand-computed boxes."""

    def __init__(self, x0, y0, width, height):
        self.window = (x0, y0, width, height)

    def get_transform(self, image, rng, dataset_dict):
        return CropTransform(*self.window)


@pytest.fixture
def image_40x80(tmp_path) -> str:
    """A 40 x 80 PNG whose pixel (y, x) is BGR (x, y, 100): every pixel says where it was."""
    ys, xs = np.mgrid[0:40, 0:80]
    image = np.stack([xs, ys, np.full_like(xs, 100)], axis=-1).astype(np.uint8)
    path = str(tmp_path / "grid.png")
    cv2.imwrite(path, image)
    return path


def _record(path, boxes, **extra):
    annotations = [
        {"bbox": b, "category_id": k % 3, "difficult": False} for k, b in enumerate(boxes)
    ]
    return {
        "file_name": path,
        "image_id": "grid",
        "height": 40,
        "width": 80,
        "annotations": annotations,
        **extra,
    }


def test_crop_transform_shifts_boxes_and_takes_the_window():
    image = np.arange(10 * 20 * 3, dtype=np.int64).reshape(10, 20, 3).astype(np.uint8)
    crop = CropTransform(x0=5, y0=2, width=10, height=6)
    out = crop.apply_image(image)
    assert out.shape == (6, 10, 3)
    np.testing.assert_array_equal(out[0, 0], image[2, 5])
    np.testing.assert_array_equal(out[5, 9], image[7, 14])
    boxes = np.array([[2.0, 3.0, 12.0, 8.0]], np.float32)
    np.testing.assert_allclose(crop.apply_boxes(boxes), [[-3.0, 1.0, 7.0, 6.0]])
    with pytest.raises(ValueError, match="does not fit"):
        CropTransform(15, 0, 10, 6).apply_image(image)


def test_mapper_crop_resize_flip_boxes_by_hand(image_40x80):
    # Crop x 16..80, y 8..40 (64 x 32) -> shorter side 64: factor 2 -> 128 x 64 -> mirror.
    mapper = DatasetMapper(
        augmentations=[
            FixedCrop(16, 8, 64, 32),
            ResizeShortestEdge([64], 1000),
            RandomFlip(prob=1.0),
        ]
    )
    boxes = [
        [20.0, 10.0, 30.0, 20.0],  # inside: crop -> [4, 2, 14, 12] -> x2 [8, 4, 28, 24]
        [0.0, 0.0, 24.0, 12.0],  # cut: [-16, -8, 8, 4] -> [-32, -16, 16, 8]
        [0.0, 20.0, 10.0, 30.0],  # left of the window: nothing left
    ]
    out = mapper(_record(image_40x80, boxes))
    assert tuple(out["image"].shape) == (3, 64, 128)
    # Mirror about 128 (x -> 128 - x, x1 and x2 swapped), then clip to [0, 128] x [0, 64].
    expected = [[100.0, 4.0, 120.0, 24.0], [112.0, 0.0, 128.0, 8.0]]
    np.testing.assert_allclose(out["instances"].gt_boxes.tensor.numpy(), expected)
    assert out["instances"].gt_classes.tolist() == [0, 1]
    assert out["num_degenerate_boxes"] == 1
    # Pixel (0, 127) of the output came from the crop's (0, 0), i.e. the source's (8, 16).
    b, g, r = out["image"][:, 0, 127].tolist()
    assert (b, g, r) == (16.0, 8.0, 100.0)


def test_mapper_moves_precomputed_proposals_through_the_crop(image_40x80):
    mapper = DatasetMapper(
        is_train=False,
        augmentations=[
            FixedCrop(16, 8, 64, 32),
            ResizeShortestEdge([32], 1000),
        ],
    )
    record = _record(
        image_40x80,
        [],
        proposal_boxes=[[20, 10, 30, 20], [0, 0, 10, 5]],
        proposal_objectness_logits=[1.0, 2.0],
    )
    proposals = mapper(record)["proposals"]
    # The second box lies outside the window and is dropped; the first shifts by (16, 8).
    assert proposals.proposal_boxes.tensor.tolist() == [[4.0, 2.0, 14.0, 12.0]]


@pytest.mark.parametrize(
    ("crop_type", "size", "expected"),
    [
        ("relative", [0.5, 0.25], (20, 20)),
        ("absolute", [30, 100], (30, 80)),  # wider than the image: capped at 80
    ],
)
def test_crop_sizes_fixed_types(crop_type, size, expected):
    rng = np.random.default_rng(0)
    assert RandomCrop(crop_type, size).crop_size(40, 80, rng) == expected


def test_crop_ranges_and_windows_stay_in_bounds():
    image = np.zeros((40, 80, 3), np.uint8)
    relative, absolute = (
        RandomCrop("relative_range", [0.5, 0.25]),
        RandomCrop("absolute_range", [10, 30]),
    )
    heights, widths, x_ends = set(), set(), set()
    for seed in range(200):
        rng = np.random.default_rng(seed)
        h, w = relative.crop_size(40, 80, rng)
        assert 20 <= h <= 40 and 20 <= w <= 80
        h, w = absolute.crop_size(40, 80, rng)
        assert 10 <= h <= 30 and 10 <= w <= 30
        heights.add(h)
        widths.add(w)
        t = relative.get_transform(image, rng, {})
        assert 0 <= t.x0 and t.x0 + t.width <= 80 and 0 <= t.y0 and t.y0 + t.height <= 40
        x_ends.add(t.x0 + t.width)
    # Both ends of the absolute range are reached, and windows touch the right border.
    assert {10, 30} <= heights and {10, 30} <= widths and 80 in x_ends


def test_crop_settings_are_checked_naming_the_key():
    with pytest.raises(ValueError, match="INPUT.CROP.TYPE"):
        RandomCrop("centre", [0.5, 0.5])
    with pytest.raises(ValueError, match="fractions"):
        RandomCrop("relative", [0.5, 2.0])
    with pytest.raises(ValueError, match=r"\[min, max\]"):
        RandomCrop("absolute_range", [30, 10])


def test_colour_transform_sees_true_colours_in_bgr_and_rgb():
    red_bgr = np.zeros((2, 3, 3), np.uint8)
    red_bgr[..., 2] = 255
    # Saturation 0 gives the grey 0.2989 R + 0.587 G + 0.114 B: red -> 76, blue -> 29.
    grey = ColorTransform({"saturation": 0.0}, image_format="BGR").apply_image(red_bgr)
    assert np.unique(grey).tolist() == [76]
    as_rgb_blue = ColorTransform({"saturation": 0.0}, image_format="RGB").apply_image(red_bgr)
    assert np.unique(as_rgb_blue).tolist() == [29]
    # A third of the colour wheel turns red into green (BGR (0, 255, 0)).
    green = ColorTransform({"hue": 1 / 3}, image_format="BGR").apply_image(red_bgr)
    assert green[0, 0].tolist() == [0, 255, 0]
    # Brightness 0.5 halves every value; contrast 0 gives the mean grey everywhere.
    half = ColorTransform({"brightness": 0.5}).apply_image(np.full((2, 2, 3), 200, np.uint8))
    assert np.unique(half).tolist() == [100]
    boxes = np.array([[1.0, 2.0, 3.0, 4.0]])
    np.testing.assert_array_equal(ColorTransform({"hue": 0.1}).apply_boxes(boxes), boxes)


def test_colour_jitter_draws_within_ranges_in_random_order():
    jitter = ColorJitter(brightness=0.4, contrast=0.0, saturation=0.2, hue=0.05)
    image = np.zeros((4, 4, 3), np.uint8)
    orders = set()
    for seed in range(50):
        t = jitter.get_transform(image, np.random.default_rng(seed), {})
        assert set(t.factors) == {"brightness", "saturation", "hue"}  # contrast 0: off
        assert 0.6 <= t.factors["brightness"] <= 1.4
        assert 0.8 <= t.factors["saturation"] <= 1.2
        assert -0.05 <= t.factors["hue"] <= 0.05
        orders.add(t.order)
    assert len(orders) == 6  # every order of the three steps occurs
    assert ColorJitter().get_transform(image, np.random.default_rng(0), {}) is None
    with pytest.raises(ValueError, match="INPUT.COLOR_JITTER.HUE"):
        ColorJitter(hue=0.6)


def _cfg(**input_keys):
    cfg = get_cfg()
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = [40], 1000
    cfg.INPUT.RANDOM_FLIP = "none"
    for key, value in input_keys.items():
        node, name = key.split("__")
        setattr(getattr(cfg.INPUT, node), name, value)
    return cfg


def test_crop_keys_select_the_crop_in_training_only(image_40x80):
    record = _record(image_40x80, [[0.0, 0.0, 80.0, 40.0]], aug_seed=3)
    assert tuple(DatasetMapper(_cfg(), True)(record)["image"].shape) == (3, 40, 80)
    cfg = _cfg(CROP__ENABLED=True, CROP__TYPE="relative", CROP__SIZE=[0.5, 1.0])
    out = DatasetMapper(cfg, True)(record)
    # The 20 x 80 window is resized to a shorter side of 40: 40 x 160; the whole-image box
    # becomes the whole output.
    assert tuple(out["image"].shape) == (3, 40, 160)
    assert out["instances"].gt_boxes.tensor.tolist() == [[0.0, 0.0, 160.0, 40.0]]
    assert [type(a).__name__ for a in build_augmentations(cfg, True)] == [
        "RandomCrop",
        "ResizeShortestEdge",
    ]
    assert [type(a).__name__ for a in build_augmentations(cfg, False)] == ["ResizeShortestEdge"]


def test_colour_jitter_keys(tmp_path):
    # BGR (70, 130, 190): grey = 0.2989 * 190 + 0.587 * 130 + 0.114 * 70 = 141.08; a
    # saturation factor f in [0.5, 1.5] gives grey + f * (pixel - grey) with no clipping.
    colour = np.empty((40, 80, 3), np.uint8)
    colour[:] = (70, 130, 190)
    grey = np.full((40, 80, 3), 90, np.uint8)
    paths = {}
    for name, image in (("colour", colour), ("grey", grey)):
        paths[name] = str(tmp_path / f"{name}.png")
        cv2.imwrite(paths[name], image)
    cfg = _cfg(COLOR_JITTER__SATURATION=0.5)
    mapper = DatasetMapper(cfg, True)
    assert [type(a).__name__ for a in mapper.augmentations] == ["ResizeShortestEdge", "ColorJitter"]
    pixel, grey_level = np.array([70.0, 130.0, 190.0]), 141.08
    factors = []
    for seed in range(4):
        grey_out = mapper(_record(paths["grey"], [], aug_seed=seed))["image"]
        # Saturation leaves a grey image alone (torchvision's grey weights sum to 0.9999,
        # so 90 may become 89).
        assert (grey_out - 90).abs().max() <= 1
        out = mapper(_record(paths["colour"], [], aug_seed=seed))["image"][:, 5, 5].numpy()
        # One factor for all channels: estimated on red, it predicts blue and green (within
        # 2.5 levels: torchvision truncates the grey and the blend to integers).
        factor = (out[2] - grey_level) / (pixel[2] - grey_level)
        assert 0.45 <= factor <= 1.55
        np.testing.assert_allclose(out, grey_level + factor * (pixel - grey_level), atol=2.5)
        factors.append(factor)
    assert max(factors) - min(factors) > 0.2  # drawn, not fixed
    # The same seed replays the same jitter (a resumed run sees the same images).
    again = mapper(_record(paths["colour"], [], aug_seed=3))["image"][:, 5, 5].numpy()
    np.testing.assert_array_equal(again, out)
    assert [type(a).__name__ for a in DatasetMapper(cfg, False).augmentations] == [
        "ResizeShortestEdge"
    ]


def test_default_augmentations_follow_the_flip_keys(image_40x80):
    cfg = _cfg()
    cfg.INPUT.RANDOM_FLIP = "horizontal"
    assert [type(a).__name__ for a in build_augmentations(cfg, True)] == [
        "ResizeShortestEdge",
        "RandomFlip",
    ]
    cfg.INPUT.FLIP_BY_DUPLICATION = True
    assert [type(a).__name__ for a in build_augmentations(cfg, True)] == ["ResizeShortestEdge"]
    # A duplicated (flip-marked) dict is mirrored once even when RandomFlip is in the list.
    mapper = DatasetMapper(augmentations=[ResizeShortestEdge([40], 1000), RandomFlip(1.0)])
    out = mapper(_record(image_40x80, [[0.0, 0.0, 10.0, 10.0]], flip=True))
    assert out["instances"].gt_boxes.tensor.tolist() == [[70.0, 0.0, 80.0, 10.0]]
