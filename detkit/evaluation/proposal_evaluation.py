"""Proposal quality: recall against IoU for the top N proposals and average recall (AR@N).

The paper's Figure 4 plots, for the top 300 / 1,000 / 2,000 proposals of each image, the
fraction of ground-truth objects recalled against the IoU threshold; average recall is the
summary of Hosang et al. ("What makes for effective detection proposals?", 2015), here the
mean of the recall over IoU 0.50:0.05:0.95 as COCO computes it.

Recall rule (Hosang et al., the paper's Figure 4): an object is recalled at IoU ``t`` by the
top N proposals of its image when its best IoU with any of them is ``>= t``. There is no
one-to-one assignment: one proposal may recall several objects. detectron2's
``RPNEvaluator`` and pycocotools' AR assign proposals to objects greedily one-to-one, which
gives the same or slightly lower values when objects overlap.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from detkit.config import CfgNode
from detkit.evaluation.evaluator import DatasetEvaluator
from detkit.evaluation.recall_plots import plot_recall_vs_iou, plot_recall_vs_proposals
from detkit.evaluation.testing import format_table, json_safe
from detkit.evaluation.voc_metric import COCO_IOU_THRESHOLDS, box_iou_numpy, describe_iou_thresholds
from detkit.utils import comm

__all__ = ["FINE_IOU_THRESHOLDS", "OBJECT_SIZE_RANGES", "ProposalEvaluator", "top_n_max_iou"]

logger = logging.getLogger(__name__)

# IoU 0.500, 0.525, ..., 1.000: the x axis of the recall-vs-IoU curve (paper Figure 4).
FINE_IOU_THRESHOLDS = tuple(float(t) for t in np.round(0.5 + 0.025 * np.arange(21), 3))

# COCO's object sizes by box area in original-image pixels: [low, high), half-open.
OBJECT_SIZE_RANGES: dict[str, tuple[float, float]] = {
    "small": (0.0, 32.0**2),
    "medium": (32.0**2, 96.0**2),
    "large": (96.0**2, float("inf")),
}

# Proposal counts whose recall at IoU 0.5 / 0.7 goes in the summary (paper Figure 4).
_SUMMARY_RECALL_TOPK = (300, 1000)
_CURVE_TOPK = (300, 1000, 2000)
# Upper bound on IoU-matrix elements computed at once (8 MB in float64 per temporary).
_MAX_IOU_ELEMENTS = 1 << 20


def top_n_max_iou(
    gt_boxes: np.ndarray,
    proposal_boxes: np.ndarray,
    topk: Sequence[int],
    legacy_plus_one: bool,
) -> np.ndarray:
    """Best IoU of each ground truth with the first N proposals, for every N of ``topk``.

    Args:
        gt_boxes: ``[G, 4]`` XYXY absolute pixels.
        proposal_boxes: ``[P, 4]`` XYXY absolute pixels, same convention, ranked best first.
        topk: the proposal counts N; an image with fewer than N proposals uses all of them.
        legacy_plus_one: widths ``x2 - x1 + 1`` in IoU (see ``box_iou_numpy``).

    Returns:
        ``[G, len(topk)]`` float64; 0 where there is no proposal.
    """
    gt = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    proposals = np.asarray(proposal_boxes, dtype=np.float64).reshape(-1, 4)
    best = np.zeros((len(gt), len(topk)), dtype=np.float64)
    if len(gt) == 0 or len(proposals) == 0:
        return best
    # Column N - 1 of the running maximum over proposals is the best IoU among the first N.
    columns = np.minimum(np.asarray(topk, dtype=np.int64), len(proposals)) - 1
    chunk = max(1, _MAX_IOU_ELEMENTS // len(proposals))
    for start in range(0, len(gt), chunk):  # chunks of objects bound the memory, not a box loop
        iou = box_iou_numpy(gt[start : start + chunk], proposals, legacy_plus_one)
        best[start : start + chunk] = np.maximum.accumulate(iou, axis=1)[:, columns]
    return best


class ProposalEvaluator(DatasetEvaluator):
    """Recall of the top N proposals against IoU, and average recall AR@N (fractions in
    [0, 1]).

    Rules (also in ``describe_rules()``):

    - each image's proposals are ranked by decreasing ``objectness_logits`` (stable: ties keep
      the model's order); the top N are those of the first N ranks (all if fewer);
    - an object is recalled at IoU ``t`` when its best IoU with those N proposals is ``>= t``,
      with no one-to-one assignment (Hosang et al., paper Figure 4; detectron2/COCO match
      greedily one-to-one, which gives slightly lower values);
    - Recall@(N, t) = recalled objects / counted objects over the whole dataset; AR@N is its
      mean over ``iou_thresholds``; recall at IoU 0.5 and 0.7 is computed exactly, whatever
      ``iou_thresholds`` holds;
    - difficult (VOC) and crowd (COCO) objects are not counted; an image the model was not run
      on counts as an image without proposals (warning with the count); an image without
      counted objects contributes nothing;
    - object sizes by COCO's areas of the ground-truth box in original-image pixels: small
      ``< 32^2``, medium ``32^2 .. < 96^2``, large ``>= 96^2``; a size without objects has NaN.

    Box conventions as in ``PascalVOCDetectionEvaluator``: ground truths are continuous XYXY
    boxes; with ``legacy_plus_one`` the model's proposals are pixel-index boxes, so ground
    truths become ``x2 - 1``, ``y2 - 1`` and IoU uses ``+1`` widths (areas are unchanged).

    ``evaluate()`` returns ``{"proposals": metrics}``, fractions in [0, 1] except the counts
    (``describe()`` names the evaluator "proposals"):

    - shown by ``print_results`` (names without "-"): ``"AR@N"`` for every N; ``"R@N@0.5"`` and
      ``"R@N@0.7"`` for N = 300 and 1000 (those in ``topk``; the largest N if neither is);
      ``"num_objects"`` (counted objects); ``"mean_proposals_per_image"`` (the model's output
      count, over the images it was run on);
    - hidden from the summary line: ``"AR@N-small"``, ``"AR@N-medium"``, ``"AR@N-large"``.

    Everything else (recall at every N, threshold and size; the recall-vs-IoU curve at IoU
    0.5:0.025:1.0) is in the log table and in ``proposal_metrics.json``.

    Args:
        dataset_dicts: the dataset (``image_id``, ``annotations`` with ``bbox`` XYXY continuous
            absolute pixels, optional ``difficult`` and ``iscrowd``).
        topk: proposal counts N (``TEST.PROPOSAL_TOPK``).
        iou_thresholds: thresholds averaged by AR (COCO's 0.50:0.05:0.95).
        legacy_plus_one: the ``+1`` width convention (``MODEL.LEGACY_PLUS_ONE``), see above.
        output_dir: where ``proposal_metrics.json``, ``recall_vs_iou.png`` and
            ``recall_vs_proposals.png`` are written (None: nothing written).
        dataset_name: name used in messages, files and picture titles.
    """

    name = "proposals"

    def __init__(
        self,
        *,
        dataset_dicts: list[dict],
        topk: Sequence[int] = (50, 100, 300, 1000, 2000),
        iou_thresholds: Sequence[float] = COCO_IOU_THRESHOLDS,
        legacy_plus_one: bool = False,
        output_dir: str | None = None,
        dataset_name: str = "dataset",
    ):
        self.topk = tuple(sorted({int(n) for n in topk}))
        if not self.topk or self.topk[0] < 1:
            raise ValueError(
                f"topk must hold positive proposal counts, e.g. [300, 1000]; got {list(topk)}."
            )
        self.iou_thresholds = tuple(float(t) for t in iou_thresholds)
        if not self.iou_thresholds or not all(0 < t <= 1 for t in self.iou_thresholds):
            raise ValueError(
                f"iou_thresholds must be non-empty values in (0, 1]; got {self.iou_thresholds}."
            )
        self.legacy_plus_one = bool(legacy_plus_one)
        self.output_dir = output_dir
        self.dataset_name = dataset_name
        self._load_ground_truth(dataset_dicts)
        self._best_iou: dict = {}
        self._num_proposals: dict = {}
        self._warned_convention = False

    @classmethod
    def from_config(
        cls, cfg: CfgNode, dataset_name: str, output_dir: str | None = None
    ) -> dict[str, Any]:
        """Constructor arguments for the registered dataset ``dataset_name``: reads
        ``TEST.PROPOSAL_TOPK`` and ``MODEL.LEGACY_PLUS_ONE`` of ``cfg``, the dicts come from
        ``DatasetCatalog``; ``output_dir``: where ``proposal_metrics.json`` and the recall
        plots go (None: nothing written)."""
        from detkit.data import DatasetCatalog  # the data package is optional

        return {
            "dataset_dicts": DatasetCatalog.get(dataset_name),
            "topk": list(cfg.TEST.PROPOSAL_TOPK),
            "legacy_plus_one": cfg.MODEL.LEGACY_PLUS_ONE,
            "output_dir": output_dir,
            "dataset_name": dataset_name,
        }

    def _load_ground_truth(self, dataset_dicts: list[dict]) -> None:
        # Counted objects of all images in one array; image i owns rows offsets[i]:offsets[i+1].
        self._image_index: dict = {}
        boxes, offsets = [], [0]
        for record in dataset_dicts:
            image_id = record["image_id"]
            if image_id in self._image_index:
                raise ValueError(
                    f"Dataset '{self.dataset_name}' has image_id {image_id!r} twice "
                    f"({record.get('file_name', '?')}); image ids must be unique."
                )
            self._image_index[image_id] = len(self._image_index)
            counted = [
                ann["bbox"]
                for ann in record.get("annotations", [])
                if not (ann.get("difficult", False) or ann.get("iscrowd", 0))
            ]
            boxes.extend(counted)
            offsets.append(offsets[-1] + len(counted))
        self._gt_offsets = np.asarray(offsets, dtype=np.int64)
        gt = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        areas = np.clip(gt[:, 2] - gt[:, 0], 0, None) * np.clip(gt[:, 3] - gt[:, 1], 0, None)
        self._gt_size = {
            name: (areas >= low) & (areas < high)
            for name, (low, high) in OBJECT_SIZE_RANGES.items()
        }
        if self.legacy_plus_one:
            gt[:, 2:] -= 1.0  # continuous -> pixel-index boxes, as the model's
        self._gt_boxes = gt

    def reset(self) -> None:
        self._best_iou = {}
        self._num_proposals = {}

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        for inp, out in zip(inputs, outputs):
            image_id = inp.get("image_id")
            if "proposals" not in out:
                raise KeyError(
                    f"ProposalEvaluator needs outputs with 'proposals' (image {image_id!r}); got "
                    f"keys {sorted(out)}. This evaluator is for proposal models "
                    "(MODEL.META_ARCHITECTURE: ProposalNetwork); evaluate a detector's "
                    "'instances' with PascalVOCDetectionEvaluator or COCOEvaluator."
                )
            if image_id not in self._image_index:
                raise KeyError(
                    f"Proposals for image_id {image_id!r}, which is not in dataset "
                    f"'{self.dataset_name}'; evaluate with the same dataset the loader read."
                )
            proposals = out["proposals"]
            for field in ("proposal_boxes", "objectness_logits"):
                if not proposals.has(field):
                    raise KeyError(
                        f"The proposals of image {image_id!r} have no '{field}' (fields: "
                        f"{sorted(proposals.get_fields())}); ProposalEvaluator needs "
                        "'proposal_boxes' and 'objectness_logits'."
                    )
            self._check_convention(proposals.proposal_boxes)
            boxes = proposals.proposal_boxes.tensor.detach().cpu().numpy().reshape(-1, 4)
            logits = proposals.objectness_logits.detach().cpu().numpy().reshape(-1)
            # Rank by objectness ourselves (stable: ties keep the model's order).
            order = np.argsort(-logits.astype(np.float64), kind="stable")[: self.topk[-1]]
            index = self._image_index[image_id]
            gt = self._gt_boxes[self._gt_offsets[index] : self._gt_offsets[index + 1]]
            self._best_iou[image_id] = top_n_max_iou(
                gt, boxes[order], self.topk, self.legacy_plus_one
            )
            self._num_proposals[image_id] = len(logits)

    def _check_convention(self, boxes) -> None:
        flag = getattr(boxes, "legacy_plus_one", self.legacy_plus_one)
        if flag != self.legacy_plus_one and not self._warned_convention:
            self._warned_convention = True
            logger.warning(
                "Proposal boxes have legacy_plus_one=%s but ProposalEvaluator was built with "
                "legacy_plus_one=%s (MODEL.LEGACY_PLUS_ONE); IoUs follow the evaluator's "
                "convention and may be off by one pixel.",
                flag,
                self.legacy_plus_one,
            )

    def describe_rules(self) -> str:
        """The rules this evaluation follows, in words."""
        widths = "x2 - x1 + 1 (legacy_plus_one)" if self.legacy_plus_one else "x2 - x1"
        thresholds = describe_iou_thresholds(self.iou_thresholds)
        return (
            "top N proposals by objectness; an object is recalled at IoU t when its best IoU "
            f"with them is >= t (no one-to-one assignment; IoU widths {widths}); AR@N: mean "
            f"recall over IoU {thresholds}; difficult and crowd objects not counted; images "
            "not run on have no proposals; sizes by gt box area: small < 32^2, medium < 96^2, "
            "large >= 96^2."
        )

    def evaluate(self) -> dict[str, dict[str, float]]:
        best_per_image = comm.gather_dict(self._best_iou)
        num_proposals = comm.gather_dict(self._num_proposals)
        if best_per_image is None or num_proposals is None:
            return {}
        num_missing = len(self._image_index) - len(best_per_image)
        if num_missing:
            logger.warning(
                "%d of %d images of %s have no proposals (not run); their objects count as missed.",
                num_missing,
                len(self._image_index),
                self.dataset_name,
            )
        # [O, K] best IoU of every counted object with its image's top N; 0 if not run on.
        best = np.zeros((len(self._gt_boxes), len(self.topk)), dtype=np.float64)
        for image_id, image_best in best_per_image.items():
            start = self._gt_offsets[self._image_index[image_id]]
            best[start : start + len(image_best)] = image_best
        if len(best) == 0:
            logger.warning(
                "%s has no counted ground-truth object: every recall is NaN.", self.dataset_name
            )
        report = self._report(best, num_proposals)
        metrics = self._metrics(report)
        self._log(report)
        if self.output_dir:
            self._write(report, metrics)
        return {"proposals": metrics}

    def _report(self, best: np.ndarray, num_proposals: dict) -> dict:
        """Every number of the evaluation (recalls as fractions in [0, 1]), keyed for JSON."""
        masks = {"all": np.ones(len(best), dtype=bool), **self._gt_size}

        def recall(mask: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
            # [K, T]: recalled fraction of the objects in ``mask``; NaN when there is none.
            hits = best[mask][:, :, None] >= np.asarray(thresholds)[None, None, :]
            if not mask.any():
                return np.full(hits.shape[1:], np.nan)
            return hits.mean(axis=0)

        def per_n(values: np.ndarray) -> dict:
            # [K, ...] -> {"N": value, or list of values at the thresholds}
            return {str(n): row.tolist() for n, row in zip(self.topk, values)}

        at_iou = {size: recall(mask, self.iou_thresholds) for size, mask in masks.items()}
        at_05_07 = {size: recall(mask, (0.5, 0.7)) for size, mask in masks.items()}
        counts = list(num_proposals.values())
        return {
            "dataset": self.dataset_name,
            "rules": self.describe_rules(),
            "legacy_plus_one": self.legacy_plus_one,
            "topk": list(self.topk),
            "iou_thresholds": list(self.iou_thresholds),
            "unit": "fraction",
            "num_images": len(self._image_index),
            "num_images_with_proposals": len(num_proposals),
            "mean_proposals_per_image": float(np.mean(counts)) if counts else float("nan"),
            "num_objects": {size: int(mask.sum()) for size, mask in masks.items()},
            "average_recall": {size: per_n(v.mean(axis=1)) for size, v in at_iou.items()},
            "recall": {size: per_n(v) for size, v in at_iou.items()},
            "recall_at_0.5": {size: per_n(v[:, 0]) for size, v in at_05_07.items()},
            "recall_at_0.7": {size: per_n(v[:, 1]) for size, v in at_05_07.items()},
            "fine_iou_thresholds": list(FINE_IOU_THRESHOLDS),
            "recall_fine": per_n(recall(masks["all"], FINE_IOU_THRESHOLDS)),
        }

    def _metrics(self, report: dict) -> dict[str, float]:
        ar = report["average_recall"]
        metrics: dict[str, float] = {f"AR@{n}": ar["all"][str(n)] for n in self.topk}
        for n in [n for n in _SUMMARY_RECALL_TOPK if n in self.topk] or self.topk[-1:]:
            metrics[f"R@{n}@0.5"] = report["recall_at_0.5"]["all"][str(n)]
            metrics[f"R@{n}@0.7"] = report["recall_at_0.7"]["all"][str(n)]
        metrics["num_objects"] = report["num_objects"]["all"]
        metrics["mean_proposals_per_image"] = report["mean_proposals_per_image"]
        for n in self.topk:
            for size in OBJECT_SIZE_RANGES:
                metrics[f"AR@{n}-{size}"] = ar[size][str(n)]
        return metrics

    def _log(self, report: dict) -> None:
        logger.info("Proposal evaluation of %s: %s", self.dataset_name, report["rules"])
        rows = []
        for size in ("all", *OBJECT_SIZE_RANGES):
            label = f"{size} ({report['num_objects'][size]})"
            for n in self.topk:
                key = str(n)
                rows.append(
                    [
                        label,
                        n,
                        report["recall_at_0.5"][size][key],
                        report["recall_at_0.7"][size][key],
                        report["average_recall"][size][key],
                    ]
                )
        table = format_table(["objects (count)", "N", "R@0.5", "R@0.7", "AR"], rows)
        logger.info(
            "Proposal recall on %s (fractions in [0, 1]), %.1f proposals per image on average; "
            "nan: no object of that size.\n%s",
            self.dataset_name,
            report["mean_proposals_per_image"],
            table,
        )

    def _write(self, report: dict, metrics: dict[str, float]) -> None:
        os.makedirs(self.output_dir, exist_ok=True)
        with open(os.path.join(self.output_dir, "proposal_metrics.json"), "w") as f:
            json.dump(json_safe({**report, "proposals": metrics}), f, indent=2)
        self._plot(report)
        logger.info(
            "Wrote proposal_metrics.json, recall_vs_iou.png and recall_vs_proposals.png to %s",
            self.output_dir,
        )

    def _plot(self, report: dict) -> None:
        curves = [n for n in _CURVE_TOPK if n in self.topk] or list(self.topk)
        plot_recall_vs_iou(
            report,
            curves,
            os.path.join(self.output_dir, "recall_vs_iou.png"),
            f"Recall vs IoU: {self.dataset_name}",
        )
        plot_recall_vs_proposals(
            report,
            os.path.join(self.output_dir, "recall_vs_proposals.png"),
            f"Recall vs proposals: {self.dataset_name}",
        )
