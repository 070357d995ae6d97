"""The synthetic shapes dataset: determinism, the promised statistics, atomic writes, and the
round trip through the VOC loader."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from detkit.data import (
    SHAPE_CLASSES,
    DatasetCatalog,
    MetadataCatalog,
    load_voc_instances,
    register_all_builtin,
)
from detkit.data.datasets import shapes


def _tree_hashes(root: str) -> dict[str, str]:
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            path = os.path.join(dirpath, f)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, root)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def test_same_seed_same_bytes(tmp_path):
    a = shapes.generate_shapes(str(tmp_path / "a"), num_train=5, num_test=2, progress=False)
    b = shapes.generate_shapes(str(tmp_path / "b"), num_train=5, num_test=2, progress=False)
    c = shapes.generate_shapes(str(tmp_path / "c"), 5, 2, seed=1, progress=False)
    hashes_a = _tree_hashes(a)
    assert len(hashes_a) == 2 * 7 + 3  # jpg + xml per image, train.txt, test.txt, info
    assert hashes_a == _tree_hashes(b)
    assert hashes_a["JPEGImages/train_000000.jpg"] != _tree_hashes(c)["JPEGImages/train_000000.jpg"]


def test_read_back_through_voc_loader_matches_the_drawing(tmp_path):
    root = shapes.generate_shapes(str(tmp_path / "shapes"), 20, 5, seed=3, progress=False)
    train = load_voc_instances(root, "train", SHAPE_CLASSES)
    test = load_voc_instances(root, "test", SHAPE_CLASSES)
    assert len(train) == 20 and len(test) == 5
    # Identity: XML (1-based) -> loader (0-based) gives back the generator's own boxes.
    for split_code, dicts in ((0, train), (1, test)):
        for i, d in enumerate(dicts):
            image, objects = shapes.render_shapes_image(np.random.default_rng([3, split_code, i]))
            assert (d["height"], d["width"]) == image.shape[:2]
            assert [a["bbox"] for a in d["annotations"]] == [o["box"] for o in objects]
            assert [SHAPE_CLASSES[a["category_id"]] for a in d["annotations"]] == [
                o["name"] for o in objects
            ]
            assert [a["difficult"] for a in d["annotations"]] == [o["difficult"] for o in objects]


def test_statistics_over_200_images():
    num_objects, objects_all, orientations = [], [], set()
    for i in range(200):
        image, objects = shapes.render_shapes_image(np.random.default_rng([0, 0, i]))
        h, w = image.shape[:2]
        assert min(h, w) == 256 and 256 <= max(h, w) <= 384
        orientations.add(h > w)
        num_objects.append(len(objects))
        if len(objects) > 1:  # pairwise IoU by an independent implementation
            b = torch.tensor([o["box"] for o in objects], dtype=torch.float64)
            iou = box_iou(b, b).fill_diagonal_(0)
            assert iou.max() <= 0.3 + 1e-9
        for o in objects:
            x1, y1, x2, y2 = o["box"]
            assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
            assert max(x2 - x1, y2 - y1) <= 96
            if not o["truncated"]:  # a whole shape is >= 16 px * cos(45 deg) across
                assert max(x2 - x1, y2 - y1) >= 11
            assert o["difficult"] == (min(x2 - x1, y2 - y1) < 16)
        objects_all += objects
    assert orientations == {True, False}
    assert 0 <= min(num_objects) and max(num_objects) == 5
    # P(no object) = 0.10: 200 images give 20 +- 4.2 (binomial sd); accept +- 3 sd.
    assert 7 <= num_objects.count(0) <= 33
    assert {o["name"] for o in objects_all} == set(SHAPE_CLASSES)
    assert any(o["difficult"] for o in objects_all)  # small or cut shapes exist
    assert any(o["truncated"] for o in objects_all)


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    calls = []
    real = shapes.render_shapes_image

    def render_then_fail(rng):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(rng)

    monkeypatch.setattr(shapes, "render_shapes_image", render_then_fail)
    with pytest.raises(KeyboardInterrupt):
        shapes.generate_shapes(str(tmp_path / "shapes"), 4, 2, progress=False)
    assert os.listdir(tmp_path) == []  # neither the dataset nor a temporary directory
    monkeypatch.setattr(shapes, "render_shapes_image", real)
    root = shapes.generate_shapes(str(tmp_path / "shapes"), 4, 2, progress=False)
    assert os.listdir(tmp_path) == ["shapes"]
    assert len(load_voc_instances(root, "train", SHAPE_CLASSES)) == 4
    (tmp_path / "half").mkdir()
    with pytest.raises(FileExistsError, match="Delete it"):
        shapes.generate_shapes(str(tmp_path / "half"), 4, 2, progress=False)


def test_builtin_shapes_generated_on_first_read(tmp_path, monkeypatch):
    # Re-register the built-in names under tmp_path (restored afterwards), at a tiny size.
    for name in ("shapes_train", "shapes_test"):
        monkeypatch.delitem(DatasetCatalog._functions, name)
        monkeypatch.delitem(MetadataCatalog._metadata, name)
    monkeypatch.setattr(shapes.generate_shapes, "__defaults__", (6, 3, 0, False))
    register_all_builtin(str(tmp_path))
    assert not (tmp_path / "shapes").exists()  # registering writes nothing
    assert len(DatasetCatalog.get("shapes_test")) == 3
    assert len(DatasetCatalog.get("shapes_train")) == 6
    meta = MetadataCatalog.get("shapes_train")
    assert (meta.dirname, meta.year, meta.evaluator_type) == (str(tmp_path / "shapes"), 2007, "voc")
