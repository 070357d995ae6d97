"""Running a sweep: ``plan_runs`` lists the runs (each variant once per seed), ``run_state``
tells done / resume / fresh from a run's folder, ``build_command`` and ``substitute`` make
the subprocess command, ``run_sweep`` runs what is not done yet in file order (rewriting the
results after each run) and ``exit_code`` sums the outcome up.
"""

from __future__ import annotations

import datetime
import difflib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import IO

from detkit.engine.sweep.results import write_results
from detkit.engine.sweep.spec import (
    _PLACEHOLDER,
    LOG_NAME,
    Run,
    Sweep,
    SweepError,
    _referenced_folders,
)

__all__ = ["build_command", "exit_code", "plan_runs", "run_state", "run_sweep", "substitute"]


def substitute(text: str, sweep_dir: str, run_dir: str, seed: int | None) -> str:
    """``text`` with ``{sweep_dir}``, ``{run_dir}`` and ``{seed}`` replaced (other braces
    are left alone)."""
    values = {"sweep_dir": sweep_dir, "run_dir": run_dir, "seed": "" if seed is None else str(seed)}
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), text)


def plan_runs(sweep: Sweep) -> list[Run]:
    """Every run of the sweep in order: each variant in file order, once per seed."""
    return [
        Run(v, s, os.path.join(sweep.output_dir, sweep.run_folder(v.name, s)))
        for v in sweep.variants
        for s in (sweep.seeds or (None,))
    ]


def run_state(run_dir: str) -> str:
    """``"done"`` (a ``summary.json``), ``"resume"`` (no summary, but a ``last_checkpoint``
    in the folder or in one of its subfolders, where a multi-step schedule such as
    ``SOLVER.SCHEME alternating`` keeps its steps) or ``"fresh"`` (neither)."""
    if os.path.isfile(os.path.join(run_dir, "summary.json")):
        return "done"
    if os.path.isfile(os.path.join(run_dir, "last_checkpoint")):
        return "resume"
    if os.path.isdir(run_dir):
        for entry in os.scandir(run_dir):
            if entry.is_dir() and os.path.isfile(os.path.join(entry.path, "last_checkpoint")):
                return "resume"
    return "fresh"


def build_command(sweep: Sweep, run: Run, resume: bool = False) -> list[str]:
    """``[python, tool, --config-file, cfg, [--eval-only], [--resume], *opts, OUTPUT_DIR,
    run_dir, [SEED, s]]`` with placeholders substituted. ``--resume`` is never given to an
    evaluation-only run (it would load the folder's checkpoint instead of MODEL.WEIGHTS)."""
    v = run.variant
    command = [sys.executable, v.tool, "--config-file", v.config_file]
    command += ["--eval-only"] if v.eval_only else []
    command += ["--resume"] if resume and not v.eval_only else []
    command += [substitute(o, sweep.output_dir, run.run_dir, run.seed) for o in v.opts]
    command += ["OUTPUT_DIR", run.run_dir]
    return command + (["SEED", str(run.seed)] if run.seed is not None else [])


def _read_summary(run_dir: str) -> dict:
    path = os.path.join(run_dir, "summary.json")
    with open(path, encoding="utf-8") as f:
        summary = json.load(f)
    if not isinstance(summary, dict):
        raise ValueError(f"{path} holds {type(summary).__name__}, not a JSON object")
    return summary


def _tail(path: str, start: int = 0, lines: int = 30) -> list[str]:
    """The last ``lines`` non-blank lines of a log, from byte ``start`` (this attempt) on."""
    try:
        with open(path, "rb") as f:
            f.seek(max(start, os.path.getsize(path) - 16384))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    return [line.rstrip() for line in text.splitlines() if line.strip()][-lines:]


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _missing_reference(sweep: Sweep, run: Run, runs: list[Run]) -> str | None:
    """Why the run cannot start: an option naming a file in another variant's folder that
    is not there (that variant failed, or did not run); ``None`` when all are present."""
    owners = {os.path.basename(r.run_dir): r for r in runs}
    opts = run.variant.opts
    for key, value in zip(opts[0::2], opts[1::2]):
        folders = _referenced_folders(value, run.seed)
        other = owners.get(folders[0]) if value.startswith("{sweep_dir}/") else None
        if other is None or other.variant is run.variant:
            continue
        path = substitute(value, sweep.output_dir, run.run_dir, run.seed)
        if not os.path.exists(path):
            name = other.variant.name
            why = {
                "failed": f"variant '{name}', which failed: fix it (see Failures in "
                "results.md), then run this sweep again",
                "pending": f"variant '{name}', which has not run: run it first (do not leave "
                "it out with --only)",
            }.get(
                other.status,
                f"variant '{name}', which finished without writing it: check the file name",
            )
            return f"{key} {path} does not exist; it should come from {why}"
    return None


