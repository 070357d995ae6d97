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

from __future__ import annotations

import argparse
import datetime
import difflib
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import yaml

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

#: detkit's ``tools/train_net.py``, the script a variant runs unless it names a ``tool``.
DEFAULT_TOOL = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    "tools", "train_net.py",
)
MISSING = "—"  # a value a run did not report, or a run that did not finish
LOG_NAME = "sweep.log"
PLACEHOLDERS = ("sweep_dir", "run_dir", "seed")
_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_REFERENCE = re.compile(r"\{sweep_dir\}/([A-Za-z0-9_.-]+)")
_TOP_FIELDS = ("name", "config_file", "output_dir", "opts", "seeds", "columns", "plot",
               "reference_label", "variants")
_VARIANT_FIELDS = ("name", "group", "description", "reference", "config_file", "opts",
                   "eval_only", "tool", "before")
_DEFAULT_COLUMNS = (("mAP@0.5", "mAP@0.5", ".3f"),
                    ("training_time_s", "training time (s)", ".0f"))


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
            "name": self.variant.name, "group": self.variant.group, "seed": self.seed,
            "run_dir": self.run_dir, "status": self.status, "reused": self.reused,
            "resumed": self.resumed, "command": self.command,
            "command_line": shlex.join(self.command) if self.command else None,
            "duration_s": self.duration_s, "summary": self.summary, "error": self.error,
            "log_tail": self.log_tail,
        }


# ---------------------------------------------------------------------------- loading


class _Problems:
    """Collects every problem of a sweep file, so that one error lists them all."""

    def __init__(self, source: str):
        self.source = source
        self.messages: list[str] = []

    def add(self, variant: str | None, field_name: str, message: str) -> None:
        where = f"variant '{variant}', " if variant else ""
        self.messages.append(f"{self.source}: {where}field '{field_name}': {message}")


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def _unknown_fields(p: _Problems, data: dict, known: Sequence[str], variant: str | None) -> None:
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            p.add(variant, str(key), f"unknown field; {hint}known fields: {', '.join(known)}")


def _text(p: _Problems, data: dict, name: str, variant: str | None, *, required: bool = False,
          numbers_ok: bool = False) -> str | None:
    if name not in data or data[name] is None:
        if required:
            p.add(variant, name, f"missing; add `{name}: ...` (docs/sweeps.md)")
        return None
    value = data[name]
    if numbers_ok and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str) or not value.strip():
        p.add(variant, name, f"expected a non-empty text, got {_describe(value)}")
        return None
    return value


def _check_placeholders(p: _Problems, text: str, variant: str | None, where: str,
                        has_seeds: bool) -> None:
    for name in _PLACEHOLDER.findall(text):
        if name not in PLACEHOLDERS:
            known = ", ".join("{" + k + "}" for k in PLACEHOLDERS)
            p.add(variant, where, f"unknown placeholder {{{name}}} in {text!r}; known: {known}")
        elif name == "seed" and not has_seeds:
            p.add(variant, where, f"{text!r} uses {{seed}} but the sweep has no `seeds`; "
                  "add e.g. `seeds: [0]` at the top level")


def _opts(p: _Problems, value: Any, variant: str | None, has_seeds: bool) -> tuple[str, ...]:
    if value is None:
        return ()
    example = 'e.g. opts: [SOLVER.BASE_LR, "0.02"]'
    if not isinstance(value, list):
        p.add(variant, "opts", f"expected a list of KEY VALUE strings ({example}), "
              f"got {_describe(value)}")
        return ()
    if len(value) % 2:
        p.add(variant, "opts", f"expected KEY VALUE pairs ({example}), got {len(value)} items: "
              "a key or a value is missing")
        return ()
    result = []
    for i, item in enumerate(value):
        if isinstance(item, (int, float, bool)):
            item = str(item)
        if not isinstance(item, str):
            p.add(variant, f"opts[{i}]", f"expected a text, got {_describe(item)}; quote lists "
                  "as one string, e.g. \"[8, 16, 16, 32]\"")
            continue
        if i % 2 == 0 and item in ("OUTPUT_DIR",) + (("SEED",) if has_seeds else ()):
            p.add(variant, f"opts[{i}]", f"{item} is set by the sweep (OUTPUT_DIR "
                  "<output_dir>/<variant>, SEED from `seeds`); remove it")
        elif i % 2 == 0 and (not item or item.startswith("-")):
            p.add(variant, f"opts[{i}]", f"expected a config key such as SOLVER.BASE_LR, got "
                  f"{item!r} (flags like --eval-only have fields of their own)")
        _check_placeholders(p, item, variant, f"opts[{i}]", has_seeds)
        result.append(item)
    return tuple(result)


