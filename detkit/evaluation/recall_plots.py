"""Pictures of proposal recall, from the reports ``ProposalEvaluator`` writes
(``proposal_metrics.json``): one method's curves, or several methods side by side as in the
paper's Figure 4 (recall against IoU for 300, 1,000 and 2,000 proposals). Recall is a
fraction in [0, 1] on every y axis."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "load_recall_report",
    "plot_recall_comparison",
    "plot_recall_vs_iou",
    "plot_recall_vs_proposals",
]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _finish(plt, fig, ax, xlabel: str, title: str, path: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel("recall")
    ax.set_ylim(0, 1)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def load_recall_report(path: str) -> dict[str, Any]:
    """A ``proposal_metrics.json`` written by ``ProposalEvaluator``, recalls as fractions in
    [0, 1]: a report without ``"unit": "fraction"`` (written when recalls were in percent)
    has its recall curves divided by 100.

    Raises:
        ValueError: the file is not such a report (naming it and the missing keys).
    """
    with open(path, encoding="utf-8") as f:
        report = json.load(f)
    missing = [k for k in ("fine_iou_thresholds", "recall_fine", "topk") if k not in report]
    if missing:
        raise ValueError(
            f"{path} is not a proposal_metrics.json of ProposalEvaluator: it lacks {missing}."
        )
    if report.get("unit") != "fraction":
        report = _percent_report_to_fractions(report)
    return report


# The recall entries of a report: {N: value or list}, or {size: {N: value or list}}.
_RECALL_KEYS = ("recall_fine", "average_recall", "recall", "recall_at_0.5", "recall_at_0.7")


def _scaled(value: Any, factor: float) -> Any:
    """``value`` (a number, None, or nested lists and dicts of them) times ``factor``."""
    if isinstance(value, Mapping):
        return {k: _scaled(v, factor) for k, v in value.items()}
    if isinstance(value, list):
        return [_scaled(v, factor) for v in value]
    return value * factor if isinstance(value, (int, float)) else value


def _percent_report_to_fractions(report: Mapping[str, Any]) -> dict[str, Any]:
    """An older report's recall curves (percent) as fractions; other entries unchanged."""
    converted = dict(report)
    for key in _RECALL_KEYS:
        if key in converted:
            converted[key] = _scaled(converted[key], 0.01)
    converted["unit"] = "fraction"
    return converted


def plot_recall_vs_iou(
    report: Mapping[str, Any], topk: Sequence[int], path: str, title: str
) -> None:
    """One curve per proposal count N of ``topk`` (those the report has): recall against
    the IoU threshold 0.5 .. 1.0."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for n in topk:
        if str(n) in report["recall_fine"]:
            ax.plot(
                report["fine_iou_thresholds"], report["recall_fine"][str(n)], label=f"{n} proposals"
            )
    ax.set_xlim(0.5, 1.0)
    _finish(plt, fig, ax, "IoU threshold", title, path)


def plot_recall_vs_proposals(report: Mapping[str, Any], path: str, title: str) -> None:
    """Recall at IoU 0.5 and 0.7 and AR against the number of proposals (log scale)."""
    plt = _pyplot()
    topk = [int(n) for n in report["topk"]]
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for label, key in [
        ("recall at IoU 0.5", "recall_at_0.5"),
        ("recall at IoU 0.7", "recall_at_0.7"),
        ("AR", "average_recall"),
    ]:
        values = report[key]["all"]
        ax.plot(topk, [values[str(n)] for n in topk], marker="o", label=label)
    ax.set_xscale("log")
    ax.set_xticks(topk, [str(n) for n in topk])
    ax.minorticks_off()
    _finish(plt, fig, ax, "number of proposals N", title, path)


def plot_recall_comparison(
    reports: Mapping[str, Mapping[str, Any]],
    path: str,
    *,
    topk: Sequence[int] = (300, 1000, 2000),
    title: str = "",
) -> dict[int, list[str]]:
    """The paper's Figure 4: one panel per proposal count N, one curve per method.

    Args:
        reports: ``{method label: proposal_metrics.json report}``.
        path: the PNG to write.
        topk: the panels' proposal counts; a method without N in its report is left out of
            that panel (the legend says how many proposals it had instead).
        title: above the panels.

    Returns:
        ``{N: [labels of the methods drawn in that panel]}``.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(topk), figsize=(4.2 * len(topk), 4.2), squeeze=False)
    drawn: dict[int, list[str]] = {}
    for ax, n in zip(axes[0], topk):
        drawn[n] = []
        for label, report in reports.items():
            curve = report["recall_fine"].get(str(n))
            if curve is not None:
                ax.plot(report["fine_iou_thresholds"], curve, label=label)
                drawn[n].append(label)
        ax.set_xlim(0.5, 1.0)
        ax.set_ylim(0, 1)
        ax.set_xlabel("IoU threshold")
        ax.set_ylabel("recall")
        ax.set_title(f"{n} proposals")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return drawn
