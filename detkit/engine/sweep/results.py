"""The results of a sweep, rewritten in its ``output_dir`` after each run: ``results.json``
(every run's record), ``results.md`` (one table per group, then the failures) and
``results.png`` (a bar plot of one value); ``lookup`` reads a value from a run's
``summary.json``.
"""

from __future__ import annotations

import datetime
import json
import os
import statistics
from collections.abc import Sequence
from typing import Any

from detkit.engine.sweep.spec import LOG_NAME, Run, Sweep

__all__ = ["lookup", "plot_results", "render_markdown", "write_results"]

MISSING = "—"  # a value a run did not report, or a run that did not finish


def lookup(summary: dict | None, key: str) -> Any:
    """``summary[key]``, or a dot path into nested dicts (``"bbox.AP50"``); a key that itself
    holds dots (``"mAP@0.5"``) is found too. ``None`` when absent."""
    if not isinstance(summary, dict):
        return None
    if key in summary:
        return summary[key]
    for i, char in enumerate(key):
        if char == "." and isinstance(summary.get(key[:i]), dict):
            found = lookup(summary[key[:i]], key[i + 1 :])
            if found is not None:
                return found
    return None


def _format(value: Any, fmt: str | None) -> str:
    if value is None:
        return MISSING
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if fmt:
            try:
                return format(value, fmt)
            except (ValueError, TypeError):
                return str(value)
        return str(value) if isinstance(value, int) else f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _values(runs: Sequence[Run], key: str) -> list[Any]:
    return [lookup(r.summary, key) if r.status == "ok" else None for r in runs]


def _mean(values: Sequence[Any]) -> float | None:
    present = [v for v in values if v is not None]
    if not present or not all(_is_number(v) for v in present):
        return None
    return statistics.fmean(present)


def _cell(values: Sequence[Any], fmt: str | None) -> str:
    if len(values) == 1:
        return _format(values[0], fmt)
    mean = _mean(values)
    per_seed = ", ".join(_format(v, fmt) for v in values)
    if mean is None:
        return per_seed if any(v is not None for v in values) else MISSING
    return f"{_format(mean, fmt)} ({per_seed})"


def _status(runs: Sequence[Run]) -> str:
    failed = [r for r in runs if r.status == "failed"]
    done = sum(r.status == "ok" for r in runs)
    if failed:
        seeds = [str(r.seed) for r in failed if r.seed is not None]
        word = "seed" if len(seeds) == 1 else "seeds"
        return "failed" + (f" ({word} {', '.join(seeds)})" if len(runs) > 1 else "")
    if done == len(runs):
        return "ok"
    return "not run" if done == 0 else f"{done}/{len(runs)} ok"


def _groups(sweep: Sweep, runs: Sequence[Run]) -> list[tuple[str, list[list[Run]]]]:
    """(title, runs of each variant) per group, in first-appearance order."""
    grouped = any(v.group for v in sweep.variants)
    result: dict[str, list[list[Run]]] = {}
    for variant in sweep.variants:
        title = (variant.group or "Ungrouped") if grouped else "Results"
        result.setdefault(title, []).append([r for r in runs if r.variant is variant])
    return list(result.items())


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"


def render_markdown(
    sweep: Sweep, runs: Sequence[Run], invocation: str, plot_file: str | None = None
) -> str:
    """``results.md``: a title, the command, one table per group (variant, description,
    the columns, reference, seed(s), status), the plot, and the failures with their logs."""
    several = sweep.seeds is not None and len(sweep.seeds) > 1
    has_description = any(v.description for v in sweep.variants)
    has_reference = any(v.reference for v in sweep.variants)
    lines = [
        f"# Sweep: {sweep.name}",
        "",
        f"Produced by `{invocation}` from `{sweep.source}`; runs in "
        f"`{sweep.output_dir}/<variant>`. Updated {datetime.datetime.now():%Y-%m-%d %H:%M}.",
        "",
        f"{MISSING} marks a value a run did not report or a run that did not finish.",
    ]
    if several:
        lines[-1] += (
            " With several seeds a value is the mean over the seeds that finished, "
            "then each seed's value in brackets."
        )
    header = [
        "variant",
        *(["description"] if has_description else []),
        *(c.label for c in sweep.columns),
        *([sweep.reference_label] if has_reference else []),
        "seeds" if several else "seed",
        "status",
    ]
    align = (
        ["---"] * (1 + has_description)
        + ["---:"] * len(sweep.columns)
        + ["---"] * (2 + has_reference)
    )
    for title, variants in _groups(sweep, runs):
        lines += ["", f"## {title}", "", _row(header), _row(align)]
        for variant_runs in variants:
            v = variant_runs[0].variant
            seeds = ", ".join(str(r.seed) for r in variant_runs if r.seed is not None)
            lines.append(
                _row(
                    [
                        v.name,
                        *([v.description or ""] if has_description else []),
                        *(_cell(_values(variant_runs, c.key), c.format) for c in sweep.columns),
                        *([v.reference or ""] if has_reference else []),
                        seeds or MISSING,
                        _status(variant_runs),
                    ]
                )
            )
    if plot_file and sweep.plot:
        lines += ["", f"![{sweep.plot.label} per variant]({plot_file})"]
    failed = [r for r in runs if r.status == "failed"]
    if failed:
        lines += ["", "## Failures"]
        for run in failed:
            lines += ["", f"**{run.label}**: {run.error} (log: `{run.run_dir}/{LOG_NAME}`)"]
            if run.log_tail:
                lines += ["", "```text", *run.log_tail, "```"]
    return "\n".join(lines) + "\n"