def _column(p: _Problems, value: Any, where: str) -> Column | None:
    if not isinstance(value, dict):
        p.add(None, where, f'expected a mapping like {{key: "mAP@0.5", format: ".3f"}}, got '
              f"{_describe(value)}")
        return None
    _unknown_fields(p, value, ("key", "label", "format"), None)
    key = _text(p, value, "key", None, required=True)
    label = _text(p, value, "label", None) or key
    fmt = _text(p, value, "format", None)
    if fmt is not None:
        ok = False
        for sample in (1.5, 1):
            try:
                format(sample, fmt)
                ok = True
            except ValueError:
                pass
        if not ok:
            p.add(None, f"{where}.format", f"{fmt!r} is not a Python number format; use e.g. "
                  "'.3f' (3 decimals), '.0f', '.1%' or 'd'")
    return Column(key, label, fmt) if key else None


def _seeds(p: _Problems, value: Any) -> tuple[int, ...] | None:
    if value is None:
        return None
    if (not isinstance(value, list) or not value
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in value)):
        p.add(None, "seeds", f"expected a non-empty list of integers like [0, 1, 2], got "
              f"{_describe(value)}")
        return None
    if len(set(value)) != len(value):
        p.add(None, "seeds", f"seeds repeat in {value}; list each once")
    return tuple(value)


def _path(p: _Problems, base_dir: str, value: str, variant: str | None, name: str) -> str:
    path = os.path.normpath(os.path.join(base_dir, os.path.expanduser(value)))
    if not os.path.isfile(path):
        p.add(variant, name, f"file not found: {path} (relative paths are relative to "
              f"{base_dir}, where the sweep is started from)")
    return path


def _before(p: _Problems, value: Any, variant: str, has_seeds: bool) -> tuple[BeforeCommand, ...]:
    if value is None:
        return ()
    example = 'e.g. before: [{run: [python, tools/x.py], creates: "{sweep_dir}/x.npz"}]'
    if not isinstance(value, list):
        p.add(variant, "before", f"expected a list of commands ({example}), got "
              f"{_describe(value)}")
        return ()
    commands = []
    for i, item in enumerate(value):
        where = f"before[{i}]"
        if not isinstance(item, dict):
            p.add(variant, where, f"expected a mapping ({example}), got {_describe(item)}")
            continue
        _unknown_fields(p, item, ("run", "creates"), variant)
        argv = item.get("run")
        if not isinstance(argv, list) or not argv or not all(
                isinstance(a, (str, int, float)) and not isinstance(a, bool) for a in argv):
            p.add(variant, f"{where}.run", f"expected a non-empty list of argument strings "
                  f"({example}), got {_describe(argv)}")
            continue
        argv = [str(a) for a in argv]
        creates = _text(p, item, "creates", variant)
        for text in argv + ([creates] if creates else []):
            _check_placeholders(p, text, variant, where, has_seeds)
        commands.append(BeforeCommand(tuple(argv), creates))
    return tuple(commands)


def _referenced_folders(text: str, seed: int | None) -> list[str]:
    """Folder names ``F`` of the ``{sweep_dir}/F`` in ``text``, with ``{seed}`` filled in
    first (``{sweep_dir}/joint_seed{seed}/model_final.pth`` names ``joint_seed0``)."""
    return _REFERENCE.findall(text if seed is None else text.replace("{seed}", str(seed)))


def _check_references(p: _Problems, sweep: Sweep) -> None:
    """A variant may use another's outputs (``{sweep_dir}/<its folder>/...``) only when that
    variant comes earlier in the file, since variants run in file order."""
    owner = {sweep.run_folder(v.name, s): i for i, v in enumerate(sweep.variants)
             for s in (sweep.seeds or (None,))}
    for i, variant in enumerate(sweep.variants):
        texts = [("opts", o) for o in variant.opts] + [
            (f"before[{k}]", a) for k, b in enumerate(variant.before)
            for a in (*b.run, b.creates or "")]
        for where, text in texts:
            later = {sweep.variants[j].name for s in (sweep.seeds or (None,))
                     for f in _referenced_folders(text, s) if (j := owner.get(f, -1)) > i}
            for name in sorted(later):
                p.add(variant.name, where, f"{text!r} uses the outputs of variant '{name}', "
                      "which comes later in the file; variants run in file order, so move "
                      f"'{name}' before '{variant.name}'")


