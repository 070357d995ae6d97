"""Tests of detkit.structures.image_list: padding images of different sizes into a batch."""

from __future__ import annotations

import pytest
import torch

from detkit.structures import ImageList


def two_images() -> list[torch.Tensor]:
    # Content starts at 1 so that no image pixel equals the zero padding.
    a = torch.arange(1, 1 + 2 * 3 * 5, dtype=torch.float32).reshape(2, 3, 5)
    b = torch.arange(100, 100 + 2 * 4 * 2, dtype=torch.float32).reshape(2, 4, 2)
    return [a, b]


@pytest.mark.parametrize(
    ("size_divisibility", "padded_hw"),
    [
        (0, (4, 5)),  # max H = 4 (second image), max W = 5 (first image)
        (1, (4, 5)),
        (4, (4, 8)),  # 4 is a multiple of 4; 5 rounds up to 8
        (3, (6, 6)),
        (32, (32, 32)),
    ],
)
def test_pads_to_the_largest_size_rounded_up(size_divisibility, padded_hw):
    images = two_images()
    batch = ImageList.from_tensors(images, size_divisibility=size_divisibility)
    assert batch.tensor.shape == (2, 2, *padded_hw)
    assert batch.image_sizes == [(3, 5), (4, 2)]
    assert len(batch) == 2


def test_padding_is_zero_at_bottom_right_and_content_unchanged():
    images = two_images()
    batch = ImageList.from_tensors(images, size_divisibility=4)
    t = batch.tensor
    assert torch.equal(t[0, :, :3, :5], images[0])  # top-left corner holds the image
    assert torch.equal(t[1, :, :4, :2], images[1])
    assert t[0, :, 3:, :].eq(0).all() and t[0, :, :, 5:].eq(0).all()  # below and right
    assert t[1, :, :, 2:].eq(0).all()
    assert t.ne(0).sum() == images[0].numel() + images[1].numel()


def test_index_returns_the_unpadded_image():
    images = two_images()
    batch = ImageList.from_tensors(images, size_divisibility=4)
    for i, image in enumerate(images):
        assert torch.equal(batch[i], image)


def test_pad_value():
    images = two_images()
    batch = ImageList.from_tensors(images, pad_value=-1.0)
    assert batch.tensor[0, :, 3:, :].eq(-1).all()
    assert batch.tensor.eq(-1).sum() == 2 * (4 * 5 - 3 * 5) + 2 * (4 * 5 - 4 * 2)


def test_single_image_of_the_right_size_is_kept():
    image = torch.rand(3, 8, 4)
    batch = ImageList.from_tensors([image], size_divisibility=4)
    assert batch.tensor.shape == (1, 3, 8, 4)
    assert torch.equal(batch[0], image)


def test_different_channel_counts_are_an_error():
    with pytest.raises(ValueError, match="same number of channels"):
        ImageList.from_tensors([torch.zeros(3, 4, 4), torch.zeros(1, 4, 4)])


def test_no_images_is_an_error():
    with pytest.raises(ValueError, match="at least one image"):
        ImageList.from_tensors([])


def test_original_sizes_default_to_image_sizes_and_give_scale_factors():
    batch = ImageList.from_tensors(two_images())
    assert batch.original_sizes == [(3, 5), (4, 2)]
    resized = ImageList(torch.zeros(2, 1, 8, 8), [(6, 8), (8, 4)], [(12, 16), (2, 1)])
    assert resized.scale_factors() == [0.5, 4.0]  # resized height / original height
    assert resized.to("cpu").original_sizes == [(12, 16), (2, 1)]
