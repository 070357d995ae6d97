"""Plain-text tables for evaluation results: the per-class table and the final summary."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

__all__ = ["format_table", "json_safe", "print_results"]

logger = logging.getLogger(__name__)


def _cell(value) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.2f}"
    return str(value)


def format_table(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    """An aligned text table; floats shown with 2 decimals, NaN as ``nan``."""
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
        results: ``{task: {metric: value}}``, e.g. ``{"bbox": {"AP": 40.1, "AP50": 71.2}}``;
            the ``"timing"`` entry is shown on its own line.
    """
    lines = [f"Evaluation results on {dataset_name}:"]
    for task, metrics in results.items():
        if task == "timing" or not isinstance(metrics, Mapping):
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
