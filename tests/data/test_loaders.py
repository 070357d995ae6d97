"""Dataset concatenation, flip duplication and the train/test loaders (also with spawned
worker processes, which only work if registrations need not be repeated in the workers)."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from detkit.config import get_cfg
from detkit.data import (
    DatasetCatalog,
    DatasetFromList,
    DatasetMapper,
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
    duplicate_with_flips,
    get_detection_dataset_dicts,
)


def _images(tmp_path, sizes: list[tuple[int, int]], prefix: str = "im") -> list[dict]:
    """One PNG per size, image i filled with grey level 10 * i, one box each (but image 0)."""
    dicts = []
    for i, (h, w) in enumerate(sizes):
        path = str(tmp_path / f"{prefix}{i}.png")
        cv2.imwrite(path, np.full((h, w, 3), 10 * i, np.uint8))
        annotations = (
            []
            if i == 0
            else [{"bbox": [1.0, 1.0, 5.0, 5.0], "category_id": 0, "difficult": i == 1}]
        )
        dicts.append(
            {"file_name": path, "height": h, "width": w, "image_id": i, "annotations": annotations}
        )
    return dicts


def _cfg(names, **overrides):
    cfg = get_cfg()
    cfg.DATASETS.TRAIN = names
    cfg.INPUT.MIN_SIZE_TRAIN = [16]
    cfg.INPUT.MIN_SIZE_TEST = 16
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.SEED = 1
    for key, value in overrides.items():
        section, name = key.split("__")
        cfg[section][name] = value
    return cfg


def test_concatenation_and_filtering(tmp_path, dataset_name):
    first, second, other = dataset_name(), dataset_name(), dataset_name()
    dicts = _images(tmp_path, [(8, 8), (8, 8), (8, 8)])
    DatasetCatalog.register(first, lambda: dicts[:2])
    DatasetCatalog.register(second, lambda: dicts[2:])
    for name in (first, second):
        MetadataCatalog.get(name).set(thing_classes=["a"])
    both = get_detection_dataset_dicts([first, second], filter_empty=False)
    assert [d["image_id"] for d in both] == [0, 1, 2]
    # Image 0 has no object, image 1 only a difficult one: neither trains anything.
    assert [d["image_id"] for d in get_detection_dataset_dicts([first, second])] == [2]
    MetadataCatalog.get(other).set(thing_classes=["b"])
    DatasetCatalog.register(other, lambda: dicts)
    with pytest.raises(ValueError, match="same classes"):
        get_detection_dataset_dicts([first, other])
    with pytest.raises(ValueError, match="No dataset names"):
        get_detection_dataset_dicts([])


@pytest.mark.parametrize("mode", [1, "XYWH_ABS", "BoxMode.XYWH_REL"])
def test_box_modes_other_than_xyxy_abs_are_refused(tmp_path, dataset_name, mode):
    # detectron2 dicts may carry bbox_mode; XYWH read as corners would train on wrong boxes.
    name = dataset_name()
    dicts = _images(tmp_path, [(8, 8), (8, 8), (8, 8)])
    dicts[1]["annotations"][0]["bbox_mode"] = 0  # XYXY_ABS: accepted
    dicts[2]["annotations"][0]["bbox_mode"] = mode
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(thing_classes=["a"])
    with pytest.raises(
        ValueError,
        match=rf"'{name}', image .*im2.png \(image_id 2\), "
        r"annotation 0: bbox_mode is .*\[x, y, x \+ w",
    ):
        get_detection_dataset_dicts([name])
    dicts[2]["annotations"][0]["bbox_mode"] = "XYXY_ABS"
    assert len(get_detection_dataset_dicts([name], filter_empty=False)) == 3


def test_flip_duplication_and_serialized_list():
    dicts = [{"image_id": i, "annotations": [{"bbox": [0, 0, 1, 1]}]} for i in range(3)]
    doubled = duplicate_with_flips(dicts)
    assert [d["image_id"] for d in doubled] == [0, 1, 2, 0, 1, 2]
    assert [d.get("flip", False) for d in doubled] == [False] * 3 + [True] * 3
    assert "flip" not in dicts[0]  # the originals are untouched
    stored = DatasetFromList(doubled)
    assert len(stored) == 6 and [stored[i] for i in range(6)] == doubled


def test_train_loader_batches_groups_and_resume(tmp_path, dataset_name):
    name = dataset_name()
    sizes = [(8, 12), (12, 8)] * 5  # alternating landscape and portrait
    dicts = _images(tmp_path, sizes)
    DatasetCatalog.register(name, lambda: dicts)
    cfg = _cfg([name])
    batches = list(itertools.islice(build_detection_train_loader(cfg), 6))
    for batch in batches:
        assert len(batch) == 2
        orientation = {tuple(x["image"].shape[1:]) for x in batch}
        assert orientation in ({(16, 24)}, {(24, 16)})  # grouped by aspect ratio
        for x in batch:  # the right pixels for the right image id
            assert float(x["image"].mean()) == pytest.approx(10 * x["image_id"])
    ids = [[x["image_id"] for x in b] for b in batches]

    calls = []

    class CountingMapper(DatasetMapper):
        def __call__(self, d):
            calls.append(d["image_id"])
            return super().__call__(d)

    resumed = build_detection_train_loader(cfg, CountingMapper(cfg, True), start_iter=4)
    first_two = list(itertools.islice(resumed, 2))
    assert [[x["image_id"] for x in b] for b in first_two] == ids[4:6]
    assert calls == ids[4] + ids[5]  # skipped batches were never read
    # The empty image still trains (empty Instances) unless filtering is asked for.
    empty = [x for b in batches for x in b if x["image_id"] == 0]
    assert empty and len(empty[0]["instances"]) == 0
    filtered = build_detection_train_loader(_cfg([name], DATALOADER__FILTER_EMPTY_ANNOTATIONS=True))
    seen = {x["image_id"] for b in itertools.islice(filtered, 10) for x in b}
    assert seen <= set(range(2, 10)) and 0 not in seen and 1 not in seen


def test_test_loader_one_image_per_batch_in_order(tmp_path, dataset_name):
    name = dataset_name()
    dicts = _images(tmp_path, [(8, 12), (12, 8), (10, 10)])
    DatasetCatalog.register(name, lambda: dicts)
    batches = list(build_detection_test_loader(_cfg([]), name))
    assert [[x["image_id"] for x in b] for b in batches] == [[0], [1], [2]]
    assert [tuple(b[0]["image"].shape) for b in batches] == [(3, 16, 24), (3, 24, 16), (3, 16, 16)]
    assert all("instances" not in b[0] for b in batches)


def test_registration_survives_spawned_workers(tmp_path, dataset_name):
    name = dataset_name()
    dicts = _images(tmp_path, [(8, 8)] * 4, prefix="spawn")
    # A lambda cannot be pickled and spawned workers do not run this test's registration:
    # this only works because workers receive the list of dicts, not the dataset name.
    DatasetCatalog.register(name, lambda: dicts)
    cfg = _cfg([name], DATALOADER__NUM_WORKERS=2, DATALOADER__ASPECT_RATIO_GROUPING=False)
    loader = build_detection_train_loader(cfg, multiprocessing_context="spawn")
    batches = list(itertools.islice(loader, 3))
    assert all(len(b) == 2 for b in batches)
    for x in (x for b in batches for x in b):
        assert float(x["image"].mean()) == pytest.approx(10 * x["image_id"])
        assert len(x["instances"]) == (1 if x["image_id"] >= 2 else 0)
    del loader  # stop the persistent workers
