"""Every model config: one training step and one inference pass on the CPU, random weights;
boxes returned in original image pixels (x and y scaled apart); normalization and padding
from the config."""

import glob
import os

import pytest
import torch
from torch import nn

from detkit.config import get_cfg
from detkit.layers import ShapeSpec
from detkit.modeling import build_model
from detkit.modeling.backbone import Backbone
from detkit.modeling.meta_arch import GeneralizedRCNN, ProposalNetwork, detector_postprocess
from detkit.structures import Boxes, Instances

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL_CONFIGS = sorted(
    os.path.relpath(p, ROOT)
    for p in glob.glob(os.path.join(ROOT, "configs", "**", "*.yaml"), recursive=True)
    # configs/sweeps/ holds sweep files (tools/sweep.py), not model configs.
    if not os.path.basename(p).startswith("Base-")
    and os.path.relpath(p, ROOT).split(os.sep)[1] != "sweeps"
)


def batch(num_classes: int):
    """Two images of different sizes, resized by 0.5 from their originals; one has no object."""
    g = torch.Generator().manual_seed(0)
    first = {
        "image": torch.rand(3, 96, 128, generator=g) * 255,
        "height": 192,
        "width": 256,
        "image_id": "a",
        "instances": Instances(
            (96, 128),
            gt_boxes=Boxes(torch.tensor([[10.0, 12.0, 60.0, 70.0], [70.0, 20.0, 120.0, 90.0]])),
            gt_classes=torch.tensor([0, num_classes - 1]),
        ),
    }
    second = {
        "image": torch.rand(3, 80, 112, generator=g) * 255,
        "height": 160,
        "width": 224,
        "image_id": "b",
        "instances": Instances(
            (80, 112), gt_boxes=Boxes(torch.zeros(0, 4)), gt_classes=torch.zeros(0).long()
        ),
    }
    return [first, second]


def test_model_configs_are_found():
    assert {
        "configs/faster_rcnn_vgg16.yaml",
        "configs/faster_rcnn_zf.yaml",
        "configs/faster_rcnn_r50_c4.yaml",
        "configs/rpn_vgg16.yaml",
        "configs/quickstart/faster_rcnn_tiny.yaml",
    } <= set(MODEL_CONFIGS)


@pytest.mark.parametrize("config_file", MODEL_CONFIGS)
def test_one_training_step_and_inference(config_file):
    torch.manual_seed(0)
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(ROOT, config_file))
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    inputs = batch(cfg.MODEL.ROI_HEADS.NUM_CLASSES)
    model.train()
    losses = model(inputs)
    expected = {"loss_rpn_cls", "loss_rpn_loc"}
    if cfg.MODEL.META_ARCHITECTURE == "GeneralizedRCNN":
        expected |= {"loss_cls", "loss_box_reg"}
    assert set(losses) == expected
    assert all(torch.isfinite(v) for v in losses.values())
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trainable, lr=1e-3, momentum=0.9)
    sum(losses.values()).backward()
    optimizer.step()
    # The RPN's new layers always train; frozen backbone layers get no gradient.
    assert model.proposal_generator.head.conv.weight.grad is not None
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)
    model.eval()
    with torch.no_grad():
        outputs = model(inputs)
    assert len(outputs) == 2
    for out, x in zip(outputs, inputs):
        key = "instances" if cfg.MODEL.META_ARCHITECTURE == "GeneralizedRCNN" else "proposals"
        result = out[key]
        # Results are in original image coordinates (twice the input size here).
        assert result.image_size == (x["height"], x["width"])
        boxes = (result.pred_boxes if key == "instances" else result.proposal_boxes).tensor
        if len(boxes):
            assert boxes[:, 2].max() <= x["width"] and boxes[:, 3].max() <= x["height"]
            assert boxes.min() >= 0
        if key == "instances":
            assert result.scores.shape == result.pred_classes.shape == (len(result),)
            assert torch.all(result.pred_classes < cfg.MODEL.ROI_HEADS.NUM_CLASSES)


