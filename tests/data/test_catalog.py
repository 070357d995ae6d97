"""DatasetCatalog / MetadataCatalog: registration, look-ups, errors, built-in names."""

from __future__ import annotations

import pickle

import pytest

from detkit.data import DatasetCatalog, MetadataCatalog


def test_register_get_list_remove(dataset_name):
    name = dataset_name()
    dicts = [{"file_name": "a.jpg", "height": 2, "width": 3, "image_id": "a", "annotations": []}]
    DatasetCatalog.register(name, lambda: dicts)
    assert name in DatasetCatalog.list()
    assert DatasetCatalog.get(name) == dicts
    with pytest.raises(ValueError, match="already registered"):
        DatasetCatalog.register(name, lambda: [])
    DatasetCatalog.remove(name)
    assert name not in DatasetCatalog.list()


def test_missing_name_lists_registered(dataset_name):
    name = dataset_name()
    DatasetCatalog.register(name, lambda: [])
    with pytest.raises(KeyError) as err:
        DatasetCatalog.get(name + "x")
    message = str(err.value)
    assert name in message and "voc_2007_trainval" in message and "Did you mean" in message


def test_non_list_return_is_an_error(dataset_name):
    name = dataset_name()
    DatasetCatalog.register(name, lambda: {"not": "a list"})
    with pytest.raises(TypeError, match=name):
        DatasetCatalog.get(name)


def test_metadata_attributes_set_and_conflict(dataset_name):
    name = dataset_name()
    meta = MetadataCatalog.get(name).set(thing_classes=["a", "b"], year=2007)
    assert MetadataCatalog.get(name) is meta
    assert meta.thing_classes == ["a", "b"] and meta.year == 2007
    meta.set(year=2007)  # same value again is fine
    with pytest.raises(ValueError, match="refusing to change"):
        meta.set(year=2012)
    with pytest.raises(AttributeError, match="thing_classes, year"):
        _ = meta.evaluator_type
    assert meta.get("evaluator_type", "voc") == "voc"
    copy = pickle.loads(pickle.dumps(meta))
    assert copy.as_dict() == {"name": name, "thing_classes": ["a", "b"], "year": 2007}


def test_builtin_names_registered_with_metadata():
    for name in (
        "voc_2007_trainval",
        "voc_2007_test",
        "voc_2012_trainval",
        "coco_2017_train",
        "coco_2017_val",
        "shapes_train",
        "shapes_test",
    ):
        assert name in DatasetCatalog.list()
    voc07 = MetadataCatalog.get("voc_2007_test")
    assert (voc07.year, voc07.split, voc07.evaluator_type) == (2007, "test", "voc")
    assert len(voc07.thing_classes) == 20 and voc07.thing_classes[0] == "aeroplane"
    assert MetadataCatalog.get("voc_2012_trainval").year == 2012
    coco = MetadataCatalog.get("coco_2017_val")
    assert len(coco.thing_classes) == 80 and coco.thing_classes[:2] == ["person", "bicycle"]
    # COCO ids have gaps (12 is unused): id 13 "stop sign" is the 12th class (index 11).
    assert coco.thing_dataset_id_to_contiguous_id[13] == 11
    assert coco.thing_classes[11] == "stop sign"
    assert coco.thing_dataset_id_to_contiguous_id[90] == 79
    assert MetadataCatalog.get("shapes_train").thing_classes == ["circle", "square", "triangle"]
