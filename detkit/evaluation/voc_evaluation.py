"""PASCAL VOC detection evaluator: per-class AP with the devkit's rules (PAPER.md, Evaluation)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from detkit.config import CfgNode
from detkit.evaluation.evaluator import DatasetEvaluator
from detkit.evaluation.testing import format_table, json_safe
from detkit.evaluation.voc_metric import (
    COCO_IOU_THRESHOLDS,
    VOCEvalResult,
    describe_iou_thresholds,
    voc_ap,
    voc_eval,
)
from detkit.utils import comm

__all__ = ["PascalVOCDetectionEvaluator", "voc_ap", "voc_eval"]

logger = logging.getLogger(__name__)


class PascalVOCDetectionEvaluator(DatasetEvaluator):
    """VOC AP per class, mAP at IoU 0.5, and AP averaged over IoU 0.50:0.05:0.95.

    Every image of ``dataset_dicts`` counts, as in the devkit: an image the model was not run
    on counts as an image without detections (a warning says how many there are).

    Box conventions: the dataset's ground truths are continuous XYXY boxes (width
    ``x2 - x1``). With ``legacy_plus_one`` the model predicts pixel-index boxes (``x2`` is the
    last pixel, width ``x2 - x1 + 1``), so ground truths are converted the same way
    (``x2 - 1``, ``y2 - 1``) and IoU uses ``+1`` widths: exactly the devkit's computation.

    Results (fractions in [0, 1]): ``{"bbox": {"AP": mean over the 10 IoU thresholds, "AP50",
    "AP75", "AP50-<class>": per-class AP at IoU 0.5}}``, plus ``"AP50_area"`` with the 11-point
    metric:
    the area AP at IoU 0.5, which does not saturate as the 11-point one does. A class with no
    non-difficult ground truth has AP NaN and is left out of every mean (the devkit would
    divide by zero). ``describe()`` names the evaluator "voc" and its AP metric
    (``"ap_metric"``: "11-point" or "area").

    Args:
        dataset_dicts: the dataset (``image_id``, ``annotations`` with ``bbox`` XYXY,
            0-based ``category_id``, ``difficult``; ``iscrowd`` objects are treated as
            difficult).
        thing_classes: class names, indexed by ``category_id``.
        use_07_metric: VOC2007's 11-point AP; otherwise the area under the precision envelope.
        legacy_plus_one: the ``+1`` width convention (``MODEL.LEGACY_PLUS_ONE``), see above.
        output_dir: where ``voc_detections.json`` and ``voc_metrics.json`` are written.
        dataset_name: name used in messages and files.
        iou_thresholds: thresholds of "AP"; must contain 0.5. A match needs IoU > threshold.
    """

    name = "voc"

    def __init__(
        self,
        *,
        dataset_dicts: list[dict],
        thing_classes: Sequence[str],
        use_07_metric: bool = False,
        legacy_plus_one: bool = False,
        output_dir: str | None = None,
        dataset_name: str = "dataset",
        iou_thresholds: Sequence[float] = COCO_IOU_THRESHOLDS,
    ):
        self.thing_classes = list(thing_classes)
        self.use_07_metric = bool(use_07_metric)
        self.legacy_plus_one = bool(legacy_plus_one)
        self.output_dir = output_dir
        self.dataset_name = dataset_name
        self.iou_thresholds = tuple(float(t) for t in iou_thresholds)
        if not np.isclose(self.iou_thresholds, 0.5).any():
            raise ValueError(
                f"iou_thresholds {self.iou_thresholds} must contain 0.5 (the VOC metric, AP50)."
            )
        self._load_ground_truth(dataset_dicts)
        self._predictions: dict = {}

    @classmethod
    def _catalog_arguments(cls, dataset_name: str, use_07_metric: bool | None) -> dict:
        from detkit.data import DatasetCatalog, MetadataCatalog  # the data package is optional

        metadata = MetadataCatalog.get(dataset_name)
        if use_07_metric is None:
            year = getattr(metadata, "year", None)
            use_07_metric = year is not None and int(year) == 2007  # PAPER.md: VOC2007 test
        return {
            "dataset_dicts": DatasetCatalog.get(dataset_name),
            "thing_classes": list(metadata.thing_classes),
            "use_07_metric": use_07_metric,
            "dataset_name": dataset_name,
        }

    @classmethod
    def from_dataset_name(
        cls,
        dataset_name: str,
        *,
        use_07_metric: bool | None = None,
        legacy_plus_one: bool = False,
        output_dir: str | None = None,
    ) -> PascalVOCDetectionEvaluator:
        """Evaluator for a registered dataset; ``use_07_metric=None`` means 11-point AP when
        its metadata ``year`` is 2007, the area otherwise."""
        return cls(
            **cls._catalog_arguments(dataset_name, use_07_metric),
            legacy_plus_one=legacy_plus_one,
            output_dir=output_dir,
        )

    @classmethod
    def from_config(
        cls, cfg: CfgNode, dataset_name: str, output_dir: str | None = None
    ) -> dict[str, Any]:
        """Constructor arguments for the registered dataset ``dataset_name`` under ``cfg``.

        Reads ``MODEL.LEGACY_PLUS_ONE``; the dataset dicts, ``thing_classes`` and the AP
        variant (11-point for a ``year`` 2007 dataset) come from the catalogs. ``output_dir``:
        where ``voc_detections.json`` and ``voc_metrics.json`` go (None: nothing written).
        """
        arguments = cls._catalog_arguments(dataset_name, None)
        arguments.update(legacy_plus_one=cfg.MODEL.LEGACY_PLUS_ONE, output_dir=output_dir)
        return arguments

    def _load_ground_truth(self, dataset_dicts: list[dict]) -> None:
        self._image_index: dict = {}
        self._file_names: list[str] = []
        image_ids, boxes, classes, difficult = [], [], [], []
        for record in dataset_dicts:
            image_id = record["image_id"]
            if image_id in self._image_index:
                raise ValueError(
                    f"Dataset '{self.dataset_name}' has image_id {image_id!r} twice "
                    f"({record.get('file_name', '?')}); image ids must be unique."
                )
            index = self._image_index[image_id] = len(self._image_index)
            self._file_names.append(record.get("file_name", ""))
            for ann in record.get("annotations", []):
                image_ids.append(index)
                boxes.append(ann["bbox"])
                classes.append(ann["category_id"])
                difficult.append(bool(ann.get("difficult", False) or ann.get("iscrowd", 0)))
        self._gt_image_ids = np.asarray(image_ids, dtype=np.int64)
        self._gt_boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if self.legacy_plus_one:
            self._gt_boxes[:, 2:] -= 1.0  # continuous -> pixel-index boxes, as the model's
        self._gt_classes = np.asarray(classes, dtype=np.int64)
        self._gt_difficult = np.asarray(difficult, dtype=bool)
        if self._gt_classes.size and self._gt_classes.max() >= len(self.thing_classes):
            raise ValueError(
                f"Dataset '{self.dataset_name}' has category_id {self._gt_classes.max()} but "
                f"only {len(self.thing_classes)} thing_classes; check the dataset's metadata."
            )

    def reset(self) -> None:
        self._predictions = {}

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        for inp, out in zip(inputs, outputs):
            if "instances" not in out:
                raise KeyError(
                    f"PascalVOCDetectionEvaluator needs outputs with 'instances' (image "
                    f"{inp.get('image_id')!r}); got keys {sorted(out)}."
                )
            instances = out["instances"].to("cpu")
            self._predictions[inp["image_id"]] = (
                instances.pred_boxes.tensor.numpy().astype(np.float64).reshape(-1, 4),
                instances.scores.numpy().astype(np.float64).reshape(-1),
                instances.pred_classes.numpy().astype(np.int64).reshape(-1),
            )

    def describe(self) -> dict[str, str]:
        """``{"name": "voc", "ap_metric": "11-point" | "area"}``: AP50's metric."""
        return {**super().describe(), "ap_metric": "11-point" if self.use_07_metric else "area"}

    def describe_rules(self) -> str:
        """The rules this evaluation follows, in words (PAPER.md: report them)."""
        metric = (
            "VOC2007 11-point AP (mean of max precision at recall >= 0, 0.1, ..., 1)"
            if self.use_07_metric
            else "VOC2010+ AP (area under the monotone precision envelope)"
        )
        iou = (
            "IoU > 0.5 strictly, widths x2 - x1 + 1 (devkit, legacy_plus_one)"
            if self.legacy_plus_one
            else "IoU > 0.5 strictly, continuous widths x2 - x1"
        )
        thresholds = describe_iou_thresholds(self.iou_thresholds)
        return (
            f"metric: {metric}; match: {iou}, duplicates are false positives; difficult: "
            "not counted as positives, detections matched to them neither TP nor FP; "
            f"AP: mean of the class-mean AP over IoU > {thresholds}, same rules."
        )

    def evaluate(self) -> dict[str, dict[str, float]]:
        predictions = comm.gather_dict(self._predictions)
        if predictions is None:
            return {}
        unknown = [i for i in predictions if i not in self._image_index]
        if unknown:
            raise KeyError(
                f"Predictions for image_id(s) {unknown[:5]} that are not in dataset "
                f"'{self.dataset_name}'; evaluate with the same dataset the loader read."
            )
        num_missing = len(self._image_index) - len(predictions)
        if num_missing:
            logger.warning(
                "%d of %d images of %s have no prediction (not run); they count as images "
                "without detections.",
                num_missing,
                len(self._image_index),
                self.dataset_name,
            )
        det_image_ids, det_boxes, det_scores, det_classes = [], [], [], []
        for image_id, (boxes, scores, classes) in predictions.items():
            det_image_ids.append(np.full(len(scores), self._image_index[image_id]))
            det_boxes.append(boxes)
            det_scores.append(scores)
            det_classes.append(classes)
        arguments = dict(
            det_image_ids=np.concatenate(det_image_ids) if det_image_ids else [],
            det_boxes=np.concatenate(det_boxes) if det_boxes else [],
            det_scores=np.concatenate(det_scores) if det_scores else [],
            det_classes=np.concatenate(det_classes) if det_classes else [],
            gt_image_ids=self._gt_image_ids,
            gt_boxes=self._gt_boxes,
            gt_classes=self._gt_classes,
            gt_difficult=self._gt_difficult,
            num_classes=len(self.thing_classes),
            iou_thresholds=self.iou_thresholds,
            use_07_metric=self.use_07_metric,
            legacy_plus_one=self.legacy_plus_one,
        )
        result = voc_eval(**arguments)
        metrics = self._metrics(result)
        if self.use_07_metric:
            # The 11-point AP saturates near 0.909 when a class never reaches full recall:
            # the area under the precision envelope at IoU 0.5 is reported beside it.
            area = voc_eval(**{**arguments, "iou_thresholds": (0.5,), "use_07_metric": False})
            metrics["AP50_area"] = float(area.mean_ap()[0])
        self._log(result, metrics)
        if self.output_dir:
            self._write(predictions, result, metrics)
        return {"bbox": metrics}

    def _threshold_index(self, threshold: float) -> int | None:
        hits = np.flatnonzero(np.isclose(self.iou_thresholds, threshold))
        return int(hits[0]) if hits.size else None

    def _metrics(self, result: VOCEvalResult) -> dict[str, float]:
        mean_ap = result.mean_ap()
        finite = mean_ap[np.isfinite(mean_ap)]
        metrics = {
            "AP": float(finite.mean()) if finite.size else float("nan"),
            "AP50": float(mean_ap[self._threshold_index(0.5)]),
        }
        index75 = self._threshold_index(0.75)
        if index75 is not None:
            metrics["AP75"] = float(mean_ap[index75])
        for k, name in enumerate(self.thing_classes):
            metrics[f"AP50-{name}"] = float(result.ap[self._threshold_index(0.5), k])
        return metrics

    def _log(self, result: VOCEvalResult, metrics: dict[str, float]) -> None:
        logger.info("VOC evaluation of %s: %s", self.dataset_name, self.describe_rules())
        no_positives = [n for n, p in zip(self.thing_classes, result.num_positives) if p == 0]
        if no_positives:
            logger.warning(
                "Classes without non-difficult ground truth in %s (AP NaN, left out of the "
                "mean): %s",
                self.dataset_name,
                ", ".join(no_positives),
            )
        i50 = self._threshold_index(0.5)
        # A class is NaN at every threshold or at none (it depends on positives only).
        per_class_ap = result.ap.mean(axis=0)
        rows = [
            [
                name,
                int(result.num_positives[k]),
                int(result.num_detections[k]),
                float(result.ap[i50, k]),
                float(per_class_ap[k]),
            ]
            for k, name in enumerate(self.thing_classes)
        ]
        rows.append(
            [
                "mean",
                int(result.num_positives.sum()),
                int(result.num_detections.sum()),
                metrics["AP50"],
                metrics["AP"],
            ]
        )
        table = format_table(["class", "gt", "detections", "AP50", "AP"], rows)
        logger.info("Per-class AP on %s (fractions in [0, 1]):\n%s", self.dataset_name, table)

    def _write(self, predictions: dict, result: VOCEvalResult, metrics: dict) -> None:
        os.makedirs(self.output_dir, exist_ok=True)
        images = []
        for image_id, index in self._image_index.items():
            boxes, scores, classes = predictions.get(image_id, (np.zeros((0, 4)), [], []))
            images.append(
                {
                    "image_id": image_id,
                    "file_name": self._file_names[index],
                    "detections": [
                        {
                            "category_id": int(c),
                            "category": self.thing_classes[int(c)],
                            "bbox": [round(float(v), 2) for v in box],
                            "score": round(float(s), 5),
                        }
                        for box, s, c in zip(boxes, scores, classes)
                    ],
                }
            )
        box_mode = (
            "XYXY absolute pixels, pixel-index (x2 inclusive, width x2 - x1 + 1)"
            if self.legacy_plus_one
            else "XYXY absolute pixels, continuous (width x2 - x1)"
        )
        detections = {"dataset": self.dataset_name, "box_mode": box_mode, "images": images}
        with open(os.path.join(self.output_dir, "voc_detections.json"), "w") as f:
            json.dump(detections, f)
        report = {
            "dataset": self.dataset_name,
            "rules": self.describe_rules(),
            "use_07_metric": self.use_07_metric,
            "legacy_plus_one": self.legacy_plus_one,
            "iou_thresholds": list(self.iou_thresholds),
            "unit": "fraction",
            "bbox": metrics,
            "per_class": {
                name: {
                    "num_positives": int(result.num_positives[k]),
                    "num_detections": int(result.num_detections[k]),
                    "ap_per_iou": [float(v) for v in result.ap[:, k]],
                }
                for k, name in enumerate(self.thing_classes)
            },
        }
        with open(os.path.join(self.output_dir, "voc_metrics.json"), "w") as f:
            json.dump(json_safe(report), f, indent=2)
        logger.info("Wrote voc_detections.json and voc_metrics.json to %s", self.output_dir)