def test_memory_format_changes_the_layout_not_the_result():
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(ROOT, "configs/quickstart/faster_rcnn_tiny.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    models = {}
    for memory_format in ("contiguous", "channels_last", "auto"):
        cfg.MODEL.MEMORY_FORMAT = memory_format
        torch.manual_seed(0)
        models[memory_format] = build_model(cfg).eval()
    stem = {k: m.backbone.stage1[0].conv.weight for k, m in models.items()}
    assert stem["contiguous"].is_contiguous()
    assert stem["channels_last"].is_contiguous(memory_format=torch.channels_last)
    assert stem["auto"].is_contiguous(memory_format=torch.channels_last)  # auto: CPU
    images = models["channels_last"].preprocessor(batch(3))
    assert images.tensor.is_contiguous(memory_format=torch.channels_last)
    # Identity oracle: same weights, same detections whatever the layout.
    with torch.no_grad():
        a, b = (models[k](batch(3)) for k in ("contiguous", "channels_last"))
    for x, y in zip(a, b):
        assert len(x["instances"]) > 0  # random weights still score ~1/4 per class
        torch.testing.assert_close(x["instances"].scores, y["instances"].scores)
        torch.testing.assert_close(
            x["instances"].pred_boxes.tensor, y["instances"].pred_boxes.tensor
        )
    cfg.MODEL.MEMORY_FORMAT = "nhwc"
    with pytest.raises(ValueError, match="MODEL.MEMORY_FORMAT"):
        build_model(cfg)


class NoFeatures(Backbone):
    def forward(self, images):
        return {}

    def output_shape(self):
        return {"none": ShapeSpec(channels=1, stride=1)}


class FixedOutputs(nn.Module):
    """A proposal generator or ROI heads that returns the same boxes, in input pixels, for
    the one image of a batch."""

    def __init__(self, field: str, boxes: list[list[float]]):
        super().__init__()
        self.field, self.boxes = field, torch.tensor(boxes)

    def forward(self, images, features, *args):
        (size,) = images.image_sizes
        n = len(self.boxes)
        result = Instances(
            size,
            **{self.field: Boxes(self.boxes.clone())},
            scores=torch.ones(n),
            pred_classes=torch.zeros(n, dtype=torch.long),
            objectness_logits=torch.ones(n),
        )
        return [result], {}


# An original 100 x 200 (h x w) image resized to 150 x 400: x scaled by 2, y by 1.5. Boxes
# found in the resized input come back divided by 2 in x and by 1.5 in y.
RESIZED_BOXES = [[40.0, 30.0, 400.0, 150.0], [100.0, 15.0, 200.0, 75.0], [8.0, 3.0, 10.0, 9.0]]
ORIGINAL_BOXES = [[20.0, 20.0, 200.0, 100.0], [50.0, 10.0, 100.0, 50.0], [4.0, 2.0, 5.0, 6.0]]


def test_detector_postprocess_scales_x_and_y_separately():
    result = Instances((150, 400), pred_boxes=Boxes(torch.tensor(RESIZED_BOXES)))
    out = detector_postprocess(result, 100, 200)
    assert out.image_size == (100, 200)
    torch.testing.assert_close(out.pred_boxes.tensor, torch.tensor(ORIGINAL_BOXES))
    # Then clipped to the original image: 420 x 160 in the input is past its corner.
    beyond = Instances((150, 400), pred_boxes=Boxes(torch.tensor([[0.0, 0.0, 420.0, 160.0]])))
    assert detector_postprocess(beyond, 100, 200).pred_boxes.tensor.tolist() == [
        [0.0, 0.0, 200.0, 100.0]
    ]


@pytest.mark.parametrize("meta_arch", ["GeneralizedRCNN", "ProposalNetwork"])
def test_inference_returns_boxes_in_original_image_pixels(meta_arch):
    common = dict(backbone=NoFeatures(), pixel_mean=[0.0] * 3, pixel_std=[1.0] * 3)
    if meta_arch == "GeneralizedRCNN":
        model = GeneralizedRCNN(
            proposal_generator=FixedOutputs("proposal_boxes", []),
            roi_heads=FixedOutputs("pred_boxes", RESIZED_BOXES),
            **common,
        )
        key, field = "instances", "pred_boxes"
    else:
        model = ProposalNetwork(
            proposal_generator=FixedOutputs("proposal_boxes", RESIZED_BOXES), **common
        )
        key, field = "proposals", "proposal_boxes"
    inputs = [{"image": torch.zeros(3, 150, 400), "height": 100, "width": 200}]
    with torch.no_grad():
        (output,) = model.eval()(inputs)
    assert output[key].image_size == (100, 200)
    torch.testing.assert_close(output[key].get(field).tensor, torch.tensor(ORIGINAL_BOXES))


def test_pixel_normalization_and_size_divisibility_from_config():
    # (image - MODEL.PIXEL_MEAN) / MODEL.PIXEL_STD per channel: (50 - 10) / 2, (50 - 20) / 4,
    # (50 - 30) / 8; the 50 x 70 image padded with zeros to multiples of 32 (64 x 96).
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(ROOT, "configs/quickstart/faster_rcnn_tiny.yaml"))
    cfg.merge_from_list([
        "MODEL.DEVICE", "cpu",
        "MODEL.PIXEL_MEAN", "[10.0, 20.0, 30.0]",
        "MODEL.PIXEL_STD", "[2.0, 4.0, 8.0]",
        "INPUT.SIZE_DIVISIBILITY", "32",
    ])  # fmt: skip
    model = build_model(cfg)
    images = model.preprocessor([{"image": torch.full((3, 50, 70), 50.0)}])
    assert images.tensor.shape == (1, 3, 64, 96) and images.image_sizes == [(50, 70)]
    for channel, value in enumerate([20.0, 7.5, 2.5]):
        assert torch.all(images.tensor[0, channel, :50, :70] == value)
    padding = images.tensor.clone()
    padding[0, :, :50, :70] = 0
    assert torch.all(padding == 0)
    # Default 0: no padding beyond the image (the tiny backbone needs none).
    cfg.INPUT.SIZE_DIVISIBILITY = 0
    images = build_model(cfg).preprocessor([{"image": torch.full((3, 50, 70), 50.0)}])
    assert images.tensor.shape == (1, 3, 50, 70)
