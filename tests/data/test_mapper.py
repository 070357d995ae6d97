"""DatasetMapper: reading (formats, grayscale, alpha, 16 bit, errors), resize, flip, boxes."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from detkit.config import get_cfg
from detkit.data import DatasetMapper, ImageFileError, read_image

BLUE_BGR, RED_BGR = (255, 0, 0), (0, 0, 255)


@pytest.fixture
def two_colour_image(tmp_path) -> str:
    """A 20 x 40 PNG (lossless): left half blue, right half red."""
    image = np.zeros((20, 40, 3), np.uint8)
    image[:, :20], image[:, 20:] = BLUE_BGR, RED_BGR
    path = str(tmp_path / "two.png")
    cv2.imwrite(path, image)
    return path


def _dict(path, annotations, **extra):
    return {
        "file_name": path,
        "height": 20,
        "width": 40,
        "image_id": "two",
        "annotations": annotations,
        **extra,
    }


def _ann(box, **flags):
    return {"bbox": box, "category_id": 1, "difficult": False, **flags}


def test_resize_boxes_and_channel_order(two_colour_image):
    mapper = DatasetMapper(min_sizes=[40], max_size=1000, image_format="BGR")
    out = mapper(_dict(two_colour_image, [_ann([2.0, 3.0, 10.0, 8.0])]))
    image = out["image"]
    assert image.dtype == torch.float32 and image.shape == (3, 40, 80)  # scale 40 / 20 = 2
    assert image[:, 20, 5].tolist() == [255, 0, 0] and image[:, 20, 75].tolist() == [0, 0, 255]
    inst = out["instances"]
    assert inst.image_size == (40, 80)
    assert inst.gt_boxes.tensor.tolist() == [[4.0, 6.0, 20.0, 16.0]]
    assert inst.gt_classes.dtype == torch.int64 and inst.gt_classes.tolist() == [1]
    assert (out["height"], out["width"], out["image_id"]) == (20, 40, "two")
    assert "annotations" not in out
    rgb = DatasetMapper(min_sizes=[40], image_format="RGB")(_dict(two_colour_image, []))
    assert rgb["image"][:, 20, 5].tolist() == [0, 0, 255]  # blue is the last channel in RGB
    assert len(rgb["instances"]) == 0  # an image with no objects still gives Instances


def test_flip_marked_dicts_and_random_flip(two_colour_image):
    mapper = DatasetMapper(min_sizes=[40], random_flip=False)
    out = mapper(_dict(two_colour_image, [_ann([2.0, 3.0, 10.0, 8.0])], flip=True))
    # Resized [4, 6, 20, 16] in an 80-wide image, mirrored: [80 - 20, 6, 80 - 4, 16].
    assert out["instances"].gt_boxes.tensor.tolist() == [[60.0, 6.0, 76.0, 16.0]]
    assert out["image"][:, 20, 5].tolist() == [0, 0, 255]  # red is now on the left
    torch.manual_seed(0)
    random_mapper = DatasetMapper(min_sizes=[40], random_flip=True)
    seen = {
        tuple(
            random_mapper(_dict(two_colour_image, [_ann([2.0, 3.0, 10.0, 8.0])]))["instances"]
            .gt_boxes.tensor[0]
            .tolist()
        )
        for _ in range(20)
    }
    assert seen == {(4.0, 6.0, 20.0, 16.0), (60.0, 6.0, 76.0, 16.0)}


def test_random_shorter_side_choice(two_colour_image):
    torch.manual_seed(0)
    mapper = DatasetMapper(min_sizes=[20, 40], max_size=1000)
    shapes = {tuple(mapper(_dict(two_colour_image, []))["image"].shape) for _ in range(20)}
    assert shapes == {(3, 20, 40), (3, 40, 80)}
    test_mapper = DatasetMapper(is_train=False, min_sizes=[30], max_size=50)
    out = test_mapper(_dict(two_colour_image, [_ann([2.0, 3.0, 10.0, 8.0])]))
    assert out["image"].shape == (3, 25, 50)  # 30 / 20 * 40 = 60 > 50: scale 50 / 40
    assert "instances" not in out


def test_training_drops_difficult_crowd_and_degenerate(two_colour_image):
    mapper = DatasetMapper(min_sizes=[40])
    out = mapper(
        _dict(
            two_colour_image,
            [
                _ann([0.0, 0.0, 5.0, 5.0], difficult=True),
                _ann([0.0, 0.0, 5.0, 5.0], iscrowd=1),
                _ann([1.0, 1.0, 1.4, 9.0]),  # 0.4 px wide -> 0.8 px after x2: degenerate
                _ann([35.0, 2.0, 45.0, 6.0]),  # runs past the right border: clipped to 80
            ],
        )
    )
    assert out["instances"].gt_boxes.tensor.tolist() == [[70.0, 4.0, 80.0, 12.0]]
    assert out["num_degenerate_boxes"] == 1 and mapper.num_degenerate_boxes == 1


def test_legacy_plus_one_conversion(two_colour_image):
    mapper = DatasetMapper(min_sizes=[40], legacy_plus_one=True)
    boxes = mapper(_dict(two_colour_image, [_ann([2.0, 3.0, 10.0, 8.0])]))["instances"].gt_boxes
    assert boxes.tensor.tolist() == [[4.0, 6.0, 19.0, 15.0]]  # x2 - 1, y2 - 1
    assert boxes.legacy_plus_one and boxes.widths().tolist() == [16.0]  # same width as before


def test_grayscale_alpha_and_16_bit_images(tmp_path):
    gray = str(tmp_path / "gray.png")
    cv2.imwrite(gray, np.full((4, 6), 77, np.uint8))
    assert read_image(gray, "BGR").shape == (4, 6, 3)
    assert (read_image(gray, "BGR") == 77).all()
    rgba = np.zeros((4, 6, 4), np.uint8)
    rgba[..., :3], rgba[..., 3] = (10, 20, 30), 0  # fully transparent: alpha is ignored
    path = str(tmp_path / "alpha.png")
    cv2.imwrite(path, rgba)
    assert read_image(path, "BGR")[0, 0].tolist() == [10, 20, 30]
    assert read_image(path, "RGB")[0, 0].tolist() == [30, 20, 10]
    deep = str(tmp_path / "deep.png")
    cv2.imwrite(deep, np.array([[65535, 257 * 100]], np.uint16))
    assert read_image(deep, "BGR")[0, :, 0].tolist() == [255, 100]


def test_unreadable_files_name_the_file_and_image_id(tmp_path, two_colour_image):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"broken\.jpg \(image_id 'b7'\)"):
        read_image(str(broken), "BGR", "b7")
    with pytest.raises(FileNotFoundError, match=r"gone\.jpg \(image_id 3\)"):
        read_image(str(tmp_path / "gone.jpg"), "BGR", 3)
    wrong_size = {**_dict(two_colour_image, []), "height": 10}
    with pytest.raises(ValueError, match=r"20x40 pixels, but its dataset dict says 10x40"):
        DatasetMapper(min_sizes=[40])(wrong_size)


def test_settings_from_config():
    cfg = get_cfg()
    cfg.INPUT.MIN_SIZE_TRAIN = [200, 300]
    cfg.INPUT.FORMAT = "RGB"
    cfg.MODEL.LEGACY_PLUS_ONE = True
    train = DatasetMapper(cfg, is_train=True)
    assert (train.min_sizes, train.max_size, train.image_format) == ((200, 300), 1000, "RGB")
    assert train.random_flip and train.legacy_plus_one
    test = DatasetMapper(cfg, is_train=False)
    assert (test.min_sizes, test.max_size, test.random_flip) == ((600,), 1000, False)
    cfg.INPUT.FLIP_BY_DUPLICATION = True  # the dataset supplies flips: no random ones
    assert not DatasetMapper(cfg, is_train=True).random_flip
    assert DatasetMapper(cfg, is_train=True, max_size=5).max_size == 5  # keyword override
    with pytest.raises(TypeError, match="unknown settings"):
        DatasetMapper(cfg, min_size=3)


def _noise_image(path, *params: int) -> bytes:
    noise = np.random.default_rng(1).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    cv2.imwrite(str(path), noise, list(params))
    return path.read_bytes()


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_truncated_images_are_refused_naming_file_and_image_id(tmp_path, suffix):
    path = tmp_path / f"cut{suffix}"
    data = _noise_image(path)
    path.write_bytes(data[: len(data) - 20])  # OpenCV's imread decodes such a JPEG, grey rows
    with pytest.raises(ImageFileError, match=rf"cut\{suffix} \(image_id 'c1'\) is truncated"):
        read_image(str(path), "BGR", "c1")
    path.write_bytes(b"")
    with pytest.raises(ImageFileError, match=r"is empty \(0 bytes\)\. Copy or download"):
        read_image(str(path), "BGR", "c1")


def test_complete_jpegs_with_padding_or_trailing_data_are_read(tmp_path):
    baseline = tmp_path / "base.jpg"
    data = _noise_image(baseline)
    expected = read_image(str(baseline), "BGR")
    progressive = tmp_path / "progressive.jpg"
    _noise_image(progressive, cv2.IMWRITE_JPEG_PROGRESSIVE, 1)
    assert read_image(str(progressive), "BGR").shape == (24, 32, 3)
    # Zero padding, or a trailer after the end-of-image marker (as some cameras write): the
    # same pixels as the file alone.
    for extra in (b"\x00" * 64, b"SEFHtrailer" * 10):
        path = tmp_path / "extra.jpg"
        path.write_bytes(data + extra)
        assert np.array_equal(read_image(str(path), "BGR"), expected)
