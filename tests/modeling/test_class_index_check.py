"""A ground-truth class index beyond the head's number of classes is refused before any
loss sees it, with the config key in the message (torch would raise an IndexError deep in
cross_entropy, or a one-hot encoding would silently grow)."""

import os

import pytest
import torch

from detkit.config import get_cfg
from detkit.modeling import build_model
from detkit.structures import Boxes, Instances, check_gt_classes

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _inputs(classes):
    boxes = torch.tensor([[10.0, 12.0, 60.0, 70.0], [70.0, 20.0, 120.0, 90.0]])[: len(classes)]
    return [
        {
            "image": torch.rand(3, 96, 128, generator=torch.Generator().manual_seed(0)) * 255,
            "height": 96,
            "width": 128,
            "image_id": "img",
            "instances": Instances(
                (96, 128), gt_boxes=Boxes(boxes), gt_classes=torch.tensor(classes)
            ),
        }
    ]


def _model(config, *overrides):
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(ROOT, config))
    cfg.merge_from_list(
        ["MODEL.DEVICE", "cpu", "MODEL.TINY.CHANNELS", "[8, 16, 16, 32]", *overrides]
    )
    return build_model(cfg).train()


@pytest.mark.parametrize(
    "config, key",
    [
        ("configs/quickstart/shapes.yaml", "MODEL.ROI_HEADS.NUM_CLASSES"),
        ("projects/retinanet/configs/shapes_retinanet.yaml", "MODEL.RETINANET.NUM_CLASSES"),
    ],
)
def test_a_class_beyond_num_classes_names_the_key(config, key):
    model = _model(config, key, "2")
    losses = model(_inputs([0, 1]))  # classes 0 and 1 of 2: fine
    assert all(torch.isfinite(v) for v in losses.values())
    with pytest.raises(ValueError, match=rf"class index 2, outside 0 \.\. 1 \({key} = 2\)"):
        model(_inputs([0, 2]))


def test_check_gt_classes_bounds():
    check_gt_classes(torch.tensor([0, 4]), 5, "K")  # both ends inside
    check_gt_classes(torch.zeros(0, dtype=torch.long), 1, "K")  # no object
    with pytest.raises(ValueError, match=r"class index 5, outside 0 \.\. 4 \(K = 5\)"):
        check_gt_classes(torch.tensor([0, 5]), 5, "K")
    with pytest.raises(ValueError, match=r"class index -1"):
        check_gt_classes(torch.tensor([-1, 2]), 5, "K")