def plot_results(
    sweep: Sweep, runs: Sequence[Run], output_png: str
) -> dict[str, list[tuple[str, float | None]]]:
    """Horizontal bars of ``sweep.plot`` per variant (the mean over seeds, each seed a dot),
    one panel per group, the value written beside each bar; saved with the Agg backend.

    Returns:
        ``{group title: [(variant, plotted value or None)]}``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    assert sweep.plot is not None
    key, label = sweep.plot.key, sweep.plot.label
    fmt = sweep.plot.format or next((c.format for c in sweep.columns if c.key == key), None)
    groups = _groups(sweep, runs)
    plotted: dict[str, list[tuple[str, float | None]]] = {}
    heights = [max(len(variants), 1) for _, variants in groups]
    fig = Figure(figsize=(8, 1.0 + 0.45 * sum(heights) + 0.6 * len(groups)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(groups), 1, squeeze=False, gridspec_kw={"height_ratios": heights})
    numbers = [v for r in runs for v in _values([r], key) if _is_number(v)]
    low, high = min([0.0, *numbers]), max([0.0, *numbers]) or 1.0
    for ax, (title, variants) in zip(axes[:, 0], groups):
        names = [vr[0].variant.name for vr in variants]
        means = [_mean(_values(vr, key)) for vr in variants]
        plotted[title] = list(zip(names, means))
        ys = range(len(names))
        ax.barh(ys, [m or 0.0 for m in means], color="tab:blue", alpha=0.8)
        for y, vr, mean in zip(ys, variants, means):
            dots = [v for v in _values(vr, key) if _is_number(v)]
            if len(vr) > 1 and dots:
                ax.plot(dots, [y] * len(dots), "o", color="black", markersize=3)
            text = _format(mean, fmt) if mean is not None else _status(vr)
            ax.text(
                max(mean or 0.0, *dots, 0.0) + 0.01 * (high - low),
                y,
                " " + text,
                va="center",
                fontsize=9,
            )
        ax.set_yticks(list(ys), names)
        ax.invert_yaxis()  # file order from top to bottom
        ax.set_xlim(low, high + 0.2 * (high - low))
        ax.set_title(title, fontsize=10)
        ax.grid(True, axis="x", alpha=0.3)
    axes[-1, 0].set_xlabel(label)
    fig.suptitle(f"{sweep.name}: {label}")
    fig.tight_layout()
    fig.savefig(output_png, dpi=100)
    return plotted


def _write_atomic(path: str, text: str) -> None:
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def write_results(sweep: Sweep, runs: Sequence[Run], invocation: str) -> None:
    """Rewrite ``results.json``, ``results.png`` (when the sweep has a ``plot``) and
    ``results.md`` in ``sweep.output_dir``."""
    os.makedirs(sweep.output_dir, exist_ok=True)
    record = {
        "name": sweep.name,
        "sweep_file": sweep.source,
        "command": invocation,
        "output_dir": sweep.output_dir,
        "updated": datetime.datetime.now().isoformat(timespec="seconds"),
        "runs": [r.to_json() for r in runs],
    }
    _write_atomic(os.path.join(sweep.output_dir, "results.json"), json.dumps(record, indent=2))
    plot_file = None
    if sweep.plot is not None:
        plot_file = "results.png"
        png = os.path.join(sweep.output_dir, plot_file)
        plot_results(sweep, runs, png + ".tmp.png")
        os.replace(png + ".tmp.png", png)
    _write_atomic(
        os.path.join(sweep.output_dir, "results.md"),
        render_markdown(sweep, runs, invocation, plot_file),
    )
