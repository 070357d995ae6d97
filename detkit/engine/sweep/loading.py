"""Reading and validating a sweep file (YAML, format in ``docs/sweeps.md``) into a
``Sweep``: ``load_sweep`` reads the file, ``parse_sweep`` checks every field and raises one
``SweepError`` that lists all the problems, each naming the file, the variant and the field.
"""

from __future__ import annotations

import os
import re
from typing import Any

import yaml

from detkit.engine.sweep.fields import (
    _before,
    _column,
    _describe,
    _opts,
    _path,
    _Problems,
    _seeds,
    _text,
    _unknown_fields,
)
from detkit.engine.sweep.spec import (
    DEFAULT_TOOL,
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
