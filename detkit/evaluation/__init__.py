"""Evaluation: running a model over a test set (``inference_on_dataset``) and scoring it with
the PASCAL VOC devkit's rules or with pycocotools; proposal recall for proposal models."""

from detkit.evaluation.build import EVALUATOR_TYPES, build_evaluator
from detkit.evaluation.coco_evaluation import COCOEvaluator, dataset_dicts_to_coco
from detkit.evaluation.evaluator import (
    DatasetEvaluator,
    DatasetEvaluators,
    inference_context,
    inference_on_dataset,
)
from detkit.evaluation.proposal_dump import ProposalFileWriter
from detkit.evaluation.proposal_evaluation import (
    FINE_IOU_THRESHOLDS,
    OBJECT_SIZE_RANGES,
    ProposalEvaluator,
    top_n_max_iou,
)
from detkit.evaluation.testing import format_table, print_results
from detkit.evaluation.voc_evaluation import PascalVOCDetectionEvaluator
from detkit.evaluation.voc_metric import (
    COCO_IOU_THRESHOLDS,
    VOCEvalResult,
    box_iou_numpy,
    voc_ap,
    voc_eval,
)

__all__ = [
    "COCO_IOU_THRESHOLDS",
    "COCOEvaluator",
    "DatasetEvaluator",
    "DatasetEvaluators",
    "EVALUATOR_TYPES",
    "FINE_IOU_THRESHOLDS",
    "OBJECT_SIZE_RANGES",
    "PascalVOCDetectionEvaluator",
    "ProposalEvaluator",
    "ProposalFileWriter",
    "VOCEvalResult",
    "box_iou_numpy",
    "build_evaluator",
    "dataset_dicts_to_coco",
    "format_table",
    "inference_context",
    "inference_on_dataset",
    "print_results",
    "top_n_max_iou",
    "voc_ap",
    "voc_eval",
]
