"""Dataset loaders (VOC, COCO), the synthetic shapes generator and the built-in names."""

from detkit.data.datasets.builtin import datasets_root, register_all_builtin
from detkit.data.datasets.coco import COCO_CATEGORIES, load_coco_json, register_coco_instances
from detkit.data.datasets.shapes import SHAPE_CLASSES, generate_shapes, render_shapes_image
from detkit.data.datasets.voc import VOC_CLASSES, load_voc_instances, register_pascal_voc

__all__ = [
    "COCO_CATEGORIES", "SHAPE_CLASSES", "VOC_CLASSES", "datasets_root", "generate_shapes",
    "load_coco_json", "load_voc_instances", "register_all_builtin", "register_coco_instances",
    "register_pascal_voc", "render_shapes_image",
]