def _call(argv: list[str], cwd: str, log: IO[str]) -> int:
    log.write(f"\n$ {shlex.join(argv)}\n")
    log.flush()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # so that the log follows the run
    return subprocess.run(
        argv, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL
    ).returncode


def _run_steps(sweep: Sweep, run: Run, runs: list[Run], log: IO[str]) -> str | None:
    """Before-commands, then the tool; the error message, or ``None`` on success."""
    missing = _missing_reference(sweep, run, runs)
    if missing:
        log.write(missing + "\n")
        return missing
    for i, before in enumerate(run.variant.before):
        argv = [substitute(a, sweep.output_dir, run.run_dir, run.seed) for a in before.run]
        argv[0] = sys.executable if argv[0] == "python" else argv[0]
        creates = None
        if before.creates:
            creates = os.path.join(
                sweep.base_dir, substitute(before.creates, sweep.output_dir, run.run_dir, run.seed)
            )
            if os.path.exists(creates):
                log.write(f"\nbefore[{i}] skipped: {creates} exists\n")
                continue
        try:
            code = _call(argv, sweep.base_dir, log)
        except OSError as e:
            return f"before[{i}] `{shlex.join(argv)}` could not start: {e}"
        if code:
            return f"before[{i}] `{shlex.join(argv)}` exited with code {code}"
        if creates and not os.path.exists(creates):
            return f"before[{i}] `{shlex.join(argv)}` succeeded but did not create {creates}"
    code = _call(run.command, sweep.base_dir, log)
    if code:
        return f"{os.path.basename(run.variant.tool)} exited with code {code}"
    try:
        run.summary = _read_summary(run.run_dir)
    except FileNotFoundError:
        return (
            f"{os.path.basename(run.variant.tool)} exited 0 but wrote no summary.json in "
            f"{run.run_dir}; the sweep reads its table from that file, so the tool must "
            "write it (a JSON object of metrics)"
        )
    except ValueError as e:
        return f"unreadable summary.json: {e}"
    return None


def _execute(
    sweep: Sweep, run: Run, runs: list[Run], forced: bool, label: str, echo: Callable[[str], None]
) -> None:
    if forced and os.path.isdir(run.run_dir):
        shutil.rmtree(run.run_dir)
    # Files of a run that died before its first checkpoint stay: nothing but --force deletes.
    resume = run_state(run.run_dir) == "resume" and not run.variant.eval_only
    os.makedirs(run.run_dir, exist_ok=True)
    run.command, run.resumed, run.reused = build_command(sweep, run, resume), resume, False
    run.summary = run.error = None
    log_path = os.path.join(run.run_dir, LOG_NAME)
    echo(f"{label}: started{' with --resume' if resume else ''}, log {log_path}")
    start = time.monotonic()
    log_start = os.path.getsize(log_path) if os.path.isfile(log_path) else 0
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(
            f"\n=== {datetime.datetime.now():%Y-%m-%d %H:%M:%S} sweep {sweep.name}, "
            f"{run.label} ===\n"
        )
        try:
            run.error = _run_steps(sweep, run, runs, log)
        except KeyboardInterrupt:
            run.status, run.error = "pending", "interrupted"
            raise
        finally:
            run.duration_s = round(time.monotonic() - start, 1)
    run.status = "failed" if run.error else "ok"
    if run.error:
        run.log_tail = _tail(log_path, log_start)
        echo(f"{label}: FAILED after {_duration(run.duration_s)}: {run.error}")
        echo("\n".join(f"    | {line}" for line in run.log_tail[-10:]))
    else:
        run.log_tail = []
        echo(f"{label}: ok in {_duration(run.duration_s)}")


def _check_names(sweep: Sweep, names: Iterable[str], option: str) -> None:
    known = [v.name for v in sweep.variants]
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise SweepError(
                f"{option} {name}: no such variant in {sweep.source}{hint}; its "
                f"variants: {', '.join(known)}"
            )


