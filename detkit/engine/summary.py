"""The one-file summary of a run (``OUTPUT_DIR/summary.json``) and its one-line message.

Every figure is a fraction in [0, 1], the unit of the evaluators' results (and so of
``metrics.json`` and TensorBoard). The summary names what produced its figures:
``"evaluator"`` ("voc", "coco", "proposals"), ``"metric"`` (the key of the headline figure)
and ``"unit"`` ("fraction"). The evaluator comes from the ``"evaluators"`` entry of
``inference_on_dataset``'s results (``DatasetEvaluator.describe``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any

from detkit.utils.io import atomic_write_text

__all__ = ["summarize_results", "summary_message", "write_summary"]

# Detection results (bbox task) -> summary keys, in the order they are shown.
_DETECTION_KEYS = (
    ("AP50", "mAP@0.5"),
    ("AP50_area", "mAP@0.5_area"),
    ("AP75", "AP@0.75"),
    ("AP", "AP@[.5:.95]"),
)
# Headline summary key of each named detection evaluator.
_DETECTION_HEADLINES = {"voc": "mAP@0.5", "coco": "AP@[.5:.95]"}
# Entries of a dataset's results that are not tasks (see ``inference_on_dataset``).
_NOT_TASKS = ("evaluators", "timing")


def _per_dataset(results: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """``{dataset: {task: metrics}}``: ``DefaultTrainer.test`` returns the task dict itself
    when there is one dataset."""
    if any(k in results for k in ("bbox", "proposals", *_NOT_TASKS)):
        return {"": results}
    return {k: v for k, v in results.items() if isinstance(v, Mapping)}


def _figures(tasks: Mapping[str, Any]) -> dict[str, float]:
    """The summary figures of one dataset's results (fractions, rounded to 4 decimals):
    detection ``mAP@0.5``, ``mAP@0.5_area``, ``AP@0.75``, ``AP@[.5:.95]``; proposals ``AR@N``
    and ``R@N@t`` (per-size entries, whose names contain "-", left out)."""
    figures: dict[str, float] = {}
    bbox = tasks.get("bbox", {})
    for source, name in _DETECTION_KEYS:
        if source in bbox:
            figures[name] = round(float(bbox[source]), 4)
    for name, value in tasks.get("proposals", {}).items():
        if name.startswith(("AR", "R@")) and "-" not in name:
            figures[name] = round(float(value), 4)
    return figures


def _largest_n_recall(figures: Mapping[str, float]) -> str | None:
    """``"AR@N"`` with the largest N among ``figures``; the first ``AR`` key when no N is a
    number; None without any."""
    names = [k for k in figures if k.startswith("AR")]
    counted = [k for k in names if k.startswith("AR@") and k[3:].isdigit()]
    if counted:
        return max(counted, key=lambda k: int(k[3:]))
    return names[0] if names else None


def _identity(tasks: Mapping[str, Any], figures: Mapping[str, float]) -> dict[str, Any]:
    """``{"evaluator", "metric"[, "voc_metric"]}`` of one dataset's results; ``{}`` without
    figures. Detection (the ``bbox`` task) comes before proposals. ``"evaluator"`` is None
    when the task's evaluator has no name (a custom one); an unnamed detection evaluator's
    headline is ``mAP@0.5``, else ``AP@[.5:.95]``."""
    descriptions = tasks.get("evaluators", {})
    if "mAP@0.5" in figures or "AP@[.5:.95]" in figures:
        description = descriptions.get("bbox", {})
        evaluator = description.get("name")
        metric = _DETECTION_HEADLINES.get(evaluator)
        if metric not in figures:
            metric = "mAP@0.5" if "mAP@0.5" in figures else "AP@[.5:.95]"
        identity: dict[str, Any] = {"evaluator": evaluator, "metric": metric}
        if evaluator == "voc" and "ap_metric" in description:
            identity["voc_metric"] = description["ap_metric"]
        return identity
    metric = _largest_n_recall(figures)
    if metric is None:
        return {}
    return {"evaluator": descriptions.get("proposals", {}).get("name"), "metric": metric}


def summarize_results(results: Mapping[str, Any]) -> dict[str, Any]:
    """The headline figures of evaluation results and what they are.

    Args:
        results: ``inference_on_dataset``'s results of one dataset (``{task: metrics,
            "evaluators": ..., "timing": ...}``) or ``{dataset: those}`` for several, as
            ``DefaultTrainer.test`` returns them.

    Returns:
        ``{}`` when there is no figure; otherwise, with every figure a fraction in [0, 1]:

        - ``"evaluator"``: "voc", "coco" or "proposals", named by the evaluator itself (the
          ``"evaluators"`` entry of the results); None for an evaluator without a name;
        - ``"metric"``: the key of the headline figure: ``mAP@0.5`` for VOC (with
          ``"voc_metric"``: "11-point" or "area", the dataset's VOC metric), ``AP@[.5:.95]``
          for COCO, the largest-N ``AR@N`` for proposals;
        - ``"unit"``: "fraction";
        - detection: ``mAP@0.5`` (AP50, also for COCO), ``mAP@0.5_area`` (with the 11-point
          metric), ``AP@0.75``, ``AP@[.5:.95]``; proposals: ``AR@N`` and ``R@N@t`` as the
          evaluator names them.

        With several test datasets, the identity and figures are the first dataset's, and
        each dataset's figures are also under ``"<dataset>/<name>"``.
    """
    summary: dict[str, Any] = {}
    for index, (dataset, tasks) in enumerate(_per_dataset(results).items()):
        figures = _figures(tasks)
        if index == 0:
            identity = _identity(tasks, figures)
            if identity:
                summary.update(identity, unit="fraction")
            summary.update(figures)
        if dataset:
            summary.update({f"{dataset}/{k}": v for k, v in figures.items()})
    return summary


def _figure(summary: Mapping[str, Any], key: str) -> str:
    value = summary[key]
    return "nan" if value is None or math.isnan(value) else f"{value:.3f}"


def _details(summary: Mapping[str, Any], labels: tuple[tuple[str, str], ...]) -> str:
    """``" (label value, ...)"`` of the keys of ``labels`` that ``summary`` has, or ``""``."""
    parts = [f"{label} {_figure(summary, key)}" for key, label in labels if key in summary]
    return f" ({', '.join(parts)})" if parts else ""


def summary_message(summary: Mapping[str, Any], datasets: list[str]) -> str:
    """One line naming the evaluator, its headline metric, the datasets and the figures:

    - ``"VOC mAP@0.5 (11-point) on shapes_test: 0.903 (area 0.971, AP@[.5:.95] 0.793)"``;
    - ``"COCO AP@[.5:.95] on coco_val: 0.401 (AP50 0.620, AP75 0.430)"``;
    - ``"Proposal recall on shapes_test: AR@100 0.512, AR@1000 0.600"``;
    - ``"mAP@0.5 on my_test: 0.750 (...)"`` for an unnamed detection evaluator.
    """
    on = ", ".join(datasets)
    evaluator, metric = summary.get("evaluator"), summary.get("metric")
    if evaluator == "voc" and metric in summary:
        variant = f" ({summary['voc_metric']})" if "voc_metric" in summary else ""
        details = _details(summary, (("mAP@0.5_area", "area"), ("AP@[.5:.95]", "AP@[.5:.95]")))
        return f"VOC {metric}{variant} on {on}: {_figure(summary, metric)}{details}"
    if evaluator == "coco" and metric in summary:
        details = _details(summary, (("mAP@0.5", "AP50"), ("AP@0.75", "AP75")))
        return f"COCO {metric} on {on}: {_figure(summary, metric)}{details}"
    recall = [f"{k} {_figure(summary, k)}" for k in summary if k.startswith("AR@")]
    if evaluator == "proposals" and recall:
        return f"Proposal recall on {on}: {', '.join(recall)}"
    if "mAP@0.5" in summary:
        details = _details(summary, (("mAP@0.5_area", "area"), ("AP@[.5:.95]", "AP@[.5:.95]")))
        return f"mAP@0.5 on {on}: {_figure(summary, 'mAP@0.5')}{details}"
    if recall:
        return f"Proposal recall on {on}: {', '.join(recall)}"
    return f"No evaluation figures on {on or 'no dataset'}"


def write_summary(output_dir: str, summary: Mapping[str, Any]) -> str:
    """Write ``output_dir/summary.json`` (atomically); returns its path."""
    path = os.path.join(output_dir, "summary.json")
    os.makedirs(output_dir, exist_ok=True)
    atomic_write_text(path, json.dumps(dict(summary), indent=2))
    return path
