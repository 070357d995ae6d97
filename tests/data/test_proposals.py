"""Proposals as data: the .npz file (round trip, no pickle, damaged files), attaching it to
dataset dicts by image id, and the mapper moving proposals with the image."""

from __future__ import annotations

import zipfile

import cv2
import numpy as np
import pytest
import torch

from detkit.config import get_cfg
from detkit.data import (
    DatasetCatalog,
    DatasetMapper,
    MetadataCatalog,
    attach_precomputed_proposals,
    build_detection_test_loader,
    get_detection_dataset_dicts,
    load_proposals,
    save_proposals,
)


def test_round_trip_keeps_ids_boxes_and_scores_in_decreasing_objectness(tmp_path):
    path = str(tmp_path / "p.npz")
    boxes = [np.array([[0, 0, 10, 10], [1, 2, 5, 9], [3, 3, 4, 4]], np.float32), np.zeros((0, 4))]
    scores = [np.array([0.2, 0.9, -1.0]), np.zeros(0)]
    save_proposals(path, ["000005", "000007"], boxes, scores, source="hand")
    loaded = load_proposals(path)
    assert loaded.image_ids == ["000005", "000007"] and loaded.source == "hand"
    got_boxes, got_scores = loaded.get("000005")
    # Stored by decreasing objectness: 0.9, 0.2, -1.0.
    assert got_scores.tolist() == pytest.approx([0.9, 0.2, -1.0])
    assert got_boxes.tolist() == [[1, 2, 5, 9], [0, 0, 10, 10], [3, 3, 4, 4]]
    assert loaded.get("000007")[0].shape == (0, 4)
    # Integer ids stay integers, and the file is readable without unpickling anything.
    save_proposals(path, [3, 1], [np.ones((1, 4)), np.ones((2, 4))], [[0.0], [1.0, 2.0]])
    with np.load(path, allow_pickle=False) as data:
        assert data["image_ids"].dtype == np.int64 and data["counts"].tolist() == [1, 2]
    assert load_proposals(path).get(1)[0].shape == (2, 4)


def test_damaged_and_foreign_files_fail_naming_the_file(tmp_path):
    missing = str(tmp_path / "none.npz")
    with pytest.raises(FileNotFoundError, match="none.npz"):
        load_proposals(missing)
    truncated = tmp_path / "cut.npz"
    save_proposals(str(truncated), [1], [np.ones((3, 4))], [np.zeros(3)])
    truncated.write_bytes(truncated.read_bytes()[:60])
    with pytest.raises(ValueError, match="cut.npz"):
        load_proposals(str(truncated))
    foreign = str(tmp_path / "foreign.npz")
    np.savez(foreign, boxes=np.zeros((1, 4)))
    with pytest.raises(ValueError, match=r"not a detkit proposals file.*image_ids"):
        load_proposals(foreign)
    pickled = str(tmp_path / "pickled.npz")
    np.savez(
        pickled,
        image_ids=np.array([{"a": 1}], dtype=object),
        counts=[0],
        boxes=np.zeros((0, 4)),
        objectness_logits=np.zeros(0),
        format_version=1,
    )
    with pytest.raises(ValueError, match="does not unpickle"):
        load_proposals(pickled)
    assert zipfile.is_zipfile(pickled)  # a real npz: refused for its content, not its form


def test_attach_by_image_id_and_a_missing_image_names_file_and_id(tmp_path):
    path = str(tmp_path / "p.npz")
    save_proposals(
        path, ["b", "a"], [np.full((2, 4), 2.0), np.full((1, 4), 1.0)], [[0.5, 0.4], [0.3]]
    )
    dicts = [{"image_id": "a", "file_name": "a.jpg"}, {"image_id": "b", "file_name": "b.jpg"}]
    attached = attach_precomputed_proposals(dicts, path)
    assert attached[0]["proposal_boxes"].tolist() == [[1.0] * 4]
    assert attached[1]["proposal_objectness_logits"].tolist() == pytest.approx([0.5, 0.4])
    assert "proposal_boxes" not in dicts[0]  # the input dicts are not changed
    with pytest.raises(KeyError, match=r"image_id 'c' is not in the proposals file .*p\.npz"):
        attach_precomputed_proposals(dicts + [{"image_id": "c"}], path)


@pytest.fixture
def image_file(tmp_path) -> str:
    path = str(tmp_path / "im.png")
    cv2.imwrite(path, np.zeros((30, 50, 3), np.uint8))  # non-square: 30 high, 50 wide
    return path


BOXES = np.array([[5, 3, 20, 12], [0, 0, 50, 30], [40, 10, 49, 29], [10, 10, 10.2, 20]], np.float32)
SCORES = np.array([0.1, 0.9, 0.5, 0.7], np.float32)


