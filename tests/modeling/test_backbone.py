"""Backbones (VGG16, ZF, ResNetC4, TinyBackbone) and the normalization/freezing helpers.

Oracles: feature map sizes computed by hand and PAPER.md's 38 x 63 for 600 x 1000; the exact
names of frozen parameters; gradients after a backward; torchvision's own modules on the
same weights; a naive loop for Caffe's within-channel LRN.
"""

import copy
import math

import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from detkit.config import get_cfg
from detkit.layers import convert_frozen_batchnorm, get_norm
from detkit.modeling.backbone import ZF, Backbone, ResNetC4, TinyBackbone, build_backbone
from detkit.modeling.backbone.vgg import VGG16
from detkit.modeling.backbone.zf import WithinChannelLRN

# name -> (output feature, channels) with default config values.
BACKBONES = {
    "VGG16": ("conv5_3", 512),
    "ZF": ("conv5", 256),
    "ResNetC4": ("res4", 1024),
    "TinyBackbone": ("stage4", 256),
}


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_paper_input_gives_38x63_map(name):
    # PAPER.md "Backbone": a 600 x 1000 input gives a 38 x 63 map. Shapes only: the meta
    # device runs the layers without computing values.
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.NAME = name
    with torch.device("meta"):
        backbone = build_backbone(cfg)
        features = backbone(torch.empty(1, 3, 600, 1000))
    feature_name, channels = BACKBONES[name]
    assert isinstance(backbone, Backbone) and type(backbone).__name__ == name
    assert set(features) == set(backbone.output_shape()) == {feature_name}
    spec = backbone.output_shape()[feature_name]
    assert (spec.channels, spec.stride) == (channels, 16)
    assert tuple(features[feature_name].shape) == (1, channels, 38, 63)


