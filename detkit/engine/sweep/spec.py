"""What a sweep is made of: ``Sweep`` (a validated sweep file) with its ``Variant``s,
``Column``s and ``BeforeCommand``s; ``Run``, one variant with one seed and how it went;
``SweepError``; the placeholders a sweep file may use, and the name of each run's log.

Data only: ``detkit.engine.sweep.loading`` builds these from a file, ``runner`` executes
the runs, ``results`` tabulates them.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field

__all__ = [
    "DEFAULT_TOOL",
    "LOG_NAME",
    "PLACEHOLDERS",
    "BeforeCommand",
    "Column",
    "Run",
    "Sweep",
    "SweepError",
    "Variant",
]

#: detkit's ``tools/train_net.py``, the script a variant runs unless it names a ``tool``.
DEFAULT_TOOL = os.path.join(
    os.path.dirname(
        os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ),  # <repo>/detkit/engine/sweep/spec.py -> <repo>
    "tools",
    "train_net.py",
)
LOG_NAME = "sweep.log"
PLACEHOLDERS = ("sweep_dir", "run_dir", "seed")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_REFERENCE = re.compile(r"\{sweep_dir\}/([A-Za-z0-9_.-]+)")


class SweepError(ValueError):
    """An invalid sweep file or command line; the message says where and what to do."""


@dataclass(frozen=True)
class Column:
    """A value read from each run's ``summary.json``.

    Args:
        key: top-level key or dot path into nested dicts (``"mAP@0.5"``, ``"bbox.AP50"``).
        label: table header (or axis label of the plot).
        format: a format spec for numbers (``".3f"``); ``None`` shows ints as they are and
            floats with 4 significant digits.
    """

    key: str
    label: str
    format: str | None = None


@dataclass(frozen=True)
class BeforeCommand:
    """A command run before a variant: ``run`` is its argv (placeholders unsubstituted; a
    leading ``python`` means this interpreter); skipped when the ``creates`` path exists."""

    run: tuple[str, ...]
    creates: str | None = None


@dataclass(frozen=True)
class Variant:
    """One named variant. ``opts`` are the common overrides then the variant's own, as
    written (placeholders unsubstituted); ``config_file`` and ``tool`` are absolute."""

    name: str
    config_file: str
    opts: tuple[str, ...] = ()
    group: str | None = None
    description: str | None = None
    reference: str | None = None
    eval_only: bool = False
    tool: str = DEFAULT_TOOL
    before: tuple[BeforeCommand, ...] = ()


@dataclass(frozen=True)
class Sweep:
    """A validated sweep file. ``output_dir`` is absolute; ``base_dir`` is what relative
    paths were resolved against and the subprocesses' working directory; ``seeds`` is
    ``None`` when each run keeps its config's own ``SEED``."""

    name: str
    source: str
    base_dir: str
    output_dir: str
    variants: tuple[Variant, ...]
    columns: tuple[Column, ...]
    seeds: tuple[int, ...] | None = None
    plot: Column | None = None
    reference_label: str = "reference"

    def run_folder(self, variant: str, seed: int | None) -> str:
        """Folder name of a run: ``<variant>``, or ``<variant>_seed<s>`` with several seeds."""
        several = self.seeds is not None and len(self.seeds) > 1
        return f"{variant}_seed{seed}" if several else variant


@dataclass
class Run:
    """One variant with one seed: where it runs and, once known, how it went.

    ``status`` is ``"ok"`` (a summary was read), ``"failed"`` or ``"pending"`` (not run);
    ``reused`` means the summary came from an earlier invocation.
    """

    variant: Variant
    seed: int | None
    run_dir: str
    selected: bool = True
    status: str = "pending"
    reused: bool = False
    resumed: bool = False
    command: list[str] = field(default_factory=list)
    duration_s: float | None = None
    summary: dict | None = None
    error: str | None = None
    log_tail: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.variant.name if self.seed is None else f"{self.variant.name} (seed {self.seed})"

    def to_json(self) -> dict:
        """The record written to ``results.json``."""
        return {
            "name": self.variant.name,
            "group": self.variant.group,
            "seed": self.seed,
            "run_dir": self.run_dir,
            "status": self.status,
            "reused": self.reused,
            "resumed": self.resumed,
            "command": self.command,
            "command_line": shlex.join(self.command) if self.command else None,
            "duration_s": self.duration_s,
            "summary": self.summary,
            "error": self.error,
            "log_tail": self.log_tail,
        }


def _referenced_folders(text: str, seed: int | None) -> list[str]:
    """Folder names ``F`` of the ``{sweep_dir}/F`` in ``text``, with ``{seed}`` filled in
    first (``{sweep_dir}/joint_seed{seed}/model_final.pth`` names ``joint_seed0``)."""
    return _REFERENCE.findall(text if seed is None else text.replace("{seed}", str(seed)))