def _by_hand(boxes, width_out, height_out, flip):
    """The resize (per-axis factors) and the flip written out, for a 30 x 50 image."""
    sx, sy = width_out / 50, height_out / 30
    out = boxes * np.array([sx, sy, sx, sy], np.float32)
    if flip:
        out = np.stack([width_out - out[:, 2], out[:, 1], width_out - out[:, 0], out[:, 3]], 1)
    return out


@pytest.mark.parametrize("flip", [False, True])
def test_mapper_resizes_and_flips_proposals_with_the_image(image_file, flip):
    # Shorter side 30 -> 64: the output is 64 x 107 (50 * 64 / 30 = 106.67 -> 107), so the
    # x and y factors differ (107 / 50 = 2.14, 64 / 30 = 2.1333).
    mapper = DatasetMapper(min_sizes=[64], max_size=1000, random_flip=False)
    record = {
        "file_name": image_file,
        "image_id": 1,
        "height": 30,
        "width": 50,
        "annotations": [],
        "proposal_boxes": BOXES,
        "proposal_objectness_logits": SCORES,
        "flip": flip,
    }
    out = mapper(record)
    assert out["image"].shape[-2:] == (64, 107)
    proposals = out["proposals"]
    assert proposals.image_size == (64, 107)
    order = np.argsort(-SCORES, kind="stable")  # 0.9, 0.7, 0.5, 0.1
    expected = _by_hand(BOXES[order], 107, 64, flip)
    assert proposals.proposal_boxes.tensor.numpy() == pytest.approx(expected, abs=1e-4)
    assert proposals.objectness_logits.tolist() == pytest.approx(SCORES[order].tolist())
    assert "proposal_boxes" not in out and "proposal_objectness_logits" not in out


def test_mapper_clips_drops_empty_and_converts_to_the_legacy_convention(image_file):
    boxes = np.array([[-5, -5, 20, 10], [60, 0, 70, 10], [10, 10, 30, 20]], np.float32)
    record = {
        "file_name": image_file,
        "image_id": 1,
        "height": 30,
        "width": 50,
        "proposal_boxes": boxes,
        "proposal_objectness_logits": np.array([3.0, 2.0, 1.0]),
    }
    modern = DatasetMapper(is_train=False, min_sizes=[30], max_size=1000)(record)["proposals"]
    # Clipped to [0, 50] x [0, 30]; the box right of the image has no area left: dropped.
    assert modern.proposal_boxes.tensor.tolist() == [[0, 0, 20, 10], [10, 10, 30, 20]]
    legacy = DatasetMapper(is_train=False, min_sizes=[30], max_size=1000, legacy_plus_one=True)(
        record
    )["proposals"]
    # Pixel-index boxes, like the ground truth of a legacy model: x2 - 1, y2 - 1.
    assert legacy.proposal_boxes.tensor.tolist() == [[0, 0, 19, 9], [10, 10, 29, 19]]
    assert legacy.proposal_boxes.legacy_plus_one
    assert torch.equal(legacy.objectness_logits, torch.tensor([3.0, 1.0]))


def test_config_keys_attach_train_and_test_files(image_file, tmp_path, dataset_name):
    train, test = dataset_name(), dataset_name()
    for name, ids in ((train, [1, 2]), (test, [3])):
        DatasetCatalog.register(
            name,
            lambda ids=ids: [
                {
                    "file_name": image_file,
                    "image_id": i,
                    "height": 30,
                    "width": 50,
                    "annotations": [{"bbox": [1, 1, 9, 9], "category_id": 0}],
                }
                for i in ids
            ],
        )
        MetadataCatalog.get(name).set(thing_classes=["x"], evaluator_type="voc")
    train_file, test_file = str(tmp_path / "train.npz"), str(tmp_path / "test.npz")
    save_proposals(train_file, [1, 2], [np.ones((1, 4)), np.full((2, 4), 2.0)], [[0], [1, 0]])
    save_proposals(test_file, [3], [np.array([[0, 0, 25, 15]])], [[0.0]])
    dicts = get_detection_dataset_dicts([train], proposal_files=[train_file])
    assert [len(d["proposal_boxes"]) for d in dicts] == [1, 2]
    with pytest.raises(ValueError, match="one file per dataset"):
        get_detection_dataset_dicts([train], proposal_files=[train_file, test_file])
    cfg = get_cfg()
    cfg.DATASETS.TEST = [test]
    cfg.DATASETS.PROPOSAL_FILES_TEST = [test_file]
    cfg.INPUT.MIN_SIZE_TEST, cfg.DATALOADER.NUM_WORKERS = 60, 0
    (batch,) = list(build_detection_test_loader(cfg, test))
    # Test size: shorter side 30 -> 60, both factors 2.
    assert batch[0]["proposals"].proposal_boxes.tensor.tolist() == [[0, 0, 50, 30]]