def parse_sweep(data: Any, source: str, base_dir: str | None = None) -> Sweep:
    """Validate the loaded YAML of a sweep file.

    Args:
        data: what ``yaml.safe_load`` returned for the file.
        source: the file's name, used in error messages.
        base_dir: directory relative paths are resolved against (default: the current one).

    Returns:
        The sweep, with absolute paths.

    Raises:
        SweepError: listing every problem, each naming the file, the variant and the field.
    """
    base_dir = os.path.abspath(base_dir or os.getcwd())
    if not isinstance(data, dict):
        raise SweepError(f"{source}: expected a YAML mapping with at least `name`, `output_dir` "
                         f"and `variants` (docs/sweeps.md), got {_describe(data)}")
    p = _Problems(source)
    _unknown_fields(p, data, _TOP_FIELDS, None)
    name = _text(p, data, "name", None, required=True) or "sweep"
    output_dir = _text(p, data, "output_dir", None, required=True) or "."
    seeds = _seeds(p, data.get("seeds"))
    has_seeds = seeds is not None
    common = _opts(p, data.get("opts"), None, has_seeds)
    default_config = _text(p, data, "config_file", None)
    if default_config is not None:
        default_config = _path(p, base_dir, default_config, None, "config_file")
    if "columns" in data:
        raw = data["columns"]
        if not isinstance(raw, list) or not raw:
            p.add(None, "columns", f"expected a non-empty list of {{key, label, format}}, got "
                  f"{_describe(raw)}")
            raw = []
        columns = [_column(p, c, f"columns[{i}]") for i, c in enumerate(raw)]
    else:
        columns = [Column(*c) for c in _DEFAULT_COLUMNS]
    plot = _column(p, data["plot"], "plot") if data.get("plot") is not None else None
    reference_label = _text(p, data, "reference_label", None) or "reference"

    raw_variants = data.get("variants")
    if not isinstance(raw_variants, list) or not raw_variants:
        p.add(None, "variants", "expected a non-empty list of variants, each with at least a "
              f"`name` (docs/sweeps.md), got {_describe(raw_variants)}")
        raw_variants = []
    variants, seen = [], set()
    for i, raw in enumerate(raw_variants):
        if not isinstance(raw, dict):
            p.add(f"#{i + 1}", "variants", f"expected a mapping with a `name`, got "
                  f"{_describe(raw)}")
            continue
        vname = raw.get("name") if isinstance(raw.get("name"), str) else None
        who = vname or f"#{i + 1}"
        _unknown_fields(p, raw, _VARIANT_FIELDS, who)
        _text(p, raw, "name", who, required=True)
        if vname is not None and (not _NAME.fullmatch(vname) or vname in (".", "..")):
            p.add(who, "name", "use only letters, digits and _ . - (it names a folder)")
        elif vname is not None and vname in seen:
            p.add(who, "name", "used by an earlier variant; names must be unique")
        seen.add(vname)
        config_file = _text(p, raw, "config_file", who)
        if config_file is not None:
            config_file = _path(p, base_dir, config_file, who, "config_file")
        elif default_config is None:
            p.add(who, "config_file", "missing, and the sweep has no top-level `config_file`; "
                  "add one of them")
        tool = _text(p, raw, "tool", who)
        tool = _path(p, base_dir, tool, who, "tool") if tool else DEFAULT_TOOL
        if tool == DEFAULT_TOOL and not os.path.isfile(tool):
            p.add(who, "tool", f"detkit's {tool} is not there (detkit installed without its "
                  "tools/?); set `tool:` to the training script")
        eval_only = raw.get("eval_only", False)
        if not isinstance(eval_only, bool):
            p.add(who, "eval_only", f"expected true or false, got {_describe(eval_only)}")
        variants.append(Variant(
            name=who, config_file=config_file or default_config or "",
            opts=common + _opts(p, raw.get("opts"), who, has_seeds),
            group=_text(p, raw, "group", who, numbers_ok=True),
            description=_text(p, raw, "description", who, numbers_ok=True),
            reference=_text(p, raw, "reference", who, numbers_ok=True),
            eval_only=eval_only is True, tool=tool,
            before=_before(p, raw.get("before"), who, has_seeds),
        ))
    sweep = Sweep(
        name=name, source=source, base_dir=base_dir,
        output_dir=os.path.normpath(os.path.join(base_dir, os.path.expanduser(output_dir))),
        variants=tuple(variants), columns=tuple(c for c in columns if c), seeds=seeds,
        plot=plot, reference_label=reference_label,
    )
    owners: dict[str, set[str]] = {}
    for v in variants:
        for s in seeds or (None,):
            owners.setdefault(sweep.run_folder(v.name, s), set()).add(v.name)
    for folder, names in owners.items():
        if len(names) > 1:  # e.g. variant "a_seed1" and variant "a" with seed 1
            p.add(max(names), "name", f"runs of variants {', '.join(sorted(names))} would "
                  f"share the folder {folder}; rename one")
    _check_references(p, sweep)
    if p.messages:
        raise SweepError(f"{len(p.messages)} problem(s) in the sweep file {source}:\n  "
                         + "\n  ".join(p.messages))
    return sweep


