"""Box heads (VGGFCHead, ConvFCHead, Res5Head): pooled RoIs -> one vector per RoI.

Oracles: torchvision's VGG16 classifier and ResNet-50 layer4 on the same weights; a direct
functional computation; output sizes computed by hand.
"""

import pytest
import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from detkit.config import get_cfg
from detkit.layers import ShapeSpec
from detkit.modeling.backbone.vgg import VGG16_CLASSIFIER_TO_BOX_HEAD
from detkit.modeling.roi_heads import ConvFCHead, Res5Head, VGGFCHead, build_roi_box_head


def test_vgg_head_loads_torchvision_fc6_fc7():
    torch.manual_seed(0)
    vgg = torchvision.models.vgg16(weights=None).eval()  # random weights, never downloaded
    # Built without initialization (meta, then empty memory): loading must fill everything.
    with torch.device("meta"):
        head = VGGFCHead(in_channels=512, pooled_height=7, pooled_width=7, fc_dim=4096)
    head.to_empty(device="cpu")
    assert VGG16_CLASSIFIER_TO_BOX_HEAD == {"classifier.0.": "fc6.", "classifier.3.": "fc7."}
    head.load_imagenet_classifier(vgg.state_dict())
    head.eval()
    x = torch.randn(3, 512, 7, 7)
    with torch.no_grad():
        # classifier[:5] = fc6, ReLU, Dropout, fc7, ReLU (the last dropout is identity in eval).
        expected = vgg.classifier[:5](x.flatten(1))
        torch.testing.assert_close(head(x), expected)
    assert head.output_shape() == ShapeSpec(channels=4096)


def _fake_classifier(fc6_in, fc_dim):
    return {
        "classifier.0.weight": torch.ones(fc_dim, fc6_in),
        "classifier.0.bias": torch.ones(fc_dim),
        "classifier.3.weight": torch.ones(fc_dim, fc_dim),
        "classifier.3.bias": torch.ones(fc_dim),
        "classifier.6.weight": torch.ones(1000, fc_dim),  # the 1000-way layer is not used
    }


def test_vgg_head_refuses_classifier_of_another_shape():
    head = VGGFCHead(in_channels=2, pooled_height=3, pooled_width=3, fc_dim=16)
    before = {k: v.clone() for k, v in head.state_dict().items()}
    # fc6 expects 2*3*3 = 18 inputs; the state dict's fc6 takes 32. fc7 (16x16) would fit,
    # but nothing may be copied when one shape is wrong.
    with pytest.raises(ValueError, match=r"\(16, 32\).*\(16, 18\).*FC_DIM 4096"):
        head.load_imagenet_classifier(_fake_classifier(32, 16))
    for key, value in head.state_dict().items():
        assert torch.equal(value, before[key]), key
    with pytest.raises(KeyError, match="classifier.3.bias"):
        state = _fake_classifier(18, 16)
        del state["classifier.3.bias"]
        head.load_imagenet_classifier(state)
    head.load_imagenet_classifier(_fake_classifier(18, 16))  # fits: everything becomes 1
    assert all(torch.all(v == 1) for v in head.state_dict().values())


def test_vgg_head_dropout_only_in_training():
    head = VGGFCHead(in_channels=2, pooled_height=2, pooled_width=2, fc_dim=64, dropout=0.5)
    nn.init.constant_(head.fc6.weight, 0.1)
    nn.init.constant_(head.fc7.weight, 0.1)
    x = torch.ones(4, 2, 2, 2)
    head.eval()
    # Every fc6 unit = 8 * 0.1 = 0.8; every fc7 unit = 64 * 0.8 * 0.1 = 5.12.
    torch.testing.assert_close(head(x), torch.full((4, 64), 5.12))
    head.train()
    torch.manual_seed(0)
    out = head(x)
    # Dropout 0.5 zeroes units and doubles the rest: fc6 units are 0 or 1.6, so row r's fc7
    # units are 0.16 k_r (k_r fc6 units kept), then 0 or 0.32 k_r. Each row's non-zero values
    # are equal and a multiple of 0.32 (an integer k_r <= 64); about half the units are 0.
    for row in out:
        kept = row[row != 0]
        assert torch.allclose(kept, kept[0].expand_as(kept))
        multiple = kept[0].item() / 0.32
        assert abs(multiple - round(multiple)) < 1e-4 and 1 <= round(multiple) <= 64
    assert 0.35 < (out == 0).float().mean().item() < 0.65  # 256 units: std of the mean 0.03


def test_conv_fc_head_matches_functional_computation():
    torch.manual_seed(0)
    head = ConvFCHead(
        in_channels=4,
        pooled_height=5,
        pooled_width=5,
        num_conv=2,
        conv_dim=6,
        num_fc=1,
        fc_dim=10,
        dropout=0.0,
    ).eval()
    x = torch.randn(3, 4, 5, 5)
    conv1, conv2 = head.convs
    expected = F.relu(conv2(F.relu(conv1(x)))).flatten(1)
    expected = F.relu(F.linear(expected, head.fcs[0].weight, head.fcs[0].bias))
    torch.testing.assert_close(head(x), expected)
    assert head.output_shape().channels == 10 and head(x).shape == (3, 10)


