"""MODEL.WEIGHTS: torchvision:// names, URLs that cannot be reached, ImageNet state_dicts
renamed onto real detkit detectors, and fine-tuning with another number of classes.

Oracles: torchvision's published weight URLs (strings); every detector tensor equal to the
torchvision tensor it must come from (key correspondence written out here, independently
of the mapping code); the skip message naming keys and both shapes. No network is used.
"""

import pytest
import torch
import torchvision

from detkit.checkpoint import (
    DetectionCheckpointer,
    cached_torchvision_weights,
    convert_imagenet_state_dict,
    detect_imagenet_format,
    resolve_torchvision_url,
)
from detkit.config import get_cfg
from detkit.modeling import build_model

VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"


def _model(config_file, **model):
    cfg = get_cfg()
    cfg.merge_from_file(config_file)
    cfg.MODEL.DEVICE = "cpu"
    for key, value in model.items():
        cfg.MODEL.ROI_HEADS[key] = value
    return build_model(cfg)


@pytest.mark.parametrize(
    "name, url",
    [
        ("torchvision://vgg16", VGG16_URL),
        ("torchvision://resnet50", "https://download.pytorch.org/models/resnet50-0676ba61.pth"),
        ("torchvision://resnet101", "https://download.pytorch.org/models/resnet101-63fe2227.pth"),
        (
            "torchvision://resnet50/IMAGENET1K_V2",
            "https://download.pytorch.org/models/resnet50-11ad3fa6.pth",
        ),
    ],
)
def test_torchvision_names_resolve_to_published_urls(name, url):
    assert resolve_torchvision_url(name) == url


def test_unknown_torchvision_names():
    with pytest.raises(ValueError, match="no model 'vgg17'"):
        resolve_torchvision_url("torchvision://vgg17")
    with pytest.raises(ValueError, match="IMAGENET1K_V1, IMAGENET1K_FEATURES"):
        resolve_torchvision_url("torchvision://vgg16/IMAGENET1K_V9")


def test_torchvision_cache_is_used_when_present(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    assert cached_torchvision_weights(VGG16_URL) is None
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "vgg16-397923af.pth").write_bytes(b"")
    expected = str(tmp_path / "checkpoints" / "vgg16-397923af.pth")
    assert cached_torchvision_weights(VGG16_URL) == expected


def _refuse_network(path, **kwargs):
    raise OSError(f"<urlopen error [Errno 101] Network is unreachable> ({path})")


def test_unreachable_url_says_how_to_use_a_local_file(monkeypatch):
    checkpointer = DetectionCheckpointer(torch.nn.Linear(1, 1))
    monkeypatch.setattr(checkpointer.path_manager, "get_local_path", _refuse_network)
    with pytest.raises(RuntimeError) as info:
        checkpointer.load("https://example.com/weights/detector.pth")
    message = str(info.value)
    assert "Network is unreachable" in message
    assert "MODEL.WEIGHTS /path/to/detector.pth" in message


def test_unreachable_torchvision_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # nothing cached
    checkpointer = DetectionCheckpointer(torch.nn.Linear(1, 1))
    monkeypatch.setattr(checkpointer.path_manager, "get_local_path", _refuse_network)
    with pytest.raises(RuntimeError) as info:
        checkpointer.load("torchvision://vgg16")
    message = str(info.value)
    assert f"wget {VGG16_URL}" in message
    assert "MODEL.WEIGHTS /path/to/vgg16-397923af.pth" in message
    assert str(tmp_path / "checkpoints") in message


def test_format_detection_and_non_finite_tensors():
    with pytest.raises(ValueError, match="vgg16_bn"):
        # torchvision's vgg16_bn layout: BN after each conv (features.1 is a BatchNorm).
        keys = ["features.0.weight", "features.1.running_mean", "classifier.0.weight"]
        detect_imagenet_format(dict.fromkeys(keys, torch.zeros(1)))
    state_dict = {
        "features.0.weight": torch.ones(2),
        "classifier.0.weight": torch.full((2,), float("nan")),  # IMAGENET1K_FEATURES-style
        "classifier.6.weight": torch.ones(2),
    }
    assert detect_imagenet_format(state_dict) == "vgg16"
    converted = convert_imagenet_state_dict(state_dict, "vgg16", ["backbone.features.0.weight"])
    assert list(converted) == ["backbone.features.0.weight"]