def load_sweep(path: str, base_dir: str | None = None) -> Sweep:
    """Read and validate a sweep file (YAML, ``docs/sweeps.md``).

    Args:
        path: the sweep file.
        base_dir: directory relative paths in it are resolved against (default: current).

    Raises:
        SweepError: unreadable file, invalid YAML, or invalid fields.
    """
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise SweepError(f"{path}: cannot read the sweep file: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise SweepError(f"{path}: not valid YAML: {e}") from e
    return parse_sweep(data, path, base_dir)


# ---------------------------------------------------------------------------- running


def substitute(text: str, sweep_dir: str, run_dir: str, seed: int | None) -> str:
    """``text`` with ``{sweep_dir}``, ``{run_dir}`` and ``{seed}`` replaced (other braces
    are left alone)."""
    values = {"sweep_dir": sweep_dir, "run_dir": run_dir, "seed": "" if seed is None else str(seed)}
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), text)


def plan_runs(sweep: Sweep) -> list[Run]:
    """Every run of the sweep in order: each variant in file order, once per seed."""
    return [Run(v, s, os.path.join(sweep.output_dir, sweep.run_folder(v.name, s)))
            for v in sweep.variants for s in (sweep.seeds or (None,))]


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


def lookup(summary: dict | None, key: str) -> Any:
    """``summary[key]``, or a dot path into nested dicts (``"bbox.AP50"``); a key that itself
    holds dots (``"mAP@0.5"``) is found too. ``None`` when absent."""
    if not isinstance(summary, dict):
        return None
    if key in summary:
        return summary[key]
    for i, char in enumerate(key):
        if char == "." and isinstance(summary.get(key[:i]), dict):
            found = lookup(summary[key[:i]], key[i + 1:])
            if found is not None:
                return found
    return None


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
            }.get(other.status, f"variant '{name}', which finished without writing it: "
                                "check the file name")
            return f"{key} {path} does not exist; it should come from {why}"
    return None


def _call(argv: list[str], cwd: str, log: IO[str]) -> int:
    log.write(f"\n$ {shlex.join(argv)}\n")
    log.flush()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # so that the log follows the run
    return subprocess.run(argv, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=env,
                          stdin=subprocess.DEVNULL).returncode


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
            creates = os.path.join(sweep.base_dir, substitute(
                before.creates, sweep.output_dir, run.run_dir, run.seed))
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
        return (f"{os.path.basename(run.variant.tool)} exited 0 but wrote no summary.json in "
                f"{run.run_dir}; the sweep reads its table from that file, so the tool must "
                "write it (a JSON object of metrics)")
    except ValueError as e:
        return f"unreadable summary.json: {e}"
    return None


def _execute(sweep: Sweep, run: Run, runs: list[Run], forced: bool, label: str,
             echo: Callable[[str], None]) -> None:
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
        log.write(f"\n=== {datetime.datetime.now():%Y-%m-%d %H:%M:%S} sweep {sweep.name}, "
                  f"{run.label} ===\n")
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
            raise SweepError(f"{option} {name}: no such variant in {sweep.source}{hint}; its "
                             f"variants: {', '.join(known)}")


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


def run_sweep(sweep: Sweep, *, only: Sequence[str] = (), force: Sequence[str] = (),
              dry_run: bool = False, stop_on_error: bool = False,
              invocation: str | None = None,
              echo: Callable[[str], None] = lambda s: print(s, flush=True)) -> list[Run]:
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
        raise SweepError(f"--force {', '.join(sorted(set(force) - set(only)))} is not among "
                         "the --only variants; add it to --only too")
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
                echo(f"{label}: would {'clear its folder and ' if forced else ''}"
                     f"{'resume' if resume else 'start'} in {run.run_dir}")
                for before in run.variant.before:
                    argv = [substitute(a, sweep.output_dir, run.run_dir, run.seed)
                            for a in before.run]
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


