"""Datasets, the dataset catalogs, the mapper (image + boxes -> model input) and the loaders.

Importing this package registers the built-in dataset names (VOC, COCO, shapes) under
``$DETKIT_DATASETS`` (default ``./datasets``); nothing is read until a dataset is used.
"""

from detkit.data import datasets  # noqa: F401  (registers the built-in names below)
from detkit.data.augmentation import (
    Augmentation,
    ColorJitter,
    RandomCrop,
    RandomFlip,
    ResizeShortestEdge,
    build_augmentations,
)
from detkit.data.build import (
    DatasetFromList,
    MapDataset,
    build_detection_test_loader,
    build_detection_train_loader,
    duplicate_with_flips,
    get_detection_dataset_dicts,
    trivial_batch_collator,
    worker_init_reset_seed,
)
from detkit.data.catalog import DatasetCatalog, Metadata, MetadataCatalog
from detkit.data.datasets import (
    SHAPE_CLASSES,
    VOC_CLASSES,
    datasets_root,
    generate_shapes,
    load_coco_json,
    load_voc_instances,
    register_all_builtin,
    register_coco_instances,
    register_pascal_voc,
)
from detkit.data.image_file import ImageFileError, load_image_file
from detkit.data.mapper import DatasetMapper, read_image
from detkit.data.proposals import (
    ProposalFile,
    attach_precomputed_proposals,
    load_proposals,
    save_proposals,
)
from detkit.data.samplers import (
    AspectRatioGroupedBatchSampler,
    InferenceSampler,
    TrainingSampler,
    aspect_ratio_group_ids,
)
from detkit.data.verify import verify_dataset_dicts, verify_datasets, verify_registered_datasets
from detkit.data.verify_report import DatasetVerificationError, VerificationReport

register_all_builtin(datasets_root())

__all__ = [
    "SHAPE_CLASSES",
    "VOC_CLASSES",
    "Augmentation",
    "ColorJitter",
    "RandomCrop",
    "RandomFlip",
    "ResizeShortestEdge",
    "build_augmentations",
    "AspectRatioGroupedBatchSampler",
    "DatasetCatalog",
    "DatasetFromList",
    "DatasetMapper",
    "DatasetVerificationError",
    "ImageFileError",
    "InferenceSampler",
    "MapDataset",
    "Metadata",
    "VerificationReport",
    "MetadataCatalog",
    "ProposalFile",
    "TrainingSampler",
    "aspect_ratio_group_ids",
    "attach_precomputed_proposals",
    "build_detection_test_loader",
    "build_detection_train_loader",
    "datasets",
    "duplicate_with_flips",
    "generate_shapes",
    "get_detection_dataset_dicts",
    "load_coco_json",
    "load_image_file",
    "load_proposals",
    "load_voc_instances",
    "read_image",
    "register_all_builtin",
    "register_coco_instances",
    "register_pascal_voc",
    "save_proposals",
    "trivial_batch_collator",
    "verify_dataset_dicts",
    "verify_datasets",
    "verify_registered_datasets",
    "worker_init_reset_seed",
]
