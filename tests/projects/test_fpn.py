"""projects/fpn: the FPN backbone (and the ResNet it is built on), its config keys, its two
configs and the ImageNet weight conversion."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from detkit.checkpoint import DetectionCheckpointer
from detkit.config import get_cfg
from detkit.layers import ShapeSpec
from detkit.modeling import (
    BACKBONE_REGISTRY,
    Backbone,
    ImagePreprocessor,
    build_backbone,
    build_model,
)
from detkit.modeling.backbone import ResNet
from detkit.modeling.backbone.tiny import TinyBackbone
from detkit.modeling.poolers import MultiLevelROIAlign
from detkit.modeling.roi_heads import ConvFCHead
from detkit.registry import ComponentNotFoundError
from detkit.utils.synthetic import two_shapes_example
from projects.fpn import FPN, add_fpn_config

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY_CONFIG = str(REPO_ROOT / "projects/fpn/configs/shapes_fpn_tiny.yaml")
R50_CONFIG = str(REPO_ROOT / "projects/fpn/configs/faster_rcnn_r50_fpn.yaml")


class FixedMaps(Backbone):
    """A stand-in bottom-up backbone: returns the given maps whatever the input."""

    def __init__(self, maps: dict[str, Tensor], strides: dict[str, int]):
        super().__init__()
        self.maps, self.strides = maps, strides

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        return dict(self.maps)

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {
            k: ShapeSpec(channels=v.shape[1], stride=self.strides[k]) for k, v in self.maps.items()
        }


def tiny_fpn(**kwargs) -> FPN:
    bottom_up = TinyBackbone(
        channels=(4, 6, 8, 10), blocks_per_stage=0, out_features=("stage2", "stage3", "stage4")
    )
    args = {
        "in_features": ["stage2", "stage3", "stage4"],
        "out_channels": 5,
        "top_block": "maxpool",
        **kwargs,
    }
    return FPN(bottom_up=bottom_up, **args)


def fpn_cfg(*overrides: str):
    """The shapes FPN config with small widths, on the CPU."""
    cfg = get_cfg()
    cfg.merge_from_file(TINY_CONFIG)
    cfg.merge_from_list(
        [
            "MODEL.DEVICE",
            "cpu",
            "MODEL.TINY.CHANNELS",
            "[8, 16, 16, 32]",
            "MODEL.FPN.OUT_CHANNELS",
            "16",
            *overrides,
        ]
    )
    return cfg


def nearest_by_index(x: Tensor, height: int, width: int) -> Tensor:
    """``x`` enlarged to ``height x width``, output cell (r, c) = input cell (r // 2, c // 2)."""
    rows = torch.arange(height) // 2
    cols = torch.arange(width) // 2
    return x[:, :, rows][:, :, :, cols]


def test_import_registers_fpn_and_the_config_keys():
    assert BACKBONE_REGISTRY.get("FPN") is FPN
    assert BACKBONE_REGISTRY.get("ResNet") is ResNet
    assert FPN.__module__ == "projects.fpn.fpn"
    assert "FPN" not in get_cfg().MODEL  # a config gets the keys by naming the plugin
    cfg = get_cfg()
    add_fpn_config(cfg)
    assert cfg.MODEL.FPN.BOTTOM_UP == "ResNet"  # the paper's defaults
    assert cfg.MODEL.FPN.IN_FEATURES == ["res2", "res3", "res4", "res5"]
    assert (cfg.MODEL.FPN.OUT_CHANNELS, cfg.MODEL.FPN.TOP_BLOCK) == (256, "maxpool")
    cfg = get_cfg()
    cfg.merge_from_file(TINY_CONFIG)
    assert cfg.IMPORTS == ["projects.fpn"]
    assert cfg.MODEL.BACKBONE.NAME == "FPN" and cfg.MODEL.FPN.BOTTOM_UP == "TinyBackbone"


def test_plugin_is_found_through_imports_only():
    # Nothing in detkit names the plugin ...
    mentions = [
        str(p)
        for p in (REPO_ROOT / "detkit").rglob("*.py")
        if "projects.fpn" in p.read_text() or "projects/fpn" in p.read_text()
    ]
    assert mentions == []
    # ... and a fresh process gets FPN exactly when a config lists it in IMPORTS.
    script = f"""
import sys
from detkit.config import get_cfg
from detkit.modeling import BACKBONE_REGISTRY, build_model
from detkit.registry import ComponentNotFoundError
cfg = get_cfg()
cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.BACKBONE.NAME", "FPN"])
try:
    build_model(cfg)
except ComponentNotFoundError as e:
    print("WITHOUT:", str(e).splitlines()[0])
print("LOADED BEFORE:", "projects.fpn" in sys.modules)
cfg = get_cfg()
cfg.merge_from_file({TINY_CONFIG!r})
print("LOADED AFTER:", "projects.fpn" in sys.modules, BACKBONE_REGISTRY.get("FPN").__module__)
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(
        "WITHOUT: MODEL.BACKBONE.NAME: No component named 'FPN' in the BACKBONE registry."
    )
    assert "IMPORTS" in lines[0]
    assert lines[1:] == ["LOADED BEFORE: False", "LOADED AFTER: True projects.fpn.fpn"]


def test_names_strides_channels_and_sizes_of_a_padded_non_square_input():
    fpn = tiny_fpn()
    assert fpn.size_divisibility == 16  # stage4's stride: the coarsest fused map
    shapes = fpn.output_shape()
    assert list(shapes) == ["p2", "p3", "p4", "p5"]
    assert [s.stride for s in shapes.values()] == [4, 8, 16, 32]
    assert {s.channels for s in shapes.values()} == {5}
    # A 50 x 75 image, padded as a detector pads it: to 64 x 80, the next multiples of 16.
    batch = ImagePreprocessor([0.0] * 3, [1.0] * 3, fpn.size_divisibility)(
        [{"image": torch.rand(3, 50, 75) * 255}]
    )
    assert batch.tensor.shape == (1, 3, 64, 80)
    out = fpn(batch.tensor)
    assert list(out) == ["p2", "p3", "p4", "p5"]
    sizes = {k: tuple(v.shape) for k, v in out.items()}
    # 64 x 80 divided by 4, 8, 16; p5 halves p4's 4 x 5 rounding up: 2 x 3.
    assert sizes == {
        "p2": (1, 5, 16, 20),
        "p3": (1, 5, 8, 10),
        "p4": (1, 5, 4, 5),
        "p5": (1, 5, 2, 3),
    }


def hand_set_fpn(fuse_type: str) -> tuple[FPN, dict[str, Tensor]]:
    """An FPN over three fixed maps with known weights: every lateral conv copies its
    map's first 2 channels and adds a bias, every output conv is the identity plus a bias.

    Maps (1 image): c3 [1, 2, 5, 9] at stride 8, c4 [1, 2, 3, 5] at 16, c5 [1, 3, 2, 3] at
    32: odd sizes, each the ceiling of half the finer one.
    """
    torch.manual_seed(0)
    maps = {
        "c3": torch.randn(1, 2, 5, 9),
        "c4": torch.randn(1, 2, 3, 5),
        "c5": torch.randn(1, 3, 2, 3),
    }
    fpn = FPN(
        bottom_up=FixedMaps(maps, {"c3": 8, "c4": 16, "c5": 32}),
        in_features=["c3", "c4", "c5"],
        out_channels=2,
        fuse_type=fuse_type,
    )
    with torch.no_grad():
        for index, (lateral, output) in enumerate(zip(fpn.lateral_convs, fpn.output_convs)):
            lateral.conv.weight.zero_()
            lateral.conv.weight[0, 0, 0, 0] = lateral.conv.weight[1, 1, 0, 0] = 1.0
            lateral.conv.bias.copy_(torch.tensor([1.0, -2.0]) * (index + 1))
            output.conv.weight.zero_()
            output.conv.weight[0, 0, 1, 1] = output.conv.weight[1, 1, 1, 1] = 1.0
            output.conv.bias.fill_(10.0 * (index + 1))
    return fpn, maps


def test_top_down_sum_matches_a_hand_computation_on_odd_sizes():
    fpn, c = hand_set_fpn("sum")
    out = fpn(torch.zeros(1, 3, 1, 1))
    assert list(out) == ["p3", "p4", "p5"]  # no TOP_BLOCK: one level per map
    bias = [torch.tensor([1.0, -2.0]).view(1, 2, 1, 1) * k for k in (1, 2, 3)]
    m5 = c["c5"][:, :2] + bias[2]
    m4 = c["c4"] + bias[1] + nearest_by_index(m5, 3, 5)
    m3 = c["c3"] + bias[0] + nearest_by_index(m4, 5, 9)
    torch.testing.assert_close(out["p5"], m5 + 30.0)
    torch.testing.assert_close(out["p4"], m4 + 20.0)
    torch.testing.assert_close(out["p3"], m3 + 10.0)
    # The 2 x 3 top map repeated into 3 x 5: row 2 copies row 1, column 4 copies column 2.
    up = nearest_by_index(m5, 3, 5)
    torch.testing.assert_close(up[0, :, 2, 4], m5[0, :, 1, 2])


def test_average_fusion_halves_each_sum():
    fpn, c = hand_set_fpn("avg")
    out = fpn(torch.zeros(1, 3, 1, 1))
    bias = [torch.tensor([1.0, -2.0]).view(1, 2, 1, 1) * k for k in (1, 2, 3)]
    m5 = c["c5"][:, :2] + bias[2]
    m4 = (c["c4"] + bias[1] + nearest_by_index(m5, 3, 5)) / 2
    m3 = (c["c3"] + bias[0] + nearest_by_index(m4, 5, 9)) / 2
    torch.testing.assert_close(out["p4"], m4 + 20.0)
    torch.testing.assert_close(out["p3"], m3 + 10.0)


def test_maxpool_top_block_subsamples_the_top_output():
    fpn = tiny_fpn()
    out = fpn(torch.randn(2, 3, 96, 112))
    top = out["p4"]  # [2, 5, 6, 7]
    assert out["p5"].shape == (2, 5, 3, 4)
    torch.testing.assert_close(out["p5"], F.max_pool2d(top, kernel_size=1, stride=2))
    torch.testing.assert_close(out["p5"], top[:, :, ::2, ::2])  # every other cell, from 0


def test_weights_start_as_caffe2_xavier_fill():
    fpn = tiny_fpn(out_channels=64)
    conv = fpn.output_convs[0].conv  # fan_in 64 * 3 * 3: uniform in +-sqrt(3 / 576)
    bound = (3 / 576) ** 0.5
    assert conv.weight.abs().max() <= bound
    assert conv.weight.std().item() == pytest.approx(bound / 3**0.5, rel=0.05)
    assert torch.count_nonzero(conv.bias) == 0


def test_each_config_key_reaches_the_pyramid():
    default = build_backbone(fpn_cfg())
    assert isinstance(default, FPN) and isinstance(default.bottom_up, TinyBackbone)
    assert list(default.output_shape()) == ["p2", "p3", "p4", "p5"]
    assert isinstance(default.lateral_convs[0].norm, nn.BatchNorm2d)  # the config's NORM: BN
    assert default.lateral_convs[0].conv.bias is None

    wide = build_backbone(fpn_cfg("MODEL.FPN.OUT_CHANNELS", "24"))
    assert {s.channels for s in wide.output_shape().values()} == {24}
    assert wide(torch.zeros(1, 3, 64, 64))["p3"].shape == (1, 24, 8, 8)

    no_top = build_backbone(fpn_cfg("MODEL.FPN.TOP_BLOCK", ""))
    assert list(no_top.output_shape()) == ["p2", "p3", "p4"]
    assert list(no_top(torch.zeros(1, 3, 64, 64))) == ["p2", "p3", "p4"]

    gn = build_backbone(fpn_cfg("MODEL.FPN.NORM", "GN"))
    assert all(isinstance(m.norm, nn.GroupNorm) for m in [*gn.lateral_convs, *gn.output_convs])
    plain = build_backbone(fpn_cfg("MODEL.FPN.NORM", ""))
    assert plain.output_convs[0].norm is None and plain.output_convs[0].conv.bias is not None

    avg = build_backbone(fpn_cfg("MODEL.FPN.FUSE_TYPE", "avg"))
    a, b = torch.full((1, 1, 1, 1), 3.0), torch.full((1, 1, 1, 1), 5.0)
    assert avg.fuse(a, b).item() == 4.0 and default.fuse(a, b).item() == 8.0

    coarse = build_backbone(fpn_cfg("MODEL.FPN.IN_FEATURES", "[stage3, stage4]"))
    assert list(coarse.output_shape()) == ["p3", "p4", "p5"]
    assert [m.conv.in_channels for m in coarse.lateral_convs] == [16, 32]  # TINY.CHANNELS
    assert coarse.size_divisibility == 16

    # The bottom-up still reads MODEL.BACKBONE's other keys: stage 1 frozen.
    frozen = build_backbone(fpn_cfg("MODEL.BACKBONE.FREEZE_AT", "1"))
    assert not any(p.requires_grad for p in frozen.bottom_up.stage1.parameters())
    assert all(p.requires_grad for p in frozen.bottom_up.stage2.parameters())


@pytest.mark.parametrize(
    "overrides, error, message",
    [
        (
            ["MODEL.FPN.BOTTOM_UP", "TinyBackbon"],
            ComponentNotFoundError,
            "MODEL.FPN.BOTTOM_UP: No component named 'TinyBackbon'",
        ),
        (["MODEL.FPN.BOTTOM_UP", "FPN"], ValueError, "MODEL.FPN.BOTTOM_UP is 'FPN'"),
        (
            ["MODEL.FPN.IN_FEATURES", "[stage2, stage5]"],
            KeyError,
            "MODEL.FPN.IN_FEATURES names ['stage5']",
        ),
        (["MODEL.FPN.IN_FEATURES", "[stage4, stage3]"], ValueError, "finest first"),
        (["MODEL.FPN.NORM", "LN"], ValueError, "MODEL.FPN.NORM must be one of"),
        (["MODEL.FPN.TOP_BLOCK", "conv"], ValueError, "MODEL.FPN.TOP_BLOCK must be one of"),
        (["MODEL.FPN.FUSE_TYPE", "max"], ValueError, "MODEL.FPN.FUSE_TYPE must be one of"),
    ],
    ids=["unknown-bottom-up", "fpn-of-fpn", "missing-map", "coarse-first", "norm", "top", "fuse"],
)
def test_bad_values_fail_naming_the_key(overrides, error, message):
    with pytest.raises(error) as info:
        build_backbone(fpn_cfg(*overrides))
    assert message in str(info.value)


def train_step_and_infer(model: nn.Module, height: int, width: int) -> dict[str, float]:
    """One SGD step on a two-object image of ``height x width``, then inference on it."""
    example = two_shapes_example(height, width)
    model.train()
    losses = model([example])
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    optimizer.zero_grad()
    sum(losses.values()).backward()
    for conv in model.backbone.lateral_convs:  # the RPN and the box head both reach them
        assert conv.conv.weight.grad is not None and conv.conv.weight.grad.abs().sum() > 0
    optimizer.step()
    model.eval()
    with torch.no_grad():
        detections = model([example])[0]["instances"]
    assert detections.image_size == (height, width)
    assert len(detections) <= 100
    return {k: v.item() for k, v in losses.items()}


def test_shapes_config_builds_trains_one_step_and_infers():
    torch.manual_seed(0)
    model = build_model(fpn_cfg())
    assert isinstance(model.backbone, FPN)
    assert model.preprocessor.size_divisibility == 16
    rpn = model.proposal_generator
    assert rpn.in_features == ["p2", "p3", "p4", "p5"] and rpn.topk_scope == "per_level"
    anchors = rpn.anchor_generator([torch.zeros(1, 16, 1, 1)] * 4)
    # One anchor size per level; the square anchor (ratio 1, the second) of each level:
    # centred at (0.5 * stride, 0.5 * stride) with side 16, 32, 64, 128.
    for stride, size, level_anchors in zip([4, 8, 16, 32], [16, 32, 64, 128], anchors):
        assert level_anchors.shape == (3, 4)
        c = 0.5 * stride
        expected = torch.tensor([c - size / 2, c - size / 2, c + size / 2, c + size / 2])
        torch.testing.assert_close(level_anchors[1], expected)
    pooler = model.roi_heads.pooler
    assert isinstance(pooler, MultiLevelROIAlign)
    assert (pooler.min_level, pooler.max_level) == (2, 5)
    assert (pooler.canonical_size, pooler.canonical_level) == (64.0, 4)
    # 100 x 130 is padded to 112 x 144: p5 is 4 x 5 (a max-pooled 7 x 9).
    train_step_and_infer(model, 100, 130)


def test_r50_fpn_config_builds_trains_one_step_and_infers():
    cfg = get_cfg()
    cfg.merge_from_file(R50_CONFIG)
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.ROI_HEADS.NUM_CLASSES", "3"])
    torch.manual_seed(0)
    model = build_model(cfg)
    backbone = model.backbone
    assert isinstance(backbone, FPN) and isinstance(backbone.bottom_up, ResNet)
    assert backbone.bottom_up.out_features == ["res2", "res3", "res4", "res5"]
    assert [(s.channels, s.stride) for s in backbone.output_shape().values()] == [
        (256, 4),
        (256, 8),
        (256, 16),
        (256, 32),
        (256, 64),
    ]
    assert list(backbone.output_shape()) == ["p2", "p3", "p4", "p5", "p6"]
    assert backbone.size_divisibility == 32
    assert [m.conv.in_channels for m in backbone.lateral_convs] == [256, 512, 1024, 2048]
    # FREEZE_AT 2: stem and res2 frozen, res3 trained.
    assert not any(p.requires_grad for p in backbone.bottom_up.layer1.parameters())
    assert all(p.requires_grad for p in backbone.bottom_up.layer2.parameters())
    assert model.proposal_generator.in_features == ["p2", "p3", "p4", "p5", "p6"]
    assert model.roi_heads.in_features == ["p2", "p3", "p4", "p5"]
    assert isinstance(model.roi_heads.box_head, ConvFCHead)
    assert model.roi_heads.box_head.output_shape().channels == 1024
    assert model.roi_heads.box_head.fcs[0].in_features == 256 * 7 * 7
    train_step_and_infer(model, 96, 128)


def test_imagenet_resnet_loads_into_the_bottom_up(tmp_path):
    cfg = get_cfg()
    cfg.merge_from_file(R50_CONFIG)
    cfg.merge_from_list(
        ["MODEL.DEVICE", "cpu", "MODEL.FPN.OUT_CHANNELS", "8", "MODEL.ROI_BOX_HEAD.FC_DIM", "8"]
    )
    model = build_model(cfg)
    torch.manual_seed(1)
    classifier = ResNet(norm="BN", freeze_at=0)  # torchvision's modules: its own state_dict
    source = dict(classifier.state_dict())
    source["fc.weight"], source["fc.bias"] = torch.zeros(1000, 2048), torch.zeros(1000)
    source["bn1.running_mean"] = torch.rand(64)  # statistics reach the FrozenBN buffers
    torch.save(source, tmp_path / "resnet50.pth")  # torchvision's layout, as downloaded
    DetectionCheckpointer(model).load(str(tmp_path / "resnet50.pth"))
    bottom_up = model.backbone.bottom_up
    torch.testing.assert_close(bottom_up.layer4[2].conv3.weight, source["layer4.2.conv3.weight"])
    torch.testing.assert_close(bottom_up.bn1.running_mean, source["bn1.running_mean"])
    torch.testing.assert_close(bottom_up.conv1.weight, source["conv1.weight"])


def test_train_net_trains_the_shapes_config(tiny_shapes_root, tmp_path):
    short = [
        "SOLVER.MAX_ITER",
        "3",
        "SOLVER.STEPS",
        "[2]",
        "SOLVER.WARMUP_ITERS",
        "1",
        "SOLVER.CHECKPOINT_PERIOD",
        "100",
        "SOLVER.IMS_PER_BATCH",
        "2",
        "TEST.EVAL_PERIOD",
        "0",
        "MODEL.TINY.CHANNELS",
        "[8, 16, 16, 32]",
        "MODEL.FPN.OUT_CHANNELS",
        "16",
        "DATALOADER.NUM_WORKERS",
        "0",
    ]
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "tools/train_net.py",
            "--config-file",
            "projects/fpn/configs/shapes_fpn_tiny.yaml",
            *short,
            "OUTPUT_DIR",
            str(out),
        ],
        cwd=REPO_ROOT,
        env={**os.environ, "DETKIT_DATASETS": tiny_shapes_root},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["iterations"] == 3 and 0.0 <= summary["mAP@0.5"] <= 1.0
    state = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)
    assert "backbone.lateral_convs.0.conv.weight" in state["model"]
    assert "backbone.bottom_up.stage2.0.conv.weight" in state["model"]
