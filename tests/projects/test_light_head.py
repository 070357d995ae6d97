"""projects/light_head: the LightConvHead box head, its config keys and its config file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from detkit.config import get_cfg
from detkit.modeling import ROI_BOX_HEAD_REGISTRY, build_model
from detkit.modeling.roi_heads import ConvFCHead
from detkit.registry import ComponentNotFoundError
from projects.light_head import LightConvHead

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(REPO_ROOT / "projects/light_head/configs/shapes_light_head.yaml")


def num_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_import_registers_the_head_and_the_config_keys():
    assert ROI_BOX_HEAD_REGISTRY.get("LightConvHead") is LightConvHead
    assert LightConvHead.__module__ == "projects.light_head.box_head"
    assert "LIGHT_HEAD" not in get_cfg().MODEL  # a config gets the keys by naming the plugin
    cfg = get_cfg()
    cfg.merge_from_file(CONFIG)
    assert cfg.IMPORTS == ["projects.light_head"]
    assert cfg.MODEL.LIGHT_HEAD.REDUCED_DIM == 16
    assert cfg.MODEL.ROI_BOX_HEAD.NAME == "LightConvHead"


def test_output_shape_and_values_match_a_hand_computation():
    torch.manual_seed(0)
    head = LightConvHead(
        in_channels=8, pooled_height=3, pooled_width=5, reduced_dim=2, num_fc=1, fc_dim=6
    )
    x = torch.randn(4, 8, 3, 5)
    out = head(x)
    # By hand: the fc sees 2 channels x 3 x 5 bins = 30 values and outputs fc_dim = 6.
    fc = head.fc_head.fcs[0]
    assert fc.in_features == 30
    assert out.shape == (4, 6) and head.output_shape().channels == 6
    assert num_parameters(head) == (8 * 2 + 2) + (30 * 6 + 6)
    # Independent computation: the 1x1 conv as a matrix product over channels.
    weight = head.reduce.weight[:, :, 0, 0]  # [2, 8]
    reduced = torch.einsum("oc,nchw->nohw", weight, x) + head.reduce.bias[None, :, None, None]
    expected = F.relu(F.linear(F.relu(reduced).flatten(1), fc.weight, fc.bias))
    torch.testing.assert_close(out, expected)
    # Without fcs the head returns the flattened reduced features: D = 2 * 3 * 5.
    flat = LightConvHead(in_channels=8, pooled_height=3, pooled_width=5, reduced_dim=2, num_fc=0)
    assert flat(x).shape == (4, 30) and flat.output_shape().channels == 30


def test_quickstart_sized_head_is_a_third_of_the_standard_one():
    # The quickstart's pooled RoIs (64 x 7 x 7) and fc stack (2 x 256, BN: each fc has no
    # bias, its BN a weight and a bias), counted by hand.
    light = LightConvHead(
        in_channels=64,
        pooled_height=7,
        pooled_width=7,
        reduced_dim=16,
        num_fc=2,
        fc_dim=256,
        norm="BN",
    )
    standard = ConvFCHead(
        in_channels=64, pooled_height=7, pooled_width=7, num_fc=2, fc_dim=256, norm="BN"
    )
    assert num_parameters(light) == (64 * 16 + 16) + (16 * 49 * 256 + 2 * 256) + (
        256 * 256 + 2 * 256
    )
    assert num_parameters(standard) == (64 * 49 * 256 + 2 * 256) + (256 * 256 + 2 * 256)
    assert num_parameters(light) == 268_304 and num_parameters(standard) == 869_376


def test_config_builds_a_model_with_the_light_head():
    cfg = get_cfg()
    cfg.merge_from_file(CONFIG)
    cfg.merge_from_list(
        [
            "MODEL.DEVICE",
            "cpu",
            "MODEL.LIGHT_HEAD.REDUCED_DIM",
            "16",
            "MODEL.TINY.CHANNELS",
            "[8, 16, 24, 32]",
        ]
    )
    model = build_model(cfg)
    head = model.roi_heads.box_head
    assert isinstance(head, LightConvHead)
    # RoIs come from stage3 (24 channels here); the reduction width from the config.
    assert head.reduce.in_channels == 24 and head.reduce.out_channels == 16
    assert head.fc_head.fcs[0].in_features == 16 * 7 * 7  # POOLER.RESOLUTION 7
    assert len(head.fc_head.fcs) == cfg.MODEL.ROI_BOX_HEAD.NUM_FC
    assert isinstance(head.fc_head.fc_norms[0], torch.nn.BatchNorm1d)  # ROI_BOX_HEAD.NORM
    assert model.roi_heads.box_predictor.cls_score.in_features == cfg.MODEL.ROI_BOX_HEAD.FC_DIM


def test_misspelled_head_fails_with_known_names_and_the_imports_hint():
    cfg = get_cfg()
    cfg.merge_from_file(CONFIG)
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.ROI_BOX_HEAD.NAME", "LightConvHed"])
    with pytest.raises(ComponentNotFoundError) as info:
        build_model(cfg)
    message = str(info.value)
    assert message.startswith("MODEL.ROI_BOX_HEAD.NAME: No component named 'LightConvHed'")
    assert "Did you mean 'LightConvHead'" in message
    registered = message.split("Registered: ")[1].split(".")[0].split(", ")
    assert {"ConvFCHead", "LightConvHead", "VGGFCHead"} <= set(registered)
    assert "IMPORTS" in message
