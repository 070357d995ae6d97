"""COCO-style box evaluation through pycocotools (AP over IoU 0.50:0.95, by object size)."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from detkit.config import CfgNode
from detkit.evaluation.evaluator import DatasetEvaluator
from detkit.evaluation.testing import format_table, json_safe
from detkit.utils import comm

__all__ = ["COCOEvaluator", "dataset_dicts_to_coco"]

logger = logging.getLogger(__name__)

# pycocotools' summary order for boxes: COCOeval.stats[0:6].
_COCO_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def dataset_dicts_to_coco(
    dataset_dicts: list[dict], thing_classes: Sequence[str], category_ids: Sequence[int]
) -> tuple[dict, dict]:
    """A COCO ground-truth dict built from detkit dataset dicts.

    Args:
        dataset_dicts: records with ``image_id``, ``height``, ``width`` and ``annotations``
            (``bbox`` XYXY continuous, 0-based ``category_id``, optional ``iscrowd``).
        thing_classes: class names by contiguous id.
        category_ids: the COCO category id of each contiguous id.

    Returns:
        ``(coco_dict, image_id_map)``: the COCO dict (XYWH boxes, ``area = w * h``) and the
        map from the records' ``image_id`` to the integer ids used in it (the ids themselves
        when they are all integers, else 1, 2, ... in dataset order).
    """
    ids = [record["image_id"] for record in dataset_dicts]
    integer_ids = all(isinstance(i, (int, np.integer)) for i in ids)
    image_id_map = {i: (int(i) if integer_ids else n + 1) for n, i in enumerate(ids)}
    images, annotations = [], []
    for record in dataset_dicts:
        coco_id = image_id_map[record["image_id"]]
        images.append(
            {
                "id": coco_id,
                "width": int(record["width"]),
                "height": int(record["height"]),
                "file_name": record.get("file_name", ""),
            }
        )
        for ann in record.get("annotations", []):
            x1, y1, x2, y2 = (float(v) for v in ann["bbox"])
            annotations.append(
                {
                    "id": len(annotations) + 1,  # pycocotools needs ids > 0 to tell gts apart
                    "image_id": coco_id,
                    "category_id": int(category_ids[ann["category_id"]]),
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": int(ann.get("iscrowd", 0)),
                }
            )
    categories = [{"id": int(c), "name": n} for c, n in zip(category_ids, thing_classes)]
    return {"images": images, "annotations": annotations, "categories": categories}, image_id_map


class COCOEvaluator(DatasetEvaluator):
    """Box AP with pycocotools: ``{"bbox": {"AP", "AP50", "AP75", "APs", "APm", "APl",
    "AP-<class>"}}`` as fractions in [0, 1], pycocotools' own values (NaN where it has no
    ground truth, its -1). ``describe()`` names the evaluator "coco".

    The ground truth is ``json_file`` when given (the official annotations, whose ``area``
    drives the size ranges), else built from ``dataset_dicts``. Predictions are converted to
    COCO results: XYWH boxes and the original category ids (inverse of
    ``thing_dataset_id_to_contiguous_id``), written to ``coco_instances_results.json``.

    Args:
        thing_classes: class names by contiguous id.
        dataset_dicts: the dataset; needed when ``json_file`` is None.
        json_file: COCO annotation file of the dataset (its image ids must be the records').
        thing_dataset_id_to_contiguous_id: ``{COCO category id: contiguous id}``; None means
            the contiguous ids are the category ids.
        legacy_plus_one: predictions are pixel-index boxes (width ``x2 - x1 + 1``,
            ``MODEL.LEGACY_PLUS_ONE``); their COCO width adds the 1 back.
        output_dir: where ``coco_instances_results.json`` and ``coco_metrics.json`` go.
        dataset_name: name used in messages.
        max_dets_per_image: pycocotools' largest ``maxDets`` (COCO: 100).
    """

    name = "coco"

    def __init__(
        self,
        *,
        thing_classes: Sequence[str],
        dataset_dicts: list[dict] | None = None,
        json_file: str | None = None,
        thing_dataset_id_to_contiguous_id: Mapping[int, int] | None = None,
        legacy_plus_one: bool = False,
        output_dir: str | None = None,
        dataset_name: str = "dataset",
        max_dets_per_image: int = 100,
    ):
        from pycocotools.coco import COCO

        self.thing_classes = list(thing_classes)
        self.legacy_plus_one = bool(legacy_plus_one)
        self.output_dir = output_dir
        self.dataset_name = dataset_name
        self.max_dets_per_image = int(max_dets_per_image)
        if thing_dataset_id_to_contiguous_id is None:
            thing_dataset_id_to_contiguous_id = {k: k for k in range(len(self.thing_classes))}
        self._contiguous_to_category = {
            int(v): int(k) for k, v in thing_dataset_id_to_contiguous_id.items()
        }
        if json_file:
            with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
                self._coco_gt = COCO(json_file)
            self._image_id_map = None  # records' image ids are the json's ids
        elif dataset_dicts is not None:
            category_ids = [self._contiguous_to_category[k] for k in range(len(thing_classes))]
            coco_dict, self._image_id_map = dataset_dicts_to_coco(
                dataset_dicts, self.thing_classes, category_ids
            )
            with contextlib.redirect_stdout(io.StringIO()):
                self._coco_gt = COCO()
                self._coco_gt.dataset = coco_dict
                self._coco_gt.createIndex()
        else:
            raise ValueError(
                f"COCOEvaluator for '{dataset_name}' needs json_file (COCO annotations) or "
                "dataset_dicts to build its ground truth; got neither."
            )
        self._predictions: dict = {}

    @classmethod
    def _catalog_arguments(cls, dataset_name: str) -> dict:
        from detkit.data import DatasetCatalog, MetadataCatalog  # the data package is optional

        metadata = MetadataCatalog.get(dataset_name)
        json_file = getattr(metadata, "json_file", None)
        dataset_dicts = None
        needs_loading = not all(
            hasattr(metadata, key) for key in ("thing_classes", "thing_dataset_id_to_contiguous_id")
        )
        if not json_file or needs_loading:
            # The COCO loader sets the class names and id map when it reads the json.
            dataset_dicts = DatasetCatalog.get(dataset_name)
        return {
            "thing_classes": list(metadata.thing_classes),
            "dataset_dicts": dataset_dicts,
            "json_file": json_file,
            "thing_dataset_id_to_contiguous_id": getattr(
                metadata, "thing_dataset_id_to_contiguous_id", None
            ),
            "dataset_name": dataset_name,
        }

    @classmethod
    def from_dataset_name(
        cls, dataset_name: str, *, legacy_plus_one: bool = False, output_dir: str | None = None
    ) -> COCOEvaluator:
        """Evaluator for a registered dataset (its metadata's ``json_file`` when it has one)."""
        return cls(
            **cls._catalog_arguments(dataset_name),
            legacy_plus_one=legacy_plus_one,
            output_dir=output_dir,
        )

    @classmethod
    def from_config(
        cls, cfg: CfgNode, dataset_name: str, output_dir: str | None = None
    ) -> dict[str, Any]:
        """Constructor arguments for the registered dataset ``dataset_name`` under ``cfg``.

        Reads ``MODEL.LEGACY_PLUS_ONE``; the classes and ground truth (the metadata's
        ``json_file`` when it has one, else the dataset dicts) come from the catalogs.
        ``output_dir``: where ``coco_instances_results.json`` and ``coco_metrics.json`` go
        (None: nothing written).
        """
        arguments = cls._catalog_arguments(dataset_name)
        arguments.update(legacy_plus_one=cfg.MODEL.LEGACY_PLUS_ONE, output_dir=output_dir)
        return arguments

    def reset(self) -> None:
        self._predictions = {}

    def _coco_image_id(self, image_id) -> int:
        if self._image_id_map is None:
            return int(image_id)
        if image_id not in self._image_id_map:
            raise KeyError(
                f"Prediction for image_id {image_id!r}, which is not in dataset "
                f"'{self.dataset_name}'; evaluate with the same dataset the loader read."
            )
        return self._image_id_map[image_id]

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        one = 1.0 if self.legacy_plus_one else 0.0
        for inp, out in zip(inputs, outputs):
            instances = out["instances"].to("cpu")
            boxes = instances.pred_boxes.tensor.numpy().astype(np.float64).reshape(-1, 4)
            xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2] + one], axis=1)
            image_id = self._coco_image_id(inp["image_id"])
            classes = instances.pred_classes.tolist()
            unknown = sorted(set(classes) - set(self._contiguous_to_category))
            if unknown:
                raise KeyError(
                    f"Image {inp['image_id']!r}: predicted classes {unknown} have no COCO "
                    f"category id (thing_dataset_id_to_contiguous_id covers "
                    f"{len(self._contiguous_to_category)} classes); the model's NUM_CLASSES "
                    f"must match dataset '{self.dataset_name}'."
                )
            self._predictions[image_id] = [
                {
                    "image_id": image_id,
                    "category_id": self._contiguous_to_category[int(c)],
                    "bbox": [float(v) for v in box],
                    "score": float(s),
                }
                for box, s, c in zip(xywh, instances.scores.tolist(), classes)
            ]

    def evaluate(self) -> dict[str, dict[str, float]]:
        predictions = comm.gather_dict(self._predictions)
        if predictions is None:
            return {}
        num_missing = len(self._coco_gt.getImgIds()) - len(predictions)
        if num_missing > 0:
            logger.warning(
                "%d of %d images of %s have no prediction (not run); they count as images "
                "without detections.",
                num_missing,
                len(self._coco_gt.getImgIds()),
                self.dataset_name,
            )
        results = [d for image_id in sorted(predictions) for d in predictions[image_id]]
        if self.output_dir:
            os.makedirs(self.output_dir, exist_ok=True)
            path = os.path.join(self.output_dir, "coco_instances_results.json")
            with open(path, "w") as f:
                json.dump(results, f)
            logger.info("Wrote %d detections to %s", len(results), path)
        metrics = self._run_cocoeval(results)
        if self.output_dir:
            with open(os.path.join(self.output_dir, "coco_metrics.json"), "w") as f:
                report = {"dataset": self.dataset_name, "unit": "fraction", "bbox": metrics}
                json.dump(json_safe(report), f, indent=2)
        return {"bbox": metrics}

    def _run_cocoeval(self, results: list[dict]) -> dict[str, float]:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        log = io.StringIO()
        with contextlib.redirect_stdout(log):
            if results:
                coco_dt = self._coco_gt.loadRes(copy.deepcopy(results))  # loadRes edits them
            else:
                # loadRes fails on an empty list; an empty result set scores 0 wherever
                # ground truth exists.
                logger.warning("No detections on %s: every AP is 0.", self.dataset_name)
                coco_dt = COCO()
                coco_dt.dataset = {
                    "images": list(self._coco_gt.dataset["images"]),
                    "categories": copy.deepcopy(self._coco_gt.dataset["categories"]),
                    "annotations": [],
                }
                coco_dt.createIndex()
            coco_eval = COCOeval(self._coco_gt, coco_dt, "bbox")
            coco_eval.params.maxDets = [1, 10, self.max_dets_per_image]
            coco_eval.evaluate()
            coco_eval.accumulate()
            coco_eval.summarize()
        logger.info("pycocotools on %s:\n%s", self.dataset_name, log.getvalue().strip())
        metrics = {
            name: float(value) if value >= 0 else float("nan")
            for name, value in zip(_COCO_METRICS, coco_eval.stats[: len(_COCO_METRICS)])
        }
        # precision: [IoU thresholds, recall points, categories, area ranges, maxDets];
        # area "all" and the largest maxDets, -1 where undefined.
        precision = coco_eval.eval["precision"][:, :, :, 0, -1]
        rows = []
        for k, category_id in enumerate(coco_eval.params.catIds):
            values = precision[:, :, k]
            ap = float(values[values > -1].mean()) if (values > -1).any() else float("nan")
            name = self._category_name(category_id)
            metrics[f"AP-{name}"] = ap
            rows.append([name, ap])
        logger.info(
            "Per-category AP on %s (fractions in [0, 1]):\n%s",
            self.dataset_name,
            format_table(["category", "AP"], rows),
        )
        return metrics

    def _category_name(self, category_id: int) -> str:
        contiguous = {v: k for k, v in self._contiguous_to_category.items()}.get(category_id)
        if contiguous is not None and contiguous < len(self.thing_classes):
            return self.thing_classes[contiguous]
        return str(self._coco_gt.cats[category_id].get("name", category_id))
