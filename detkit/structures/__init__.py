"""Shared data structures: boxes, per-image instances and padded image batches."""

from detkit.structures.boxes import Boxes, pairwise_iou
from detkit.structures.image_list import ImageList
from detkit.structures.instances import Instances, check_gt_classes

__all__ = ["Boxes", "ImageList", "Instances", "check_gt_classes", "pairwise_iou"]
