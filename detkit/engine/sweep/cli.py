"""The command line of ``tools/sweep.py``: ``main`` parses the arguments, loads and runs the
sweep, prints a one-line summary and returns the exit code."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence

from detkit.engine.sweep.loading import load_sweep
from detkit.engine.sweep.runner import exit_code, run_sweep
from detkit.engine.sweep.spec import SweepError
from detkit.utils.cli import add_debug_argument

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """``tools/sweep.py``: parse the command line, run the sweep, return the exit code
    (0 all ok, 1 a run failed or is not done, 2 invalid sweep file or arguments, 130
    interrupted)."""
    parser = argparse.ArgumentParser(
        prog="tools/sweep.py",
        description="Run the named variants of a sweep file one after the other (finished "
        "runs are skipped, interrupted ones resumed) and write results.md, "
        "results.json and results.png in its output_dir.",
        epilog="Sweep file format: docs/sweeps.md",
    )
    parser.add_argument("sweep_file", help="YAML sweep file")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help="run only this variant (repeatable)",
    )
    parser.add_argument(
        "--force",
        action="append",
        default=[],
        metavar="NAME",
        help="clear this variant's folder(s) and run it again (repeatable)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    parser.add_argument(
        "--stop-on-error",
        action="store_true",
        help="stop at the first failed run (default: go on with the others)",
    )
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    invocation = "python " + shlex.join(
        [sys.argv[0], *sys.argv[1:]] if argv is None else ["tools/sweep.py", *argv]
    )
    try:
        sweep = load_sweep(args.sweep_file)
        runs = run_sweep(
            sweep,
            only=args.only,
            force=args.force,
            dry_run=args.dry_run,
            stop_on_error=args.stop_on_error,
            invocation=invocation,
        )
    except SweepError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "\nInterrupted. Run the same command again to continue: finished runs are "
            "kept and interrupted ones resume from their last checkpoint.",
            file=sys.stderr,
        )
        return 130
    if args.dry_run:
        return 0
    counts = {s: sum(r.status == s for r in runs if r.selected) for s in ("ok", "failed")}
    pending = sum(r.status == "pending" for r in runs if r.selected)
    print(
        f"Sweep {sweep.name}: {counts['ok']} ok, {counts['failed']} failed"
        + (f", {pending} not run" if pending else "")
        + f". Table: {os.path.join(sweep.output_dir, 'results.md')}",
        flush=True,
    )
    return exit_code(runs)
