"""NUM_CLASSES against the datasets' classes: a run whose model predicts another number of
classes than its data has (which would train to the end without a word) stops before it
starts, naming the dataset, the key, both numbers and the fix."""

import os

import pytest

from detkit.config import get_cfg
from detkit.modeling.meta_arch import check_num_classes

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _cfg(config, *overrides):
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(ROOT, config))
    cfg.merge_from_list(list(overrides))
    return cfg


@pytest.mark.parametrize("num_classes", [1, 2, 4])
def test_a_count_other_than_the_datasets_is_refused(tiny_shapes, num_classes):
    cfg = _cfg(
        "configs/quickstart/shapes.yaml",
        "DATASETS.TRAIN",
        [tiny_shapes[0]],
        "DATASETS.TEST",
        [tiny_shapes[1]],
        "MODEL.ROI_HEADS.NUM_CLASSES",
        num_classes,
    )
    with pytest.raises(
        ValueError,
        match=(
            rf"MODEL.ROI_HEADS.NUM_CLASSES is {num_classes}, but dataset 'tiny_shapes_train' "
            r"\(DATASETS.TRAIN\) has 3 classes \(circle, square, triangle\).*"
            r"Set MODEL.ROI_HEADS.NUM_CLASSES 3"
        ),
    ):
        check_num_classes(cfg)


def test_the_right_count_and_class_agnostic_models_pass(tiny_shapes):
    names = ["DATASETS.TRAIN", [tiny_shapes[0]], "DATASETS.TEST", [tiny_shapes[1]]]
    check_num_classes(_cfg("configs/quickstart/shapes.yaml", *names))  # 3 = 3
    # The RPN alone has no classes: any NUM_CLASSES value is irrelevant to it.
    check_num_classes(
        _cfg("configs/quickstart/rpn_shapes.yaml", *names, "MODEL.ROI_HEADS.NUM_CLASSES", 7)
    )


def test_only_the_given_datasets_are_checked(tiny_shapes):
    # --eval-only checks the test sets: a training set of other classes does not matter.
    from detkit.data import DatasetCatalog, MetadataCatalog

    DatasetCatalog.register("two_class_set", lambda: [])
    MetadataCatalog.get("two_class_set").set(thing_classes=["cat", "dog"])
    try:
        cfg = _cfg(
            "configs/quickstart/shapes.yaml",
            "DATASETS.TRAIN",
            ["two_class_set"],
            "DATASETS.TEST",
            [tiny_shapes[1]],
        )
        check_num_classes(cfg, [tiny_shapes[1]])
        with pytest.raises(ValueError, match=r"'two_class_set' \(DATASETS.TRAIN\) has 2"):
            check_num_classes(cfg)
    finally:
        DatasetCatalog.remove("two_class_set")
        MetadataCatalog.remove("two_class_set")


def test_retinanet_names_its_own_key(tiny_shapes):
    cfg = _cfg(
        "projects/retinanet/configs/shapes_retinanet.yaml",
        "DATASETS.TRAIN",
        [tiny_shapes[0]],
        "DATASETS.TEST",
        [],
        "MODEL.RETINANET.NUM_CLASSES",
        2,
    )
    with pytest.raises(ValueError, match="MODEL.RETINANET.NUM_CLASSES is 2, but dataset"):
        check_num_classes(cfg)


def test_default_trainer_checks_before_building_anything(tiny_shapes, tmp_path):
    from detkit.engine import DefaultTrainer

    cfg = _cfg(
        "configs/quickstart/shapes.yaml",
        "DATASETS.TRAIN",
        [tiny_shapes[0]],
        "DATASETS.TEST",
        [],
        "MODEL.ROI_HEADS.NUM_CLASSES",
        5,
        "OUTPUT_DIR",
        str(tmp_path),
    )
    with pytest.raises(ValueError, match="NUM_CLASSES is 5, but dataset 'tiny_shapes_train'"):
        DefaultTrainer(cfg)
