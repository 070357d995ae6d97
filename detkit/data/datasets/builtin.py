"""Built-in dataset names, registered (not read) when ``detkit.data`` is imported.

Datasets live under ``$DETKIT_DATASETS`` (default ``./datasets``, resolved at import)::

    VOC2007/{Annotations,ImageSets,JPEGImages}   voc_2007_trainval, voc_2007_test
    VOC2012/{Annotations,ImageSets,JPEGImages}   voc_2012_trainval
    coco/{train2017,val2017,annotations}         coco_2017_train, coco_2017_val
    shapes/   generated on first use             shapes_train, shapes_test

Nothing touches the disk until a dataset is first read; a missing one then fails with the
path it expected and how to get the data.
"""

from __future__ import annotations

import functools
import os

from detkit.data.catalog import DatasetCatalog
from detkit.data.datasets.coco import COCO_CATEGORIES, register_coco_instances
from detkit.data.datasets.shapes import SHAPE_CLASSES, generate_shapes
from detkit.data.datasets.voc import register_pascal_voc

__all__ = ["datasets_root", "register_all_builtin"]


def datasets_root() -> str:
    """``$DETKIT_DATASETS``, or ``./datasets`` when it is not set (as an absolute path)."""
    return os.path.abspath(os.path.expanduser(os.environ.get("DETKIT_DATASETS", "datasets")))


def register_all_builtin(root: str) -> None:
    """Register every built-in name with data under ``root`` (names already taken are kept)."""
    voc = [
        ("voc_2007_trainval", "VOC2007", "trainval", 2007),
        ("voc_2007_test", "VOC2007", "test", 2007),
        ("voc_2012_trainval", "VOC2012", "trainval", 2012),
    ]
    for name, subdir, split, year in voc:
        if name not in DatasetCatalog:
            register_pascal_voc(name, os.path.join(root, subdir), split, year)

    coco_meta = {
        "thing_classes": [n for _, n in COCO_CATEGORIES],
        "thing_dataset_id_to_contiguous_id": {i: k for k, (i, _) in enumerate(COCO_CATEGORIES)},
    }
    for name, split in (("coco_2017_train", "train2017"), ("coco_2017_val", "val2017")):
        if name not in DatasetCatalog:
            json_file = os.path.join(root, "coco", "annotations", f"instances_{split}.json")
            register_coco_instances(name, json_file, os.path.join(root, "coco", split), coco_meta)

    shapes_dir = os.path.join(root, "shapes")
    for name, split in (("shapes_train", "train"), ("shapes_test", "test")):
        if name not in DatasetCatalog:
            # The generator runs on first read (a no-op once the directory exists); the data
            # then goes through the same VOC loader as real data. Year 2007: 11-point AP.
            register_pascal_voc(name, shapes_dir, split, 2007, SHAPE_CLASSES,
                                prepare=functools.partial(generate_shapes, shapes_dir))
