"""Checks of the single fields of a sweep file (format in ``docs/sweeps.md``).

Each function reads one value of the loaded YAML, adds what is wrong with it to a
``_Problems`` (so that one ``SweepError`` lists every problem, each naming the file, the
variant and the field) and returns the value parsed, or an empty or None stand-in.
``detkit.engine.sweep.loading`` assembles them into a ``Sweep``.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence
from typing import Any

from detkit.engine.sweep.spec import _PLACEHOLDER, PLACEHOLDERS, BeforeCommand, Column

__all__: list[str] = []


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
