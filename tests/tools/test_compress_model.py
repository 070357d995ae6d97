"""tools/compress_model.py: a trained checkpoint converted to the factorized box head loads
into the model its written config builds, with the same outputs at full rank."""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

from detkit.checkpoint import DetectionCheckpointer
from detkit.config import get_cfg
from detkit.layers import LowRankLinear
from detkit.modeling import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(ROOT, "configs/quickstart/faster_rcnn_tiny.yaml")


def _tool():
    spec = importlib.util.spec_from_file_location(
        "compress_model", os.path.join(ROOT, "tools/compress_model.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _head_outputs(config_file: str, weights: str) -> torch.Tensor:
    cfg = get_cfg()
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(["MODEL.DEVICE", "cpu"])
    model = build_model(cfg).eval()
    DetectionCheckpointer(model).load(weights)
    torch.manual_seed(5)
    pooled = torch.randn(6, 64, 7, 7)
    with torch.no_grad():
        return model.roi_heads.box_head(pooled), model


@pytest.mark.parametrize(("ranks", "exact"), [(["256", "256"], True), (["32", "8"], False)])
def test_converted_checkpoint_loads_and_matches(tmp_path, capsys, ranks, exact):
    torch.manual_seed(0)
    cfg = get_cfg()
    cfg.merge_from_file(TINY)
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    for norm in model.roi_heads.box_head.fc_norms:  # trained-looking BN statistics
        norm.running_mean.uniform_(-1, 1)
    DetectionCheckpointer(model, str(tmp_path)).save("model_final")
    config_file = tmp_path / "config.yaml"
    config_file.write_text(cfg.dump())
    out = tmp_path / "svd"
    weights = str(tmp_path / "model_final.pth")
    argv = ["--config-file", str(config_file), "--svd-ranks", *ranks, "--output", str(out)]
    assert _tool().main([*argv, "MODEL.WEIGHTS", weights]) == 0
    printed = capsys.readouterr().out
    assert f"fcs.0: 3136 -> 256, rank {ranks[0]}" in printed
    reference, _ = _head_outputs(str(config_file), weights)
    compressed, svd_model = _head_outputs(str(out / "config.yaml"), str(out / "model_svd.pth"))
    fc6 = svd_model.roi_heads.box_head.fcs[0]
    assert isinstance(fc6, LowRankLinear) and fc6.rank == int(ranks[0])
    if exact:  # full rank: the same function
        assert "1.0000 of the energy kept" in printed
        torch.testing.assert_close(compressed, reference, atol=1e-4, rtol=1e-4)
    else:
        assert not torch.allclose(compressed, reference, atol=1e-4)
        assert (compressed - reference).norm() < reference.norm()


def test_refuses_an_already_compressed_config_or_no_weights(tmp_path):
    with pytest.raises(ValueError, match="MODEL.WEIGHTS is empty"):
        _tool().main(["--config-file", TINY, "--svd-ranks", "8", "--output", str(tmp_path)])
    argv = ["--config-file", TINY, "--svd-ranks", "8", "--output", str(tmp_path)]
    with pytest.raises(ValueError, match="already has MODEL.ROI_BOX_HEAD.SVD_RANKS"):
        _tool().main([*argv, "MODEL.ROI_BOX_HEAD.SVD_RANKS", "[8]", "MODEL.WEIGHTS", "x.pth"])