# 50 x 70 by hand, layer by layer (every stride-2 step rounds up here):
#   VGG16 (2x2 pools, ceil):       50x70 -> 25x35 -> 13x18 -> 7x9 -> 4x5
#   ZF conv1/pool1/conv2/pool2:    50x70 -> 25x35 -> 13x18 -> 7x9 -> 4x5
#   ResNet conv1/maxpool/res3/res4: 50x70 -> 25x35 -> 13x18 -> 7x9 -> 4x5
#   Tiny stages 1-4:               50x70 -> 25x35 -> 13x18 -> 7x9 -> 4x5
# and 32 x 48 -> 2 x 3 (= size / stride 16).
@pytest.mark.parametrize(
    "make",
    [
        lambda: VGG16(freeze_at=0),
        lambda: ZF(),
        lambda: ResNetC4(depth=50),
        lambda: TinyBackbone(channels=[4, 8, 8, 12], norm="BN"),
    ],
    ids=["VGG16", "ZF", "ResNetC4", "TinyBackbone"],
)
def test_forward_shapes_on_small_inputs(make):
    torch.manual_seed(0)
    backbone = make().eval()
    ((name, spec),) = backbone.output_shape().items()
    assert spec.stride == 16
    sizes = [((50, 70), (4, 5)), ((32, 48), (32 // spec.stride, 48 // spec.stride))]
    with torch.no_grad():
        for (height, width), expected in sizes:
            feature = backbone(torch.randn(2, 3, height, width))[name]
            assert tuple(feature.shape) == (2, spec.channels, *expected)


def _assert_frozen_exactly(model, frozen_names, image_size=(32, 32)):
    """requires_grad False for exactly ``frozen_names``; after a backward they have no
    gradient and every other parameter has one."""
    actual = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert actual == set(frozen_names)
    model.train()
    features = model(torch.randn(1, 3, *image_size))
    sum(f.sum() for f in features.values()).backward()
    for n, p in model.named_parameters():
        if n in frozen_names:
            assert p.grad is None, n
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, n


def test_vgg16_freezes_conv1_and_conv2_by_name():
    # Paper: conv1_x and conv2_x frozen. torchvision indices: conv1_1 0, conv1_2 2,
    # conv2_1 5, conv2_2 7; conv3_1 is 10.
    frozen = {f"features.{i}.{k}" for i in (0, 2, 5, 7) for k in ("weight", "bias")}
    _assert_frozen_exactly(VGG16(freeze_at=2), frozen)


def test_vgg16_freeze_at_counts_stages():
    # Stage ends 5, 10, 17, 24, 30 -> convs per stage 2, 2, 3, 3, 3 -> 2 params each.
    for freeze_at, frozen_convs in [(0, 0), (1, 2), (3, 7), (5, 13)]:
        with torch.device("meta"):
            model = VGG16(freeze_at=freeze_at)
        frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
        assert len(frozen) == 2 * frozen_convs
    with pytest.raises(ValueError, match="MODEL.BACKBONE.FREEZE_AT"):
        VGG16(freeze_at=6)


def test_zf_freeze_and_layers():
    model = ZF(freeze_at=2)
    _assert_frozen_exactly(model, {"conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias"})
    widths = [getattr(model, f"conv{i}").out_channels for i in range(1, 6)]
    assert widths == [96, 256, 384, 384, 256]
    assert all(p.requires_grad for p in ZF().parameters())  # paper: all ZF layers trained


def _naive_within_channel_lrn(x, size, alpha, beta, k):
    """Caffe WITHIN_CHANNEL LRN pixel by pixel: zero-padded window, mean over size*size."""
    out = torch.empty_like(x)
    n, c, h, w = x.shape
    r = size // 2
    for b in range(n):
        for ch in range(c):
            for i in range(h):
                for j in range(w):
                    window = x[b, ch, max(i - r, 0) : i + r + 1, max(j - r, 0) : j + r + 1]
                    mean = (window**2).sum() / size**2
                    out[b, ch, i, j] = x[b, ch, i, j] / (k + alpha * mean) ** beta
    return out


@pytest.mark.parametrize("alpha,k", [(5e-5, 1.0), (0.7, 2.0)])
def test_within_channel_lrn_matches_naive_loop(alpha, k):
    x = torch.randn(2, 3, 5, 6, generator=torch.Generator().manual_seed(0)) * 3
    lrn = WithinChannelLRN(3, alpha=alpha, beta=0.75, k=k)
    expected = _naive_within_channel_lrn(x, 3, alpha, 0.75, k)
    torch.testing.assert_close(lrn(x), expected)
    if alpha > 0.1:  # the normalization does something, and not across channels
        assert not torch.allclose(lrn(x), x)
        assert not torch.allclose(lrn(x), nn.LocalResponseNorm(3, alpha, 0.75, k)(x))


def test_resnet_freeze_converts_bn_and_blocks_gradients():
    model = ResNetC4(depth=50, norm="BN", freeze_at=2)
    frozen = {
        n for n, _ in model.named_parameters() if n.split(".")[0] in ("conv1", "bn1", "layer1")
    }
    # conv1 has no bias; frozen BNs become FrozenBN, whose values are buffers. Left: conv1
    # and layer1's convs: 3 per bottleneck x 3 blocks + the first block's downsample conv.
    assert "conv1.weight" in frozen and len(frozen) == 1 + 3 * 3 + 1
    assert isinstance(model.bn1, FrozenBatchNorm2d)
    assert isinstance(model.layer1[0].bn1, FrozenBatchNorm2d)
    assert isinstance(model.layer2[0].bn1, nn.BatchNorm2d)
    stats_before = model.layer2[0].bn1.running_mean.clone()
    _assert_frozen_exactly(model, frozen, image_size=(48, 48))
    # Trainable BN still updates its statistics in training; frozen stages have none to move.
    assert not torch.equal(model.layer2[0].bn1.running_mean, stats_before)


def test_resnet_freeze_at_zero_trains_everything_and_bad_values_fail():
    with torch.device("meta"):
        model = ResNetC4(depth=50, norm="FrozenBN", freeze_at=0)
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError, match="freeze_at must be in"):
        ResNetC4(freeze_at=5)


def test_tiny_freeze_and_norm():
    model = TinyBackbone(channels=[4, 8, 8, 12], blocks_per_stage=1, norm="GN", freeze_at=1)
    frozen = {n for n, _ in model.named_parameters() if n.startswith("stage1.")}
    # Stage 1 = strided block + 1 extra block, each conv weight + GN weight/bias (no conv bias).
    assert len(frozen) == 2 * 3 and "stage1.0.conv.weight" in frozen
    assert model.stage2[0].conv.bias is None
    _assert_frozen_exactly(model, frozen)
    plain = TinyBackbone(channels=[4, 8, 8, 12], blocks_per_stage=0, norm="")
    # No norm: each stage is one conv with a bias: 4 stages x (weight, bias).
    assert len(list(plain.parameters())) == 8 and plain.stage1[0].norm is None


def test_torchvision_vgg16_features_load_by_name():
    # torchvision's vgg16 built on the meta device (no weights computed), then given random
    # values; its features[:30] (through conv5_3's ReLU) must load into VGG16 strictly.
    generator = torch.Generator().manual_seed(0)
    with torch.device("meta"):
        reference = torchvision.models.vgg16(weights=None).features
    state = {}
    for key, value in reference.state_dict().items():
        fan_in = math.prod(value.shape[1:]) if value.dim() > 1 else 1
        state[key] = torch.randn(value.shape, generator=generator) * math.sqrt(2.0 / fan_in)
    reference.load_state_dict(state, assign=True)
    ours = VGG16(freeze_at=2).eval()
    sliced = {f"features.{k}": v for k, v in state.items() if int(k.split(".")[0]) < 30}
    ours.load_state_dict(sliced, strict=True)
    x = torch.randn(1, 3, 32, 48, generator=generator)  # multiple of 16: pool rounding agrees
    with torch.no_grad():
        torch.testing.assert_close(ours(x)["conv5_3"], reference[:30](x))


@pytest.fixture(scope="module")
def torchvision_resnet50():
    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None).eval()
    for module in model.modules():  # non-trivial statistics so BN actually matters
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.uniform_(module.bias, -0.2, 0.2)
    return model


@pytest.mark.parametrize("norm", ["FrozenBN", "BN"])
def test_torchvision_resnet50_stem_and_res2_to_res4_load_by_name(torchvision_resnet50, norm):
    prefixes = ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.")
    state = {k: v for k, v in torchvision_resnet50.state_dict().items() if k.startswith(prefixes)}
    ours = ResNetC4(depth=50, norm=norm, freeze_at=2)
    ours.load_state_dict(state, strict=True)
    ours.eval()
    tv = torchvision_resnet50
    reference = nn.Sequential(
        tv.conv1, tv.bn1, tv.relu, tv.maxpool, tv.layer1, tv.layer2, tv.layer3
    )
    # Compared in float64. In float32 the two models sum ~30 convolutions of up to 2,304 terms
    # over activations up to ~150 in different orders (the conv algorithm depends on the
    # thread count and the CPU), so they differ by ~1e-4 absolute (8 x eps32 x max|value|),
    # an error of the arithmetic, not of the loading. In float64 that rounding is < 1e-12;
    # a tolerance of 1e-10 x max|value| (~1e-8) leaves a margin of 10^4 above it and stays
    # far below any real difference (a normalization epsilon off by 1e-5 moves values by ~1e-2).
    ours, reference = ours.double(), copy.deepcopy(reference).double()
    x = torch.randn(1, 3, 50, 70, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        expected = reference(x)
        scale = expected.abs().max().item()
        torch.testing.assert_close(ours(x)["res4"], expected, rtol=0, atol=1e-10 * scale)


def test_resnet101_blocks_per_stage():
    with torch.device("meta"):
        model = ResNetC4(depth=101)
    assert [len(model.layer1), len(model.layer2), len(model.layer3)] == [3, 4, 23]


def test_bad_resnet_depth_and_norm_from_config():
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.NAME = "ResNetC4"
    cfg.MODEL.RESNETS.DEPTH = 34
    with pytest.raises(ValueError, match=r"depth 34.*MODEL.RESNETS.DEPTH.*50, 101"):
        build_backbone(cfg)
    cfg.MODEL.RESNETS.DEPTH = 50
    cfg.MODEL.RESNETS.NORM = "GN"
    with pytest.raises(ValueError, match=r"'GN'.*MODEL.RESNETS.NORM.*'FrozenBN', 'BN'"):
        build_backbone(cfg)


def test_tiny_from_config_reads_its_keys():
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.NAME = "TinyBackbone"
    cfg.MODEL.BACKBONE.NORM = "GN"
    cfg.MODEL.BACKBONE.FREEZE_AT = 1
    cfg.MODEL.TINY.CHANNELS = [8, 16, 48, 24]
    cfg.MODEL.TINY.BLOCKS_PER_STAGE = 2
    model = build_backbone(cfg)
    assert model.output_shape()["stage4"].channels == 24
    assert [len(getattr(model, f"stage{i}")) for i in range(1, 5)] == [3, 3, 3, 3]
    # GN groups: the largest divisor <= 32 of 8, 16, 48, 24.
    groups = [getattr(model, f"stage{i}")[0].norm.num_groups for i in range(1, 5)]
    assert groups == [8, 16, 24, 24]
    assert not any(p.requires_grad for p in model.stage1.parameters())
    assert all(p.requires_grad for p in model.stage2.parameters())
    # MODEL.TINY.BLOCKS: a number of extra blocks per stage, in place of BLOCKS_PER_STAGE.
    cfg.MODEL.TINY.BLOCKS = [0, 2, 1, 3]
    model = build_backbone(cfg)
    assert [len(getattr(model, f"stage{i}")) for i in range(1, 5)] == [1, 3, 2, 4]
    image = torch.randn(1, 3, 48, 80)
    assert model(image)["stage4"].shape == (1, 24, 3, 5)  # strides unchanged
    cfg.MODEL.TINY.BLOCKS = [0, 1]
    with pytest.raises(ValueError, match=r"MODEL.TINY.BLOCKS\b.*\[0, 1\]"):
        build_backbone(cfg)
    cfg.MODEL.TINY.BLOCKS = []
    cfg.MODEL.BACKBONE.NORM = "LN"
    with pytest.raises(ValueError, match=r"'LN'.*'', 'BN', 'FrozenBN', 'GN'"):
        build_backbone(cfg)
    cfg.MODEL.BACKBONE.NORM = ""
    cfg.MODEL.TINY.CHANNELS = [8, 16, 32]
    with pytest.raises(ValueError, match="MODEL.TINY.CHANNELS"):
        build_backbone(cfg)


def test_get_norm_names():
    assert get_norm("", 8) is None
    assert type(get_norm("BN", 8)) is nn.BatchNorm2d
    assert type(get_norm("FrozenBN", 8)) is FrozenBatchNorm2d
    for channels, groups in [(64, 32), (256, 32), (48, 24), (20, 20), (7, 7)]:
        assert get_norm("GN", channels).num_groups == groups
    with pytest.raises(ValueError, match="Valid names"):
        get_norm("SyncBN", 8)


def test_convert_frozen_batchnorm_keeps_the_eval_function():
    generator = torch.Generator().manual_seed(0)
    bn = nn.BatchNorm2d(4).eval()
    bn.running_mean.copy_(torch.randn(4, generator=generator))
    bn.running_var.copy_(torch.rand(4, generator=generator) + 0.5)
    with torch.no_grad():
        bn.weight.copy_(torch.randn(4, generator=generator))
        bn.bias.copy_(torch.randn(4, generator=generator))
    block = nn.Sequential(nn.Conv2d(2, 4, 1), bn)
    x = torch.randn(3, 2, 5, 5, generator=generator)
    with torch.no_grad():
        expected = block(x)
        converted = convert_frozen_batchnorm(block).train()  # train mode: no stats update
        assert isinstance(converted[1], FrozenBatchNorm2d)
        torch.testing.assert_close(converted(x), expected)


def test_tiny_backbone_returns_the_requested_stages():
    from detkit.modeling.backbone.tiny import TinyBackbone

    backbone = TinyBackbone(channels=[4, 6, 8, 10], out_features=["stage3", "stage4"])
    out = backbone(torch.rand(1, 3, 64, 96))
    # Stage i halves the size i times: 64x96 -> 8x12 at stride 8, 4x6 at stride 16.
    assert out["stage3"].shape == (1, 8, 8, 12) and out["stage4"].shape == (1, 10, 4, 6)
    assert {k: (v.channels, v.stride) for k, v in backbone.output_shape().items()} == {
        "stage3": (8, 8),
        "stage4": (10, 16),
    }
    only3 = TinyBackbone(channels=[4, 6, 8, 10], out_features=["stage3"])
    assert set(only3(torch.rand(1, 3, 64, 96))) == {"stage3"}
    with pytest.raises(ValueError, match="MODEL.TINY.OUT_FEATURES"):
        TinyBackbone(out_features=["stage5"])


def _receptive_field(backbone: nn.Module, size: int) -> int:
    """Width of the input region that the central output cell depends on (all-ones weights,
    positive input: every ReLU passes, so no gradient cancels)."""
    for p in backbone.parameters():
        nn.init.ones_(p) if p.dim() > 1 else nn.init.zeros_(p)
    x = torch.ones(1, 3, size, size, requires_grad=True)
    out = backbone(x)["stage4"]
    out[0, 0, out.shape[2] // 2, out.shape[3] // 2].backward()
    columns = x.grad[0, 0].abs().sum(0).nonzero()
    return int(columns.max() - columns.min() + 1)


def test_tiny_stage4_dilation_keeps_stride_8_and_grows_the_receptive_field():
    strided = TinyBackbone(channels=[2, 2, 2, 2])
    dilated = TinyBackbone(channels=[2, 2, 2, 2], stage4_dilation=2)
    assert dilated(torch.rand(1, 3, 64, 96))["stage4"].shape == (1, 2, 8, 12)
    assert dilated.output_shape()["stage4"].stride == 8
    # By hand: stages 1-3 (3x3 convs at jumps 1, 2, 2, 4, 4, 8) reach 1 + 2 * (1+2+2+4+4+8)
    # = 43 px. Strided stage 4 adds 2*8 (stride-2 conv) + 2*16 = 91; dilated stage 4 adds
    # two convs of span 2 * 2 * 8 = 32 each: 107.
    assert _receptive_field(strided, 256) == 91
    assert _receptive_field(dilated, 256) == 107
    with pytest.raises(ValueError, match="STAGE4_DILATION"):
        TinyBackbone(stage4_dilation=4)


def test_select_feature_shapes_keeps_order_and_names_the_key():
    from detkit.layers import ShapeSpec
    from detkit.modeling import select_feature_shapes

    shapes = {"stage3": ShapeSpec(channels=8, stride=8), "stage4": ShapeSpec(16, stride=16)}
    assert select_feature_shapes(shapes, ["stage4", "stage3"], "K") == [
        shapes["stage4"],
        shapes["stage3"],
    ]
    with pytest.raises(KeyError, match=r"MODEL.RPN.IN_FEATURES names \['res4'\].*stage3"):
        select_feature_shapes(shapes, ["res4"], "MODEL.RPN.IN_FEATURES")


def test_resnet_returns_the_stages_of_out_features():
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.NAME, cfg.MODEL.BACKBONE.FREEZE_AT = "ResNet", 0
    cfg.MODEL.RESNETS.NORM = "BN"
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3"]  # not the default res2..res5
    backbone = build_backbone(cfg)
    shapes = backbone.output_shape()
    assert {k: (s.channels, s.stride) for k, s in shapes.items()} == {
        "res2": (256, 4),
        "res3": (512, 8),
    }
    # Later stages feed nothing: not built, so no parameter goes unused in training.
    assert backbone.layer3 is None and backbone.layer4 is None
    outputs = backbone(torch.rand(1, 3, 64, 96))
    assert {k: tuple(v.shape[-2:]) for k, v in outputs.items()} == {
        "res2": (16, 24),
        "res3": (8, 12),
    }
    with pytest.raises(ValueError, match="among"):
        cfg.MODEL.RESNETS.OUT_FEATURES = ["res6"]
        build_backbone(cfg)
