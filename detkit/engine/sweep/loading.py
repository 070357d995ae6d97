"""Reading and validating a sweep file (YAML, format in ``docs/sweeps.md``) into a
``Sweep``: ``load_sweep`` reads the file, ``parse_sweep`` checks every field and raises one
``SweepError`` that lists all the problems, each naming the file, the variant and the field.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Sequence
from typing import Any

import yaml

from detkit.engine.sweep.spec import (
    _PLACEHOLDER,
    DEFAULT_TOOL,
    PLACEHOLDERS,
    BeforeCommand,
    Column,
    Sweep,
    SweepError,
    Variant,
    _referenced_folders,
)

__all__ = ["load_sweep", "parse_sweep"]

_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_TOP_FIELDS = (
    "name",
    "config_file",
    "output_dir",
    "opts",
    "seeds",
    "columns",
    "plot",
    "reference_label",
    "variants",
)
_VARIANT_FIELDS = (
    "name",
    "group",
    "description",
    "reference",
    "config_file",
    "opts",
    "eval_only",
    "tool",
    "before",
)
_DEFAULT_COLUMNS = (("mAP@0.5", "mAP@0.5", ".3f"), ("training_time_s", "training time (s)", ".0f"))


class _Problems:
    """Collects every problem of a sweep file, so that one error lists them all."""

    def __init__(self, source: str) -> None:
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


def _text(
    p: _Problems,
    data: dict,
    name: str,
    variant: str | None,
    *,
    required: bool = False,
    numbers_ok: bool = False,
) -> str | None:
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


def _check_placeholders(
    p: _Problems, text: str, variant: str | None, where: str, has_seeds: bool
) -> None:
    for name in _PLACEHOLDER.findall(text):
        if name not in PLACEHOLDERS:
            known = ", ".join("{" + k + "}" for k in PLACEHOLDERS)
            p.add(variant, where, f"unknown placeholder {{{name}}} in {text!r}; known: {known}")
        elif name == "seed" and not has_seeds:
            p.add(
                variant,
                where,
                f"{text!r} uses {{seed}} but the sweep has no `seeds`; "
                "add e.g. `seeds: [0]` at the top level",
            )


def _opts(p: _Problems, value: Any, variant: str | None, has_seeds: bool) -> tuple[str, ...]:
    if value is None:
        return ()
    example = 'e.g. opts: [SOLVER.BASE_LR, "0.02"]'
    if not isinstance(value, list):
        p.add(
            variant,
            "opts",
            f"expected a list of KEY VALUE strings ({example}), got {_describe(value)}",
        )
        return ()
    if len(value) % 2:
        p.add(
            variant,
            "opts",
            f"expected KEY VALUE pairs ({example}), got {len(value)} items: "
            "a key or a value is missing",
        )
        return ()
    result = []
    for i, item in enumerate(value):
        if isinstance(item, (int, float, bool)):
            item = str(item)
        if not isinstance(item, str):
            p.add(
                variant,
                f"opts[{i}]",
                f"expected a text, got {_describe(item)}; quote lists "
                'as one string, e.g. "[8, 16, 16, 32]"',
            )
            continue
        if i % 2 == 0 and item in ("OUTPUT_DIR",) + (("SEED",) if has_seeds else ()):
            p.add(
                variant,
                f"opts[{i}]",
                f"{item} is set by the sweep (OUTPUT_DIR "
                "<output_dir>/<variant>, SEED from `seeds`); remove it",
            )
        elif i % 2 == 0 and (not item or item.startswith("-")):
            p.add(
                variant,
                f"opts[{i}]",
                f"expected a config key such as SOLVER.BASE_LR, got "
                f"{item!r} (flags like --eval-only have fields of their own)",
            )
        _check_placeholders(p, item, variant, f"opts[{i}]", has_seeds)
        result.append(item)
    return tuple(result)


def _formats(sample: float, fmt: str) -> bool:
    """Whether ``format(sample, fmt)`` works (a float or an int format)."""
    try:
        format(sample, fmt)
    except ValueError:
        return False
    return True


def _column(p: _Problems, value: Any, where: str) -> Column | None:
    if not isinstance(value, dict):
        p.add(
            None,
            where,
            f'expected a mapping like {{key: "mAP@0.5", format: ".3f"}}, got {_describe(value)}',
        )
        return None
    _unknown_fields(p, value, ("key", "label", "format"), None)
    key = _text(p, value, "key", None, required=True)
    label = _text(p, value, "label", None) or key
    fmt = _text(p, value, "format", None)
    if fmt is not None and not any(_formats(sample, fmt) for sample in (1.5, 1)):
        p.add(
            None,
            f"{where}.format",
            f"{fmt!r} is not a Python number format; use e.g. "
            "'.3f' (3 decimals), '.0f', '.1%' or 'd'",
        )
    return Column(key, label, fmt) if key else None


def _seeds(p: _Problems, value: Any) -> tuple[int, ...] | None:
    if value is None:
        return None
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in value)
    ):
        p.add(
            None,
            "seeds",
            f"expected a non-empty list of integers like [0, 1, 2], got {_describe(value)}",
        )
        return None
    if len(set(value)) != len(value):
        p.add(None, "seeds", f"seeds repeat in {value}; list each once")
    return tuple(value)


def _path(p: _Problems, base_dir: str, value: str, variant: str | None, name: str) -> str:
    path = os.path.normpath(os.path.join(base_dir, os.path.expanduser(value)))
    if not os.path.isfile(path):
        p.add(
            variant,
            name,
            f"file not found: {path} (relative paths are relative to "
            f"{base_dir}, where the sweep is started from)",
        )
    return path


def _before(p: _Problems, value: Any, variant: str, has_seeds: bool) -> tuple[BeforeCommand, ...]:
    if value is None:
        return ()
    example = 'e.g. before: [{run: [python, tools/x.py], creates: "{sweep_dir}/x.npz"}]'
    if not isinstance(value, list):
        p.add(variant, "before", f"expected a list of commands ({example}), got {_describe(value)}")
        return ()
    commands = []
    for i, item in enumerate(value):
        where = f"before[{i}]"
        if not isinstance(item, dict):
            p.add(variant, where, f"expected a mapping ({example}), got {_describe(item)}")
            continue
        _unknown_fields(p, item, ("run", "creates"), variant)
        argv = item.get("run")
        if (
            not isinstance(argv, list)
            or not argv
            or not all(isinstance(a, (str, int, float)) and not isinstance(a, bool) for a in argv)
        ):
            p.add(
                variant,
                f"{where}.run",
                f"expected a non-empty list of argument strings ({example}), got {_describe(argv)}",
            )
            continue
        argv = [str(a) for a in argv]
        creates = _text(p, item, "creates", variant)
        for text in argv + ([creates] if creates else []):
            _check_placeholders(p, text, variant, where, has_seeds)
        commands.append(BeforeCommand(tuple(argv), creates))
    return tuple(commands)


def _check_references(p: _Problems, sweep: Sweep) -> None:
    """A variant may use another's outputs (``{sweep_dir}/<its folder>/...``) only when that
    variant comes earlier in the file, since variants run in file order."""
    owner = {
        sweep.run_folder(v.name, s): i
        for i, v in enumerate(sweep.variants)
        for s in (sweep.seeds or (None,))
    }
    for i, variant in enumerate(sweep.variants):
        texts = [("opts", o) for o in variant.opts] + [
            (f"before[{k}]", a)
            for k, b in enumerate(variant.before)
            for a in (*b.run, b.creates or "")
        ]
        for where, text in texts:
            later = {
                sweep.variants[j].name
                for s in (sweep.seeds or (None,))
                for f in _referenced_folders(text, s)
                if (j := owner.get(f, -1)) > i
            }
            for name in sorted(later):
                p.add(
                    variant.name,
                    where,
                    f"{text!r} uses the outputs of variant '{name}', "
                    "which comes later in the file; variants run in file order, so move "
                    f"'{name}' before '{variant.name}'",
                )


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
        raise SweepError(
            f"{source}: expected a YAML mapping with at least `name`, `output_dir` "
            f"and `variants` (docs/sweeps.md), got {_describe(data)}"
        )
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
            p.add(
                None,
                "columns",
                f"expected a non-empty list of {{key, label, format}}, got {_describe(raw)}",
            )
            raw = []
        columns = [_column(p, c, f"columns[{i}]") for i, c in enumerate(raw)]
    else:
        columns = [Column(*c) for c in _DEFAULT_COLUMNS]
    plot = _column(p, data["plot"], "plot") if data.get("plot") is not None else None
    reference_label = _text(p, data, "reference_label", None) or "reference"

    raw_variants = data.get("variants")
    if not isinstance(raw_variants, list) or not raw_variants:
        p.add(
            None,
            "variants",
            "expected a non-empty list of variants, each with at least a "
            f"`name` (docs/sweeps.md), got {_describe(raw_variants)}",
        )
        raw_variants = []
    variants, seen = [], set()
    for i, raw in enumerate(raw_variants):
        if not isinstance(raw, dict):
            p.add(
                f"#{i + 1}", "variants", f"expected a mapping with a `name`, got {_describe(raw)}"
            )
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
            p.add(
                who,
                "config_file",
                "missing, and the sweep has no top-level `config_file`; add one of them",
            )
        tool = _text(p, raw, "tool", who)
        tool = _path(p, base_dir, tool, who, "tool") if tool else DEFAULT_TOOL
        if tool == DEFAULT_TOOL and not os.path.isfile(tool):
            p.add(
                who,
                "tool",
                f"detkit's {tool} is not there (detkit installed without its "
                "tools/?); set `tool:` to the training script",
            )
        eval_only = raw.get("eval_only", False)
        if not isinstance(eval_only, bool):
            p.add(who, "eval_only", f"expected true or false, got {_describe(eval_only)}")
        variants.append(
            Variant(
                name=who,
                config_file=config_file or default_config or "",
                opts=common + _opts(p, raw.get("opts"), who, has_seeds),
                group=_text(p, raw, "group", who, numbers_ok=True),
                description=_text(p, raw, "description", who, numbers_ok=True),
                reference=_text(p, raw, "reference", who, numbers_ok=True),
                eval_only=eval_only is True,
                tool=tool,
                before=_before(p, raw.get("before"), who, has_seeds),
            )
        )
    sweep = Sweep(
        name=name,
        source=source,
        base_dir=base_dir,
        output_dir=os.path.normpath(os.path.join(base_dir, os.path.expanduser(output_dir))),
        variants=tuple(variants),
        columns=tuple(c for c in columns if c),
        seeds=seeds,
        plot=plot,
        reference_label=reference_label,
    )
    owners: dict[str, set[str]] = {}
    for v in variants:
        for s in seeds or (None,):
            owners.setdefault(sweep.run_folder(v.name, s), set()).add(v.name)
    for folder, names in owners.items():
        if len(names) > 1:  # e.g. variant "a_seed1" and variant "a" with seed 1
            p.add(
                max(names),
                "name",
                f"runs of variants {', '.join(sorted(names))} would "
                f"share the folder {folder}; rename one",
            )
    _check_references(p, sweep)
    if p.messages:
        raise SweepError(
            f"{len(p.messages)} problem(s) in the sweep file {source}:\n  "
            + "\n  ".join(p.messages)
        )
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
