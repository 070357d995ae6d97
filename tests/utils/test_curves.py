"""curves.png: mAP@0.5 from metrics.json drawn as a fraction in [0, 1], as the evaluators
report it (older lines in percent are scaled)."""

from __future__ import annotations

import json

import pytest

from detkit.utils.curves import plot_training_curves


def drawn_map_axis(monkeypatch) -> list[dict]:
    """For each figure saved from now on: its mAP axis' y limits, label and curve values."""
    import matplotlib.figure

    seen: list[dict] = []
    savefig = matplotlib.figure.Figure.savefig

    def recording_savefig(figure, *args, **kwargs):
        ax = figure.axes[1]
        seen.append(
            {
                "ylim": tuple(ax.get_ylim()),
                "ylabel": ax.get_ylabel(),
                "values": [float(v) for v in ax.lines[0].get_ydata()],
            }
        )
        return savefig(figure, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", recording_savefig)
    return seen


def write_metrics(path, ap50_values: list[float]) -> None:
    lines = []
    for k, value in enumerate(ap50_values):
        lines.append({"iteration": 2 * k, "total_loss": 1.0 / (k + 1), "train_time": 10.0 * k})
        lines.append({"iteration": 2 * k + 1, "bbox/AP50": value})
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))


@pytest.mark.parametrize(
    "values, expected",
    [
        ([0.25, 0.5, 1.0], [0.25, 0.5, 1.0]),  # fractions, as metrics.json holds them
        ([25.0, 50.0], [0.25, 0.5]),  # a run written when the evaluators reported percent
    ],
)
def test_map_is_drawn_as_a_fraction(tmp_path, monkeypatch, values, expected):
    seen = drawn_map_axis(monkeypatch)
    metrics = tmp_path / "metrics.json"
    write_metrics(metrics, values)
    out = plot_training_curves(str(metrics), str(tmp_path / "curves.png"))
    assert (tmp_path / "curves.png").is_file() and out.endswith("curves.png")
    assert seen == [{"ylim": (0.0, 1.0), "ylabel": "mAP@0.5", "values": expected}]
