"""``build_evaluator``: the evaluator a registered dataset asks for (its ``evaluator_type``)."""

from __future__ import annotations

from detkit.evaluation.coco_evaluation import COCOEvaluator
from detkit.evaluation.evaluator import DatasetEvaluator
from detkit.evaluation.voc_evaluation import PascalVOCDetectionEvaluator

__all__ = ["EVALUATOR_TYPES", "build_evaluator"]

# MetadataCatalog.get(name).evaluator_type -> evaluator class.
EVALUATOR_TYPES: dict[str, type[DatasetEvaluator]] = {
    "voc": PascalVOCDetectionEvaluator,
    "coco": COCOEvaluator,
}


def build_evaluator(cfg, dataset_name: str, output_dir: str | None = None) -> DatasetEvaluator:
    """The evaluator of ``dataset_name``, chosen by its metadata's ``evaluator_type``.

    Args:
        cfg: the config (the evaluators read ``MODEL.LEGACY_PLUS_ONE``).
        dataset_name: a name registered in ``DatasetCatalog`` / ``MetadataCatalog``.
        output_dir: where the evaluator writes its JSON files (None: nothing written).
    """
    from detkit.data import MetadataCatalog  # the data package is optional at import time

    evaluator_type = getattr(MetadataCatalog.get(dataset_name), "evaluator_type", None)
    if evaluator_type not in EVALUATOR_TYPES:
        raise ValueError(
            f"Dataset '{dataset_name}' has evaluator_type {evaluator_type!r}; known types: "
            f"{sorted(EVALUATOR_TYPES)}. Set it when registering the dataset, e.g. "
            f"MetadataCatalog.get('{dataset_name}').set(evaluator_type='voc')."
        )
    evaluator_class = EVALUATOR_TYPES[evaluator_type]
    return evaluator_class(**evaluator_class.from_config(cfg, dataset_name, output_dir))
