"""ImagePreprocessor: normalization, padding multiple, memory format fixed when built, the
gathering of ground truth and proposals; hand-computed values."""

from __future__ import annotations

import os

import pytest
import torch

from detkit.config import get_cfg
from detkit.modeling import ImagePreprocessor, build_model, padding_multiple
from detkit.structures import Boxes, Instances

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_padding_multiple_is_the_lcm_of_the_set_values():
    assert padding_multiple(32, 24) == 96
    assert padding_multiple(0, 24) == 24
    assert padding_multiple(16, 0) == 16
    assert padding_multiple(0, 0) == 0
    with pytest.raises(ValueError, match="INPUT.SIZE_DIVISIBILITY"):
        padding_multiple(32, -1)


def test_batch_normalized_padded_and_in_the_given_layout():
    pre = ImagePreprocessor(
        [10.0, 20.0], [2.0, 5.0], size_divisibility=8, memory_format=torch.channels_last
    )
    inputs = [
        {"image": torch.full((2, 5, 9), 30.0), "height": 10, "width": 27},
        {"image": torch.full((2, 7, 3), 20.0)},
    ]
    batch = pre(inputs)
    # Largest image 7 x 9 -> padded to 8 x 16; (30 - 10) / 2 = 10, (30 - 20) / 5 = 2.
    assert batch.tensor.shape == (2, 2, 8, 16)
    assert batch.tensor.is_contiguous(memory_format=torch.channels_last)
    assert batch.image_sizes == [(5, 9), (7, 3)]
    assert batch.original_sizes == [(10, 27), (7, 3)]
    first, second = batch.tensor
    assert torch.all(first[0, :5, :9] == 10) and torch.all(first[1, :5, :9] == 2)
    assert torch.all(second[0, :7, :3] == 5) and torch.all(second[1, :7, :3] == 0)
    assert batch.tensor[0, :, 5:].abs().sum() == 0 and batch.tensor[0, :, :, 9:].abs().sum() == 0
    # The buffers set the dtype: a float64 preprocessor gives a float64 batch.
    assert pre.double()(inputs).tensor.dtype == torch.float64


def test_inputs_are_checked_naming_the_image():
    pre = ImagePreprocessor([0.0] * 3, [1.0] * 3)
    with pytest.raises(ValueError, match=r"image_id 7\).*2 channels"):
        pre([{"image": torch.zeros(2, 4, 4), "image_id": 7}])
    with pytest.raises(ValueError, match="Tensor\\[C, H, W\\]"):
        pre([{"image": torch.zeros(4, 4)}])
    with pytest.raises(ValueError, match="MODEL.PIXEL_STD has 2"):
        ImagePreprocessor([0.0] * 3, [1.0] * 2)
    with pytest.raises(ValueError, match="no 'instances'"):
        pre.ground_truth([{"image": torch.zeros(3, 4, 4), "image_id": "x"}])
    given = Instances((4, 4), proposal_boxes=Boxes(torch.zeros(1, 4)))
    with pytest.raises(ValueError, match=r"image_id \['b'\]"):
        pre.proposals([{"proposals": given, "image_id": "a"}, {"image_id": "b"}])
    assert pre.proposals([{"image_id": "a"}]) is None


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("contiguous", torch.contiguous_format),
        ("channels_last", torch.channels_last),
    ],
)
def test_build_model_fixes_the_preprocessor_layout(key, expected):
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(ROOT, "configs/quickstart/faster_rcnn_tiny.yaml"))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.MEMORY_FORMAT", key])
    model = build_model(cfg)
    assert model.preprocessor.memory_format == expected
    # Set at build time, not guessed from the weights on each forward: converting the
    # weights afterwards leaves the batch layout alone.
    model.to(memory_format=torch.contiguous_format)
    images = model.preprocessor([{"image": torch.zeros(3, 20, 30)}])
    assert images.tensor.is_contiguous(memory_format=expected)