@pytest.mark.parametrize(
    "num_conv,num_fc,expected_dim",
    # Hand-computed D for a 4 x 5 x 5 input: fc_dim, conv_dim * 25, or C * 25 = 100.
    [(2, 1, 10), (2, 0, 6 * 25), (0, 0, 4 * 25), (0, 2, 10)],
)
def test_conv_fc_head_output_dim(num_conv, num_fc, expected_dim):
    head = ConvFCHead(
        in_channels=4,
        pooled_height=5,
        pooled_width=5,
        num_conv=num_conv,
        conv_dim=6,
        num_fc=num_fc,
        fc_dim=10,
    )
    x = torch.randn(3, 4, 5, 5)
    out = head(x)
    assert head.output_shape().channels == expected_dim and out.shape == (3, expected_dim)
    if num_conv == 0 and num_fc == 0:
        assert torch.equal(out, x.flatten(1))  # documented edge case: flatten only


def test_conv_fc_head_rejects_negative_counts():
    with pytest.raises(ValueError, match="NUM_CONV"):
        ConvFCHead(in_channels=4, pooled_height=5, pooled_width=5, num_conv=-1)


def test_res5_head_matches_torchvision_layer4():
    torch.manual_seed(0)
    resnet = torchvision.models.resnet50(weights=None).eval()
    for module in resnet.layer4.modules():  # non-trivial statistics so BN actually matters
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    head = Res5Head(depth=50, norm="FrozenBN")
    layer4 = {k: v for k, v in resnet.state_dict().items() if k.startswith("layer4.")}
    head.load_state_dict(layer4, strict=True)  # keys map by name
    x = torch.randn(2, 1024, 14, 14)
    with torch.no_grad():
        res5 = head.layer4(x)
        assert res5.shape == (2, 2048, 7, 7)  # first block stride 2: 14 -> 7
        expected = resnet.avgpool(resnet.layer4(x)).flatten(1)
        torch.testing.assert_close(head(x), expected, rtol=1e-4, atol=1e-4)
    assert head.output_shape() == ShapeSpec(channels=2048)
    with pytest.raises(ValueError, match="1024 channels, got 512"):
        Res5Head(in_channels=512)


@pytest.mark.parametrize(
    "name,input_shape,settings,expected_dim",
    [
        ("VGGFCHead", ShapeSpec(channels=16, height=7, width=7), {"FC_DIM": 32}, 32),
        # ConvFCHead: one 8-channel conv keeps 7x7, no fc: D = 8 * 7 * 7.
        (
            "ConvFCHead",
            ShapeSpec(channels=16, height=7, width=7),
            {"NUM_CONV": 1, "CONV_DIM": 8, "NUM_FC": 0},
            8 * 49,
        ),
        ("Res5Head", ShapeSpec(channels=1024, height=14, width=14), {}, 2048),
    ],
)
def test_build_from_config(name, input_shape, settings, expected_dim):
    cfg = get_cfg()
    cfg.MODEL.ROI_BOX_HEAD.NAME = name
    for key, value in settings.items():
        cfg.MODEL.ROI_BOX_HEAD[key] = value
    with torch.device("meta"):  # shapes only
        head = build_roi_box_head(cfg, input_shape=input_shape)
        out = head(torch.empty(5, input_shape.channels, input_shape.height, input_shape.width))
    assert type(head).__name__ == name
    assert head.output_shape().channels == expected_dim and out.shape == (5, expected_dim)
    # Res5Head needs only the channels; the fc heads also need the pooled height and width.
    incomplete = None if name == "Res5Head" else ShapeSpec(channels=input_shape.channels)
    with pytest.raises(ValueError, match="input_shape"):
        build_roi_box_head(cfg, input_shape=incomplete)


@pytest.mark.parametrize("norm", ["BN", "GN"])
def test_conv_fc_head_norm_matches_functional_computation(norm):
    torch.manual_seed(0)
    head = ConvFCHead(
        in_channels=4,
        pooled_height=5,
        pooled_width=5,
        num_conv=1,
        conv_dim=8,
        num_fc=1,
        fc_dim=64,
        norm=norm,
    ).train()
    # Normalized layers carry no bias: the norm's shift replaces it.
    assert head.convs[0].bias is None and head.fcs[0].bias is None
    x = torch.randn(6, 4, 5, 5)
    y = head.convs[0](x)
    if norm == "BN":  # statistics over RoIs (and positions), per channel
        y = F.batch_norm(y, None, None, training=True)
    else:  # 8 channels -> 8 groups of 1 channel, per RoI
        y = F.group_norm(y, 8)
    y = F.linear(F.relu(y).flatten(1), head.fcs[0].weight)
    y = F.batch_norm(y, None, None, training=True) if norm == "BN" else F.group_norm(y, 32)
    # (GN: 32 groups of 2 features.) Fresh norm layers have weight 1 and bias 0, so the
    # affine part is the identity.
    torch.testing.assert_close(head(x), F.relu(y))


def test_conv_fc_head_rejects_unknown_norm():
    with pytest.raises(ValueError, match="MODEL.ROI_BOX_HEAD.NORM"):
        ConvFCHead(in_channels=4, pooled_height=5, pooled_width=5, norm="FrozenBN")
