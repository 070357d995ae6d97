"""COCO loader on a tiny instances JSON written by the test."""

from __future__ import annotations

import json
import logging
import os

import pytest

from detkit.data import DatasetCatalog, MetadataCatalog, register_coco_instances


def _write_json(path: str) -> str:
    data = {
        "images": [
            {"id": 7, "file_name": "b.jpg", "height": 40, "width": 60},
            {"id": 3, "file_name": "a.jpg", "height": 20, "width": 30},
            {"id": 9, "file_name": "empty.jpg", "height": 10, "width": 10},
        ],
        # Ids with a gap and out of order: contiguous ids follow sorted dataset ids.
        "categories": [
            {"id": 18, "name": "dog"},
            {"id": 1, "name": "person"},
            {"id": 3, "name": "car"},
        ],
        "annotations": [
            {
                "id": 1,
                "image_id": 3,
                "category_id": 18,
                "bbox": [0, 0, 10, 5],
                "iscrowd": 0,
                "area": 50,
            },
            {
                "id": 2,
                "image_id": 3,
                "category_id": 1,
                "bbox": [2.5, 1, 4, 6],
                "iscrowd": 1,
                "area": 24,
            },
            {
                "id": 3,
                "image_id": 7,
                "category_id": 3,
                "bbox": [50, 30, 20, 20],
                "iscrowd": 0,
                "area": 400,
            },
            {
                "id": 4,
                "image_id": 7,
                "category_id": 3,
                "bbox": [5, 5, 0, 4],
                "iscrowd": 0,
                "area": 0,
            },  # zero width: dropped
        ],
    }
    with open(path, "w") as f:
        json.dump(data, f)
    return path


def test_coco_json_to_dicts(tmp_path, dataset_name):
    name = dataset_name()
    json_file = _write_json(str(tmp_path / "instances.json"))
    register_coco_instances(name, json_file, str(tmp_path / "images"))
    dicts = DatasetCatalog.get(name)
    assert [d["image_id"] for d in dicts] == [3, 7, 9]
    a, b, empty = dicts
    assert a["file_name"] == os.path.join(str(tmp_path / "images"), "a.jpg")
    assert (a["height"], a["width"]) == (20, 30)
    # XYWH -> XYXY by hand; categories sorted by id 1 (person), 3 (car), 18 (dog) -> 0, 1, 2.
    assert a["annotations"] == [
        {"bbox": [0.0, 0.0, 10.0, 5.0], "category_id": 2, "iscrowd": 0},
        {"bbox": [2.5, 1.0, 6.5, 7.0], "category_id": 0, "iscrowd": 1},
    ]
    # A box running past the image is clipped (60 x 40 image); the zero-width one is gone.
    assert b["annotations"] == [{"bbox": [50.0, 30.0, 60.0, 40.0], "category_id": 1, "iscrowd": 0}]
    assert empty["annotations"] == []
    meta = MetadataCatalog.get(name)
    assert meta.thing_classes == ["person", "car", "dog"]
    assert meta.thing_dataset_id_to_contiguous_id == {1: 0, 3: 1, 18: 2}
    assert (meta.evaluator_type, meta.json_file) == ("coco", json_file)


def test_coco_metadata_mismatch_and_missing_file(tmp_path, dataset_name):
    name = dataset_name()
    json_file = _write_json(str(tmp_path / "instances.json"))
    register_coco_instances(name, json_file, str(tmp_path), {"thing_classes": ["a", "b", "c"]})
    with pytest.raises(ValueError, match="person.*'a', 'b', 'c'"):
        DatasetCatalog.get(name)
    missing = dataset_name()
    register_coco_instances(missing, str(tmp_path / "no.json"), str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"no\.json[\s\S]*annotations_trainval2017\.zip"):
        DatasetCatalog.get(missing)


def test_malformed_json_names_the_file_line_and_column(tmp_path, dataset_name):
    name = dataset_name()
    json_file = tmp_path / "instances.json"
    # Cut short inside the second line, as an interrupted download leaves it.
    json_file.write_text('{"images": [{"id": 1, "file_name": "a.jpg"},\n  {"id": 2, "file_n')
    register_coco_instances(name, str(json_file), str(tmp_path))
    with pytest.raises(ValueError) as error:
        DatasetCatalog.get(name)
    message = str(error.value)
    # Line 2 is '  {"id": 2, "file_n': the unterminated string's quote is at column 13.
    assert message.startswith(f"{json_file} is not valid JSON: Unterminated string")
    assert "(line 2, column 13, character 57)" in message and "download it again" in message
    json_file.write_text('[{"id": 1}]')
    with pytest.raises(ValueError, match=r"instances\.json is JSON but not a COCO instances file"):
        DatasetCatalog.get(name)


def test_boxes_far_outside_the_image_are_dropped_and_counted(tmp_path, dataset_name, log):
    data = {
        "images": [{"id": 1, "file_name": "a.jpg", "height": 20, "width": 30}],
        "categories": [{"id": 1, "name": "cat"}],
        "annotations": [
            {"id": 5, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1e30, 1e30]},
            {"id": 6, "image_id": 1, "category_id": 1, "bbox": [-31, 0, 5, 5]},  # x < -width
            {"id": 7, "image_id": 1, "category_id": 1, "bbox": [20, 10, 40, 30]},  # at the limit
            {"id": 8, "image_id": 1, "category_id": 1, "bbox": [1, 1, 0, 3]},  # empty
        ],
    }
    json_file = tmp_path / "instances.json"
    json_file.write_text(json.dumps(data))
    name = dataset_name()
    register_coco_instances(name, str(json_file), str(tmp_path))
    (record,) = DatasetCatalog.get(name)
    # Only annotation 7 is kept: [20, 10, 60, 40] clipped to the 30 x 20 image.
    assert [a["bbox"] for a in record["annotations"]] == [[20.0, 10.0, 30.0, 20.0]]
    warnings = [r.getMessage() for r in log.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"{json_file}: dropped 2 annotations whose box lies farther outside its image than the "
        "image's size (not clipped to a whole-image box), e.g. annotation ids [5, 6]. Fix them.",
        f"{json_file}: dropped 1 annotations with empty or malformed boxes.",
    ]
