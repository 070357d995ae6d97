"""PASCAL VOC loader on hand-written XML files."""

from __future__ import annotations

import logging
import os

import pytest

from detkit.data import DatasetCatalog, MetadataCatalog, load_voc_instances, register_pascal_voc

CLASSES = ("cat", "dog")


def test_one_based_to_zero_based_without_wraparound(write_voc, tmp_path, caplog):
    root = write_voc(
        str(tmp_path / "VOC"),
        "train",
        {
            "img1": (
                100,
                200,
                [
                    ("cat", 1, 1, 10, 20, 0),  # xmin = 1: first column -> x1 = 0
                    ("dog", 0, 0, 5, 5, 1),  # xmin = 0 (a common annotation slip): -1 -> clipped 0
                    ("cat", 50, 60, 200, 100, 0),  # touches the right border (xmax = width)
                ],
            ),
            "img2": (30, 40, []),  # an image with no object
        },
    )
    dicts = load_voc_instances(root, "train", CLASSES)
    assert [d["image_id"] for d in dicts] == ["img1", "img2"]
    first = dicts[0]
    assert (first["height"], first["width"]) == (100, 200)
    assert first["file_name"] == os.path.abspath(os.path.join(root, "JPEGImages", "img1.jpg"))
    boxes = [a["bbox"] for a in first["annotations"]]
    # Hand-computed: [xmin - 1, ymin - 1, xmax, ymax], clipped to [0, 200] x [0, 100].
    assert boxes == [[0.0, 0.0, 10.0, 20.0], [0.0, 0.0, 5.0, 5.0], [49.0, 59.0, 200.0, 100.0]]
    assert [a["category_id"] for a in first["annotations"]] == [0, 1, 0]
    assert [a["difficult"] for a in first["annotations"]] == [False, True, False]
    assert dicts[1]["annotations"] == []
    assert not caplog.records  # nothing was broken


def test_broken_boxes_dropped_with_warning(write_voc, tmp_path, caplog):
    root = write_voc(
        str(tmp_path / "VOC"),
        "train",
        {
            "bad": (
                50,
                50,
                [
                    ("cat", 10, 10, 5, 20, 0),  # x2 < x1
                    ("dog", 10, 10, 20, 9, 0),  # y2 < y1
                    ("cat", 60, 10, 70, 20, 0),  # entirely right of the image: empty after clipping
                    ("dog", 2, 3, 4, 5, 0),  # fine: [1, 2, 4, 5]
                ],
            ),
        },
    )
    with caplog.at_level(logging.WARNING):
        dicts = load_voc_instances(root, "train", CLASSES)
    assert [a["bbox"] for a in dicts[0]["annotations"]] == [[1.0, 2.0, 4.0, 5.0]]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3
    assert all("bad.xml" in w for w in warnings)
    assert "object 0 ('cat')" in warnings[0] and "object 2 ('cat')" in warnings[2]


def test_unknown_class_names_file_and_class(write_voc, tmp_path):
    root = write_voc(str(tmp_path / "VOC"), "train", {"x": (10, 10, [("horse", 1, 1, 5, 5, 0)])})
    with pytest.raises(ValueError, match=r"x\.xml.*'horse'.*cat, dog"):
        load_voc_instances(root, "train", CLASSES)


def test_missing_dataset_says_where_and_how(write_voc, tmp_path, dataset_name):
    name = dataset_name()
    missing = str(tmp_path / "nowhere" / "VOC2007")
    register_pascal_voc(name, missing, "trainval", 2007)
    with pytest.raises(FileNotFoundError) as err:
        DatasetCatalog.get(name)
    message = str(err.value)
    assert missing in message
    assert "VOCtrainval_06-Nov-2007.tar" in message and "DETKIT_DATASETS" in message
    # An existing directory without the split file names the file it looked for.
    root = write_voc(str(tmp_path / "VOC"), "train", {"x": (10, 10, [])})
    with pytest.raises(FileNotFoundError, match=r"ImageSets/Main/test\.txt"):
        load_voc_instances(root, "test", CLASSES)


