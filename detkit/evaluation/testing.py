"""Plain-text tables for evaluation results: the per-class table and the final summary."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

from detkit.evaluation.evaluator import RESERVED_RESULT_KEYS

__all__ = ["format_table", "json_safe", "print_results"]

logger = logging.getLogger(__name__)


def _cell(value) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.3f}"
    return str(value)


def format_table(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    """An aligned text table; floats shown with 3 decimals (AP and recall are fractions in
    [0, 1]), NaN as ``nan``."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        # First column (names) left-aligned, numbers right-aligned.
        parts = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
        return "| " + " | ".join(parts) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), rule] + [line(row) for row in cells[1:]])


def json_safe(value):
    """``value`` with NaN and infinities replaced by None (strict JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def print_results(dataset_name: str, results: Mapping[str, Mapping[str, float]]) -> str:
    """Log the summary of ``inference_on_dataset``'s results (per-class entries, whose names
    contain "-", are left to the evaluator's own table) and return the text.

    Args:
        dataset_name: shown in the title.
        results: ``{task: {metric: value}}``, e.g. ``{"bbox": {"AP": 0.401, "AP50": 0.712}}``
            (fractions); the ``"timing"`` entry is shown on its own line, the
            ``"evaluators"`` entry names the evaluator in the title.
    """
    lines = [
        f"Evaluation results on {dataset_name}{_evaluator_names(results)} (AP and recall "
        "as fractions in [0, 1]):"
    ]
    for task, metrics in results.items():
        if task in RESERVED_RESULT_KEYS or not isinstance(metrics, Mapping):
            continue
        names = [name for name in metrics if "-" not in name]
        if not names:
            continue
        lines.append(format_table(["task", *names], [[task, *(metrics[n] for n in names)]]))
        # One line to paste into a spreadsheet or an issue.
        values = ",".join(_cell(float(metrics[n])) for n in names)
        lines.append(f"copypaste: {task}: {','.join(names)}")
        lines.append(f"copypaste: {task}: {values}")
    timing = results.get("timing")
    if isinstance(timing, Mapping) and "s_per_img" in timing:
        lines.append(
            f"Inference time: {timing['s_per_img']:.4f} s/img model, "
            f"{timing.get('total_s_per_img', float('nan')):.4f} s/img total "
            f"over {timing.get('num_images', '?')} images."
        )
    text = "\n".join(lines)
    logger.info("%s", text)
    return text


def _evaluator_names(results: Mapping) -> str:
    """``", voc evaluator"``: the names in the results' ``"evaluators"`` entry, or ``""``."""
    descriptions = results.get("evaluators")
    if not isinstance(descriptions, Mapping):
        return ""
    names = [d["name"] for d in descriptions.values() if isinstance(d, Mapping) and "name" in d]
    if not names:
        return ""
    unique = list(dict.fromkeys(names))
    return f", {', '.join(unique)} evaluator{'s' if len(unique) > 1 else ''}"