@pytest.fixture(scope="module")
def vgg16_detector():
    """The paper's detector (built once: fc6 alone has 103M weights)."""
    return _model("configs/faster_rcnn_vgg16.yaml")


def test_vgg16_imagenet_weights_load_onto_the_detector(vgg16_detector, tmp_path, log):
    source = torchvision.models.vgg16(weights=None).state_dict()
    path = tmp_path / "vgg16-imagenet.pth"
    torch.save(source, path)
    DetectionCheckpointer(vgg16_detector).load(str(path))
    loaded = vgg16_detector.state_dict()
    # The correspondence, written out: conv layers by index, fc6 = classifier.0,
    # fc7 = classifier.3; classifier.6 (1000 classes) is not used.
    conv_indices = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    expected = {}
    for i in conv_indices:
        for kind in ("weight", "bias"):
            expected[f"backbone.features.{i}.{kind}"] = f"features.{i}.{kind}"
    for fc, index in (("fc6", 0), ("fc7", 3)):
        for kind in ("weight", "bias"):
            expected[f"roi_heads.box_head.{fc}.{kind}"] = f"classifier.{index}.{kind}"
    assert len(expected) == len(source) - 2
    for target, key in expected.items():
        assert torch.equal(loaded[target], source[key]), target
    # New layers reported once, as expected; nothing reported unused or skipped.
    assert log.text.count("not in the checkpoint") == 1
    assert "proposal_generator.head.conv.{bias, weight}" in log.text
    assert "not used by the model" not in log.text and "Skipped" not in log.text


def test_resnet50_imagenet_weights_load_onto_the_c4_detector(tmp_path, log):
    detector = _model("configs/faster_rcnn_r50_c4.yaml")
    torch.manual_seed(0)
    source = torchvision.models.resnet50(weights=None).state_dict()
    for value in source.values():  # random values everywhere, BN statistics included
        if value.is_floating_point():
            value.copy_(torch.rand_like(value) + 0.5)
    path = tmp_path / "resnet50-imagenet.pth"
    torch.save(source, path)
    DetectionCheckpointer(detector).load(str(path))
    loaded = detector.state_dict()
    checked = 0
    for key, value in source.items():
        if key.startswith("fc.") or key.endswith("num_batches_tracked"):
            continue  # the ImageNet classifier; FrozenBN keeps no batch counter
        stage = key.split(".")[0]
        prefix = "roi_heads.box_head." if stage == "layer4" else "backbone."
        assert torch.equal(loaded[prefix + key], value), key
        checked += 1
    # stem (1 conv + 4 BN tensors) + res2..res5 of ResNet-50: 265 weights and statistics.
    assert checked == 265
    assert type(detector.backbone.bn1).__name__ == "FrozenBatchNorm2d"
    assert "not used by the model" not in log.text and "Skipped" not in log.text


def test_fine_tuning_with_another_number_of_classes(tmp_path, log):
    source = _model("configs/quickstart/faster_rcnn_tiny.yaml")  # 3 classes
    DetectionCheckpointer(source, str(tmp_path)).save("model_final", iteration=99)
    target = _model("configs/quickstart/faster_rcnn_tiny.yaml", NUM_CLASSES=5)
    initial = {k: v.clone() for k, v in target.state_dict().items()}
    DetectionCheckpointer(target).load(str(tmp_path / "model_final.pth"))
    predictor = "roi_heads.box_predictor."
    for key, value in target.state_dict().items():
        expected = initial[key] if key.startswith(predictor) else source.state_dict()[key]
        assert torch.equal(value, expected), key
    for line in [
        "roi_heads.box_predictor.cls_score.weight: (4, 256) in the checkpoint, (6, 256)",
        "roi_heads.box_predictor.cls_score.bias: (4,) in the checkpoint, (6,)",
        "roi_heads.box_predictor.bbox_pred.weight: (16, 256) in the checkpoint, (24, 256)",
        "roi_heads.box_predictor.bbox_pred.bias: (16,) in the checkpoint, (24,)",
    ]:
        assert line in log.text
    assert "MODEL.ROI_HEADS.NUM_CLASSES" in log.text
    assert "not in the checkpoint" not in log.text  # skipped keys are reported once


def test_weights_of_another_architecture_fail(tmp_path):
    detector = _model("configs/quickstart/faster_rcnn_tiny.yaml")
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(ValueError, match="None of the .* tensors of the checkpoint fits"):
        DetectionCheckpointer(detector).load(str(path))
