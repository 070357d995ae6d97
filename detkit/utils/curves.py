"""A picture of training: losses and mAP against training time, from ``metrics.json``."""

from __future__ import annotations

import json
import os

__all__ = ["load_metrics", "plot_training_curves"]

_LOSSES = ("total_loss", "loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg")


def load_metrics(metrics_json: str) -> list[dict]:
    """The JSON lines of a ``metrics.json`` (a later run after ``--resume`` appends; lines
    of an iteration recorded twice keep the later values)."""
    by_iter: dict[int, dict] = {}
    with open(metrics_json, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                record = json.loads(line)
                by_iter.setdefault(record["iteration"], {}).update(record)
    return [by_iter[k] for k in sorted(by_iter)]


def _as_fraction(value: float) -> float:
    """An AP as a fraction in [0, 1]: ``metrics.json`` lines written when the evaluators
    reported percent hold values above 1, which are divided by 100."""
    return value / 100 if value > 1 else value


def plot_training_curves(metrics_json: str, output_png: str) -> str:
    """Plot losses (left) and mAP@0.5 (``bbox/AP50``, a fraction in [0, 1]; right) against
    minutes of training time.

    Returns:
        ``output_png``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = load_metrics(metrics_json)
    has_time = any("train_time" in r for r in records)
    # train_time is only on training lines; an evaluation line takes the time before it.
    clock, xs = 0.0, []
    for r in records:
        clock = r.get("train_time", clock)
        xs.append(clock / 60 if has_time else r["iteration"])
    xlabel = "training time (minutes)" if has_time else "iteration"
    fig, (ax_loss, ax_map) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name in _LOSSES:
        points = [(x, r[name]) for x, r in zip(xs, records) if name in r]
        if points:
            ax_loss.plot(*zip(*points), label=name, linewidth=2 if name == "total_loss" else 1)
    ax_loss.set_xlabel(xlabel)
    ax_loss.set_ylabel("loss")
    ax_loss.set_yscale("log")
    ax_loss.legend()
    ax_loss.grid(True, alpha=0.3)
    ax_loss.set_title("training losses")
    points = [(x, _as_fraction(r["bbox/AP50"])) for x, r in zip(xs, records) if "bbox/AP50" in r]
    if points:
        ax_map.plot(*zip(*points), marker="o")
        last_x, last_y = points[-1]
        ax_map.annotate(
            f"{last_y:.3f}",
            (last_x, last_y),
            textcoords="offset points",
            xytext=(0, 6),
            ha="center",
        )
    ax_map.set_xlabel(xlabel)
    ax_map.set_ylabel("mAP@0.5")
    ax_map.set_ylim(0, 1)
    ax_map.grid(True, alpha=0.3)
    ax_map.set_title("evaluation")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(output_png)), exist_ok=True)
    fig.savefig(output_png, dpi=100)
    plt.close(fig)
    return output_png