def test_register_pascal_voc_metadata_and_lazy_read(write_voc, tmp_path, dataset_name):
    name = dataset_name()
    root = write_voc(str(tmp_path / "VOC"), "val", {"x": (10, 12, [("dog", 1, 2, 3, 4, 0)])})
    calls = []
    register_pascal_voc(name, root, "val", 2012, CLASSES, prepare=lambda: calls.append(1))
    meta = MetadataCatalog.get(name)
    assert (meta.thing_classes, meta.year, meta.split, meta.evaluator_type) == (
        ["cat", "dog"],
        2012,
        "val",
        "voc",
    )
    assert calls == []  # registering reads nothing
    assert DatasetCatalog.get(name)[0]["annotations"][0]["bbox"] == [0.0, 1.0, 3.0, 4.0]
    assert calls == [1]


def test_absurd_box_dropped_not_clipped_to_a_whole_image_box(write_voc, tmp_path, log):
    root = write_voc(
        str(tmp_path / "VOC"),
        "train",
        {
            "odd": (
                50,
                40,
                [
                    (
                        "cat",
                        1,
                        1,
                        1e30,
                        1e30,
                        0,
                    ),  # clipping would give [0, 0, 40, 50]: the whole image
                    (
                        "dog",
                        -40,
                        2,
                        5,
                        9,
                        0,
                    ),  # x1 = -41 < -width: farther out than the image's size
                    (
                        "cat",
                        1,
                        1,
                        80,
                        100,
                        0,
                    ),  # x2 = 2 * width, y2 = 2 * height: the limit, clipped
                ],
            ),
        },
    )
    (record,) = load_voc_instances(root, "train", CLASSES)
    assert [a["bbox"] for a in record["annotations"]] == [[0.0, 0.0, 40.0, 50.0]]
    warnings = [r.getMessage() for r in log.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "odd.xml: object 0 ('cat') has a box farther outside the 40x50 image" in warnings[0]
    assert "xmax=1e+30" in warnings[0] and "not clipped" in warnings[0]
    assert "odd.xml: object 1 ('dog')" in warnings[1]


def test_malformed_xml_names_the_file_position_and_what_to_do(write_voc, tmp_path):
    root = write_voc(str(tmp_path / "VOC"), "train", {"a": (10, 10, []), "b": (10, 10, [])})
    xml_file = os.path.join(root, "Annotations", "b.xml")
    with open(xml_file, "w") as f:
        f.write("<annotation>\n  <size><width>10</width>\n</annotation>")  # <size> never closed
    with pytest.raises(ValueError) as error:
        load_voc_instances(root, "train", CLASSES)
    message = str(error.value)
    assert message.startswith(f"{xml_file} is not valid XML (mismatched tag: line 3, column 2)")
    assert "remove 'b' from" in message and "train.txt" in message


def test_size_taken_from_the_image_only_if_it_is_complete(write_voc, tmp_path, log):
    root = write_voc(str(tmp_path / "VOC"), "train", {"a": (12, 16, [])})
    xml_file = os.path.join(root, "Annotations", "a.xml")
    with open(xml_file, "w") as f:
        f.write("<annotation></annotation>")  # no <size>: read from the 12 x 16 image
    (record,) = load_voc_instances(root, "train", CLASSES)
    assert (record["height"], record["width"]) == (12, 16)
    assert "a.xml: no valid <size>; took 12x16 from the image" in log.text
    image = os.path.join(root, "JPEGImages", "a.jpg")
    data = open(image, "rb").read()
    with open(image, "wb") as f:
        f.write(data[:-10])  # cut short: no size from a picture OpenCV would fill with grey
    with pytest.raises(
        ValueError,
        match=r"a\.xml: no valid <size>, and its image cannot be read: "
        r"Image .*a\.jpg \(image_id None\) is truncated",
    ):
        load_voc_instances(root, "train", CLASSES)