def _adopt_previous(sweep: Sweep, runs: list[Run]) -> None:
    """Runs not executed now keep what the previous ``results.json`` said of them (command,
    duration, and the failure of a run that is still not done)."""
    try:
        with open(os.path.join(sweep.output_dir, "results.json"), encoding="utf-8") as f:
            records = {(r["name"], r.get("seed")): r for r in json.load(f)["runs"]}
    except (OSError, ValueError, KeyError, TypeError):
        return
    for run in runs:
        old = records.get((run.variant.name, run.seed))
        if not isinstance(old, dict):
            continue
        run.command = old.get("command") or run.command
        run.duration_s = old.get("duration_s", run.duration_s)
        if run.status == "pending" and old.get("status") == "failed":
            run.status, run.error = "failed", old.get("error")
            run.log_tail = old.get("log_tail") or []


def run_sweep(
    sweep: Sweep,
    *,
    only: Sequence[str] = (),
    force: Sequence[str] = (),
    dry_run: bool = False,
    stop_on_error: bool = False,
    invocation: str | None = None,
    echo: Callable[[str], None] = lambda s: print(s, flush=True),
) -> list[Run]:
    """Run what is not done yet, in file order, rewriting the results after each run.

    Args:
        sweep: from ``load_sweep``.
        only: variant names to run (default all); the others still appear in the results
            with whatever their folders hold.
        force: variant names to run again from scratch (their folders are cleared).
        dry_run: print the commands, run and write nothing.
        stop_on_error: leave the remaining runs pending after the first failure.
        invocation: the command line shown in ``results.md`` (default: this process's).
        echo: where the one-line progress messages go.

    Returns:
        Every run of the sweep with its status (``exit_code`` turns them into one).

    Raises:
        SweepError: ``only`` or ``force`` names a variant the sweep does not have.
        KeyboardInterrupt: after writing the results (the run under way stays pending).
    """
    _check_names(sweep, only, "--only")
    _check_names(sweep, force, "--force")
    if only and set(force) - set(only):
        raise SweepError(
            f"--force {', '.join(sorted(set(force) - set(only)))} is not among "
            "the --only variants; add it to --only too"
        )
    invocation = invocation or "python " + shlex.join(sys.argv)
    runs = plan_runs(sweep)
    for run in runs:
        run.selected = not only or run.variant.name in only
        if run.variant.name in force or run_state(run.run_dir) != "done":
            continue
        try:
            run.summary, run.status, run.reused = _read_summary(run.run_dir), "ok", True
        except ValueError as e:
            run.status, run.error = "failed", f"unreadable summary.json ({e}); it runs again"
    if not dry_run:
        _adopt_previous(sweep, runs)
        write_results(sweep, runs, invocation)
    stopped = False
    try:
        for index, run in enumerate(runs, 1):
            label = f"[{index}/{len(runs)}] {run.label}"
            forced = run.variant.name in force
            if not run.selected or stopped:
                continue
            if run.reused and not forced:
                echo(f"{label}: done earlier (summary.json in {run.run_dir}), skipped")
                continue
            if dry_run:
                state = "fresh" if forced else run_state(run.run_dir)
                resume = state == "resume" and not run.variant.eval_only
                echo(
                    f"{label}: would {'clear its folder and ' if forced else ''}"
                    f"{'resume' if resume else 'start'} in {run.run_dir}"
                )
                for before in run.variant.before:
                    argv = [
                        substitute(a, sweep.output_dir, run.run_dir, run.seed) for a in before.run
                    ]
                    argv[0] = sys.executable if argv[0] == "python" else argv[0]
                    echo("    before: " + shlex.join(argv))
                echo("    " + shlex.join(build_command(sweep, run, resume)))
                continue
            _execute(sweep, run, runs, forced, label, echo)
            write_results(sweep, runs, invocation)
            if run.status == "failed" and stop_on_error:
                stopped = True
                echo("Stopping after this failure (--stop-on-error); the rest are not run.")
    except KeyboardInterrupt:
        if not dry_run:
            write_results(sweep, runs, invocation)
        raise
    return runs


def exit_code(runs: Sequence[Run]) -> int:
    """0 when every selected run is ok, 1 otherwise (a failure, or a run left pending)."""
    return 0 if all(r.status == "ok" for r in runs if r.selected) else 1
