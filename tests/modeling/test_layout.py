"""MODEL.MEMORY_FORMAT "measure": the layout is chosen by timing each one, per mode, once per
machine and model (cached); the choice is deterministic given the cache."""

from __future__ import annotations

import json
import os

import pytest
import torch

from detkit.config import get_cfg
from detkit.modeling import build_model
from detkit.modeling.layout import (
    choose_memory_format,
    layout_cache_key,
    layout_cache_path,
    time_layouts,
    time_roi_align,
)
from detkit.modeling.meta_arch import select_memory_format

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _cfg(memory_format: str):
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(ROOT, "configs/quickstart/faster_rcnn_tiny.yaml"))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.MEMORY_FORMAT", memory_format])
    cfg.merge_from_list(["MODEL.TINY.CHANNELS", "[8, 8, 16, 16]", "INPUT.MIN_SIZE_TEST", "64"])
    cfg.merge_from_list(["INPUT.MIN_SIZE_TRAIN", "[48]"])
    return cfg


def _fixed_timer(ms: dict, calls: list):
    def timer(backbone, mode, size):
        calls.append((mode, size))
        return dict(ms)

    return timer


def test_the_faster_layout_is_chosen_then_read_from_the_cache(tmp_path):
    backbone = build_model(_cfg("contiguous")).backbone
    path = str(tmp_path / "layout.json")
    calls: list = []
    slow_channels_last = _fixed_timer({"channels_last": 9.0, "contiguous": 5.0}, calls)
    name, entry = choose_memory_format(backbone, "training", (48, 64), path, slow_channels_last)
    assert name == "contiguous" and entry["ms"]["channels_last"] == 9.0
    # The cached choice is used: a timer that would now disagree is not called.
    fast_channels_last = _fixed_timer({"channels_last": 1.0, "contiguous": 5.0}, calls)
    again, _ = choose_memory_format(backbone, "training", (48, 64), path, fast_channels_last)
    assert again == "contiguous" and calls == [("training", (48, 64))]
    # Another mode, or another input size, is measured on its own.
    other, _ = choose_memory_format(backbone, "inference", (48, 64), path, fast_channels_last)
    assert other == "channels_last" and len(calls) == 2
    with open(path) as f:
        cache = json.load(f)
    assert set(cache) == {
        layout_cache_key(backbone, "training", (48, 64)),
        layout_cache_key(backbone, "inference", (48, 64)),
    }


def test_an_unreadable_cache_is_measured_again(tmp_path):
    backbone = build_model(_cfg("contiguous")).backbone
    path = tmp_path / "layout.json"
    path.write_text("{not json")
    calls: list = []
    timer = _fixed_timer({"channels_last": 2.0, "contiguous": 3.0}, calls)
    assert choose_memory_format(backbone, "training", (48, 64), str(path), timer)[0] == (
        "channels_last"
    )
    assert len(calls) == 1 and json.loads(path.read_text())


def test_real_timings_leave_the_backbone_as_it_was():
    backbone = build_model(_cfg("contiguous")).backbone.eval()
    weight = next(p for p in backbone.parameters() if p.dim() == 4)
    ms = time_layouts(backbone, "training", (48, 64), repeats=1)
    assert set(ms) == {"channels_last", "contiguous"} and all(v > 0 for v in ms.values())
    assert weight.is_contiguous() and not backbone.training
    assert all(p.grad is None for p in backbone.parameters())
    with pytest.raises(ValueError, match="mode"):
        time_layouts(backbone, "export", (48, 64))


@pytest.mark.parametrize(("cached", "expected"), [
    ("channels_last", torch.channels_last), ("contiguous", torch.contiguous_format),
])  # fmt: skip
def test_measure_key_applies_the_cached_choice_to_weights_and_batches(cached, expected):
    cfg = _cfg("measure")
    model = build_model(cfg)
    key = layout_cache_key(model.backbone, "inference", (64, 85))
    path = layout_cache_path()  # the tests' DETKIT_CACHE
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cache = {}
    if os.path.isfile(path):
        with open(path) as f:
            cache = json.load(f)
    cache[key] = {"layout": cached, "ms": {"channels_last": 1.0, "contiguous": 1.0}}
    with open(path, "w") as f:
        json.dump(cache, f)
    model = select_memory_format(cfg, model, "inference")
    stem = next(p for p in model.backbone.parameters() if p.dim() == 4)
    assert stem.is_contiguous(memory_format=expected)
    images = model.preprocessor([{"image": torch.zeros(3, 20, 30)}])
    assert images.tensor.is_contiguous(memory_format=expected)
    # Other values leave the model as built.
    built = build_model(_cfg("contiguous"))
    assert select_memory_format(_cfg("contiguous"), built, "inference") is built


