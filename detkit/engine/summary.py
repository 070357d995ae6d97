"""The one-file summary of a run (``OUTPUT_DIR/summary.json``) and its one-line message."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from detkit.utils.io import atomic_write_text

__all__ = ["summarize_results", "summary_message", "write_summary"]

# Evaluator results (percent) -> summary keys (fractions), in the order they are shown.
_DETECTION_KEYS = (("AP50", "mAP@0.5"), ("AP50_area", "mAP@0.5_area"), ("AP", "AP@[.5:.95]"))


def _per_dataset(results: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """``{dataset: {task: metrics}}``: ``DefaultTrainer.test`` returns the task dict itself
    when there is one dataset."""
    if any(k in results for k in ("bbox", "proposals", "timing")):
        return {"": results}
    return {k: v for k, v in results.items() if isinstance(v, Mapping)}


def summarize_results(results: Mapping[str, Any]) -> dict[str, float]:
    """The headline figures of evaluation results, as fractions in [0, 1].

    Detection: ``mAP@0.5`` (the dataset's VOC metric), ``mAP@0.5_area`` (with the 11-point
    metric), ``AP@[.5:.95]``. Proposals: ``AR@N`` and ``R@N@t`` as the evaluator names them.
    With several test datasets the figures of the first come first, and each dataset's are
    also under ``"<dataset>/<name>"``.
    """
    summary: dict[str, float] = {}
    for index, (dataset, tasks) in enumerate(_per_dataset(results).items()):
        figures: dict[str, float] = {}
        bbox = tasks.get("bbox", {})
        for source, name in _DETECTION_KEYS:
            if source in bbox:
                figures[name] = round(float(bbox[source]) / 100, 4)
        for name, value in tasks.get("proposals", {}).items():
            if name.startswith(("AR", "R@")) and "-" not in name:
                figures[name] = round(float(value) / 100, 4)
        if index == 0:
            summary.update(figures)
        if dataset:
            summary.update({f"{dataset}/{k}": v for k, v in figures.items()})
    return summary


def summary_message(summary: Mapping[str, Any], datasets: list[str]) -> str:
    """``"mAP@0.5 on shapes_test: 0.903 (area 0.921, AP 0.601)"`` or the proposal figures."""
    on = ", ".join(datasets)
    if "mAP@0.5" in summary:
        extra = [f"area {summary['mAP@0.5_area']:.3f}"] if "mAP@0.5_area" in summary else []
        if "AP@[.5:.95]" in summary:
            extra.append(f"AP@[.5:.95] {summary['AP@[.5:.95]']:.3f}")
        details = f" ({', '.join(extra)})" if extra else ""
        return f"mAP@0.5 on {on}: {summary['mAP@0.5']:.3f}{details}"
    recall = [f"{k} {v:.3f}" for k, v in summary.items() if k.startswith("AR@")]
    if recall:
        return f"Proposal recall on {on}: {', '.join(recall)}"
    return f"No evaluation figures on {on or 'no dataset'}"


def write_summary(output_dir: str, summary: Mapping[str, Any]) -> str:
    """Write ``output_dir/summary.json`` (atomically); returns its path."""
    path = os.path.join(output_dir, "summary.json")
    os.makedirs(output_dir, exist_ok=True)
    atomic_write_text(path, json.dumps(dict(summary), indent=2))
    return path
