"""Layering: detkit/ never imports from projects/ (plugins depend on detkit, not the other
way round). Imports are read with ``ast``, so comments and strings do not count and
``import_module("projects...")`` does."""

from __future__ import annotations

import ast
from pathlib import Path

DETKIT = Path(__file__).resolve().parents[1] / "detkit"
FORBIDDEN = "projects"


def _is_forbidden(module: str | None) -> bool:
    return module is not None and (module == FORBIDDEN or module.startswith(FORBIDDEN + "."))


def forbidden_imports(source: str, filename: str = "<source>") -> list[str]:
    """``"file:line: what"`` for every import of ``projects`` in a module's source.

    Counts ``import projects...``, ``from projects... import ...`` and calls
    ``import_module("projects...")`` / ``__import__("projects...")`` with a literal name.
    Relative imports (``from . import x``) stay inside detkit and are allowed.
    """
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0]
            if called in ("import_module", "__import__") and isinstance(first, ast.Constant):
                names = [first.value] if isinstance(first.value, str) else []
        found += [f"{filename}:{node.lineno}: {name}" for name in names if _is_forbidden(name)]
    return found


def test_the_checker_finds_every_form_of_import():
    source = (
        "import os, projects.light_head\n"
        "from projects.retinanet import RetinaNet\n"
        "import importlib\n"
        "importlib.import_module('projects.x')\n"
        "__import__('projects')\n"
        "# import projects  (a comment)\n"
        "text = 'from projects import y'\n"
        "import projectsfoo\n"
        "from . import projects\n"
    )
    assert forbidden_imports(source, "m.py") == [
        "m.py:1: projects.light_head",
        "m.py:2: projects.retinanet",
        "m.py:4: projects.x",
        "m.py:5: projects",
    ]


def test_detkit_never_imports_from_projects():
    files = sorted(DETKIT.rglob("*.py"))
    assert len(files) > 50  # the whole package was read, not an empty directory
    offenders = []
    for path in files:
        offenders += forbidden_imports(path.read_text(encoding="utf-8"), str(path))
    assert not offenders, (
        "detkit/ must not import from projects/ (plugins depend on detkit, never the "
        "reverse); move the shared code into detkit or load the plugin through IMPORTS:\n"
        + "\n".join(offenders)
    )