def test_trainer_measures_for_training(tiny_shapes, tmp_path, log):
    from detkit.engine import DefaultTrainer

    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(ROOT, "configs/quickstart/shapes.yaml"))
    cfg.merge_from_list(
        [
            "DATASETS.TRAIN", [tiny_shapes[0]], "DATASETS.TEST", [],
            "MODEL.DEVICE", "cpu", "MODEL.MEMORY_FORMAT", "measure",
            "MODEL.TINY.CHANNELS", [8, 8, 16, 16], "INPUT.MIN_SIZE_TRAIN", [40],
            "DATALOADER.NUM_WORKERS", 0, "OUTPUT_DIR", str(tmp_path),
        ]
    )  # fmt: skip
    trainer = DefaultTrainer(cfg)
    messages = [
        r.getMessage() for r in log.records if "MODEL.MEMORY_FORMAT measure" in r.getMessage()
    ]
    assert len(messages) == 1 and " for training on this CPU" in messages[0]
    chosen = "channels_last" if "measure: channels_last" in messages[0] else "contiguous"
    stem = next(p for p in trainer.model.backbone.parameters() if p.dim() == 4)
    expected = torch.channels_last if chosen == "channels_last" else torch.contiguous_format
    assert stem.is_contiguous(memory_format=expected)


def _roi_align(**kwargs):
    from detkit.modeling.poolers import ROIAlign

    return ROIAlign(output_size=3, spatial_scale=1 / 8, in_channels=4, sampling_ratio=2, **kwargs)


def test_roi_align_choice_is_cached_per_mode(tmp_path):
    from detkit.modeling.layout import choose_roi_align

    pooler, path, calls = _roi_align(), str(tmp_path / "layout.json"), []
    timer = _fixed_timer({"separable": 2.0, "torchvision": 3.0}, calls)

    def roi_timer(p, mode, size, rois, memory_format):
        return timer(p, mode, size)

    assert choose_roi_align(pooler, "training", (8, 10), 64, path, roi_timer)[0] == "separable"
    flipped = _fixed_timer({"separable": 9.0, "torchvision": 3.0}, calls)

    def flipped_timer(p, mode, size, rois, memory_format):
        return flipped(p, mode, size)

    # Cached for training; measured anew for inference.
    assert choose_roi_align(pooler, "training", (8, 10), 64, path, flipped_timer)[0] == (
        "separable"
    )
    assert choose_roi_align(pooler, "inference", (8, 10), 64, path, flipped_timer)[0] == (
        "torchvision"
    )
    assert [mode for mode, _ in calls] == ["training", "inference"]


def test_roi_align_follows_the_measured_implementation_of_each_mode(monkeypatch):
    from detkit.modeling.poolers import roi_pool
    from detkit.structures import Boxes

    used = []
    real_separable, real_torchvision = roi_pool.roi_align_separable, roi_pool.roi_align
    monkeypatch.setattr(
        roi_pool,
        "roi_align_separable",
        lambda *a, **k: used.append("separable") or real_separable(*a, **k),
    )
    monkeypatch.setattr(
        roi_pool,
        "roi_align",
        lambda *a, **k: used.append("torchvision") or real_torchvision(*a, **k),
    )
    pooler = _roi_align()
    pooler.implementation_by_mode = {"training": "separable", "inference": "torchvision"}
    feature, boxes = torch.randn(1, 4, 8, 10), [Boxes(torch.tensor([[0.0, 0.0, 40.0, 30.0]]))]
    pooler.train()([feature], boxes)
    pooler.eval()([feature], boxes)
    assert used == ["separable", "torchvision"]
    # A forced implementation is not overridden.
    forced = _roi_align(implementation="torchvision")
    forced.implementation_by_mode = {"training": "separable"}
    used.clear()
    forced.train()([feature], boxes)
    assert used == ["torchvision"]


def test_measure_times_both_roi_align_implementations_for_both_modes(log):
    pooler = _roi_align()
    ms = time_roi_align(pooler, "training", (8, 10), 16, repeats=1)
    assert set(ms) == {"separable", "torchvision"} and pooler.implementation == "auto"
    cfg = _cfg("measure")
    model = select_memory_format(cfg, build_model(cfg), "inference")
    chosen = model.roi_heads.pooler.implementation_by_mode
    assert set(chosen) == {"training", "inference"}
    assert set(chosen.values()) <= {"separable", "torchvision"}
    lines = [r.getMessage() for r in log.records if "RoIAlign for" in r.getMessage()]
    assert len(lines) == 2 and lines[0].startswith("roi_heads.pooler: ")


def test_timing_leaves_the_model_and_the_random_stream_as_they_were():
    # A run that measures must compute what a run reading the cache computes: the timing
    # passes may not touch batch norm's running statistics, gradients, the layout or the
    # global random stream (a resumed run reads the cache its first run wrote).
    model = build_model(_cfg("measure"))
    backbone = model.backbone.train()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    layout = backbone.stage1[0].conv.weight.is_contiguous(memory_format=torch.channels_last)
    torch.manual_seed(7)
    expected_draw = torch.rand(3)
    torch.manual_seed(7)
    time_layouts(backbone, "training", (64, 96), repeats=1)
    pooler = model.roi_heads.pooler
    time_roi_align(pooler, "training", (8, 12), num_rois=4, repeats=1)
    assert torch.equal(torch.rand(3), expected_draw)
    for name, value in backbone.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert all(p.grad is None for p in backbone.parameters())
    assert backbone.training
    assert backbone.stage1[0].conv.weight.is_contiguous(memory_format=torch.channels_last) == layout
