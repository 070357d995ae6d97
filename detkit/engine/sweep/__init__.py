"""Sweeps: named variants of a config run one after the other, resumably, then tabulated.

A sweep file (YAML, format in ``docs/sweeps.md``) names a base config, overrides common to
every variant, the variants and the ``summary.json`` values to tabulate. Each variant (once
per seed) runs ``python <tool> --config-file ... OUTPUT_DIR <output_dir>/<variant>`` as a
subprocess; finished runs (a ``summary.json``) are reused, interrupted ones (a
``last_checkpoint``) continue with ``--resume``. After each run ``results.json``,
``results.md`` (one table per group) and ``results.png`` are rewritten in ``output_dir``.

Paths in a sweep file are relative to the directory the sweep is started from (the
``base_dir``), which is also the working directory of every subprocess; commands are
built with absolute paths, so they can be pasted anywhere.

    sweep = load_sweep("sweeps/lr.yaml")
    runs = run_sweep(sweep, only=["lr_0.02"])
"""

from detkit.engine.sweep.cli import main
from detkit.engine.sweep.loading import load_sweep, parse_sweep
from detkit.engine.sweep.results import lookup, plot_results, render_markdown, write_results
from detkit.engine.sweep.runner import (
    build_command,
    exit_code,
    plan_runs,
    run_state,
    run_sweep,
    substitute,
)
from detkit.engine.sweep.spec import (
    DEFAULT_TOOL,
    BeforeCommand,
    Column,
    Run,
    Sweep,
    SweepError,
    Variant,
)

__all__ = [
    "DEFAULT_TOOL",
    "BeforeCommand",
    "Column",
    "Run",
    "Sweep",
    "SweepError",
    "Variant",
    "build_command",
    "exit_code",
    "load_sweep",
    "lookup",
    "main",
    "parse_sweep",
    "plan_runs",
    "plot_results",
    "render_markdown",
    "run_state",
    "run_sweep",
    "substitute",
    "write_results",
]
