"""``build_evaluator``: proposal recall for proposal models; for detectors, the evaluator a
registered dataset asks for (its ``evaluator_type``)."""

from __future__ import annotations

import os

from detkit.evaluation.coco_evaluation import COCOEvaluator
from detkit.evaluation.evaluator import DatasetEvaluator, DatasetEvaluators
from detkit.evaluation.proposal_dump import ProposalFileWriter
from detkit.evaluation.proposal_evaluation import ProposalEvaluator
from detkit.evaluation.voc_evaluation import PascalVOCDetectionEvaluator

__all__ = ["EVALUATOR_TYPES", "build_evaluator"]

# MetadataCatalog.get(name).evaluator_type -> evaluator class.
EVALUATOR_TYPES: dict[str, type[DatasetEvaluator]] = {
    "voc": PascalVOCDetectionEvaluator,
    "coco": COCOEvaluator,
}


def build_evaluator(
    cfg, dataset_name: str, output_dir: str | None = None, output_kind: str | None = None
) -> DatasetEvaluator:
    """The evaluator of ``dataset_name`` for the model of ``cfg``.

    A proposal model (``output_kind`` "proposals", e.g. ``ProposalNetwork``) gets proposal
    recall (:class:`ProposalEvaluator`) and, with ``TEST.SAVE_PROPOSALS``, its proposals
    written to ``output_dir/proposals.npz`` (:class:`ProposalFileWriter`). A detector gets
    the evaluator its dataset's metadata asks for (``evaluator_type``: "voc" or "coco").

    Args:
        cfg: the config (the evaluators read ``MODEL.LEGACY_PLUS_ONE``, ``TEST.*``).
        dataset_name: a name registered in ``DatasetCatalog`` / ``MetadataCatalog``.
        output_dir: where the evaluator writes its files (None: nothing written).
        output_kind: what the model returns per image, "instances" or "proposals"; None reads
            the ``output_kind`` of the class ``MODEL.META_ARCHITECTURE`` names.
    """
    from detkit.data import MetadataCatalog  # the data package is optional at import time

    if output_kind is None:
        from detkit.modeling import META_ARCH_REGISTRY

        meta_arch = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)
        output_kind = getattr(meta_arch, "output_kind", "instances")
    if output_kind == "proposals":
        evaluators: list[DatasetEvaluator] = [
            ProposalEvaluator(**ProposalEvaluator.from_config(cfg, dataset_name, output_dir))
        ]
        if output_dir and cfg.TEST.SAVE_PROPOSALS:
            evaluators.append(
                ProposalFileWriter(
                    os.path.join(output_dir, "proposals.npz"),
                    legacy_plus_one=cfg.MODEL.LEGACY_PLUS_ONE,
                    source=f"{cfg.MODEL.META_ARCHITECTURE} ({cfg.OUTPUT_DIR}) on {dataset_name}",
                )
            )
        return DatasetEvaluators(evaluators)
    if output_kind != "instances":
        raise ValueError(
            f"The model's output_kind is {output_kind!r}; detkit evaluates 'instances' "
            "(detections) and 'proposals'. Give the evaluator yourself for other outputs."
        )
    evaluator_type = getattr(MetadataCatalog.get(dataset_name), "evaluator_type", None)
    if evaluator_type not in EVALUATOR_TYPES:
        raise ValueError(
            f"Dataset '{dataset_name}' has evaluator_type {evaluator_type!r}; known types: "
            f"{sorted(EVALUATOR_TYPES)}. Set it when registering the dataset, e.g. "
            f"MetadataCatalog.get('{dataset_name}').set(evaluator_type='voc')."
        )
    evaluator_class = EVALUATOR_TYPES[evaluator_type]
    return evaluator_class(**evaluator_class.from_config(cfg, dataset_name, output_dir))