# ---------------------------------------------------------------------------- results


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


def render_markdown(sweep: Sweep, runs: Sequence[Run], invocation: str,
                    plot_file: str | None = None) -> str:
    """``results.md``: a title, the command, one table per group (variant, description,
    the columns, reference, seed(s), status), the plot, and the failures with their logs."""
    several = sweep.seeds is not None and len(sweep.seeds) > 1
    has_description = any(v.description for v in sweep.variants)
    has_reference = any(v.reference for v in sweep.variants)
    lines = [f"# Sweep: {sweep.name}", "",
             f"Produced by `{invocation}` from `{sweep.source}`; runs in "
             f"`{sweep.output_dir}/<variant>`. Updated {datetime.datetime.now():%Y-%m-%d %H:%M}.",
             "", f"{MISSING} marks a value a run did not report or a run that did not finish."]
    if several:
        lines[-1] += (" With several seeds a value is the mean over the seeds that finished, "
                      "then each seed's value in brackets.")
    header = ["variant", *(["description"] if has_description else []),
              *(c.label for c in sweep.columns),
              *([sweep.reference_label] if has_reference else []),
              "seeds" if several else "seed", "status"]
    align = ["---"] * (1 + has_description) + ["---:"] * len(sweep.columns) + ["---"] * (
        2 + has_reference)
    for title, variants in _groups(sweep, runs):
        lines += ["", f"## {title}", "", _row(header), _row(align)]
        for variant_runs in variants:
            v = variant_runs[0].variant
            seeds = ", ".join(str(r.seed) for r in variant_runs if r.seed is not None)
            lines.append(_row([
                v.name, *([v.description or ""] if has_description else []),
                *(_cell(_values(variant_runs, c.key), c.format) for c in sweep.columns),
                *([v.reference or ""] if has_reference else []),
                seeds or MISSING, _status(variant_runs),
            ]))
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


def plot_results(sweep: Sweep, runs: Sequence[Run], output_png: str
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
            ax.text(max(mean or 0.0, *dots, 0.0) + 0.01 * (high - low), y, " " + text,
                    va="center", fontsize=9)
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
    record = {"name": sweep.name, "sweep_file": sweep.source, "command": invocation,
              "output_dir": sweep.output_dir,
              "updated": datetime.datetime.now().isoformat(timespec="seconds"),
              "runs": [r.to_json() for r in runs]}
    _write_atomic(os.path.join(sweep.output_dir, "results.json"), json.dumps(record, indent=2))
    plot_file = None
    if sweep.plot is not None:
        plot_file = "results.png"
        png = os.path.join(sweep.output_dir, plot_file)
        plot_results(sweep, runs, png + ".tmp.png")
        os.replace(png + ".tmp.png", png)
    _write_atomic(os.path.join(sweep.output_dir, "results.md"),
                  render_markdown(sweep, runs, invocation, plot_file))


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
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="run only this variant (repeatable)")
    parser.add_argument("--force", action="append", default=[], metavar="NAME",
                        help="clear this variant's folder(s) and run it again (repeatable)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the commands, run nothing")
    parser.add_argument("--stop-on-error", action="store_true",
                        help="stop at the first failed run (default: go on with the others)")
    args = parser.parse_args(argv)
    invocation = "python " + shlex.join(
        [sys.argv[0], *sys.argv[1:]] if argv is None else ["tools/sweep.py", *argv])
    try:
        sweep = load_sweep(args.sweep_file)
        runs = run_sweep(sweep, only=args.only, force=args.force, dry_run=args.dry_run,
                         stop_on_error=args.stop_on_error, invocation=invocation)
    except SweepError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nInterrupted. Run the same command again to continue: finished runs are "
              "kept and interrupted ones resume from their last checkpoint.", file=sys.stderr)
        return 130
    if args.dry_run:
        return 0
    counts = {s: sum(r.status == s for r in runs if r.selected) for s in ("ok", "failed")}
    pending = sum(r.status == "pending" for r in runs if r.selected)
    print(f"Sweep {sweep.name}: {counts['ok']} ok, {counts['failed']} failed"
          + (f", {pending} not run" if pending else "")
          + f". Table: {os.path.join(sweep.output_dir, 'results.md')}", flush=True)
    return exit_code(runs)
