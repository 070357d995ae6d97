"""Running a docs page as written: its file blocks (```python file=PATH, ```yaml file=PATH)
saved in a folder laid out like the checkout's root, its other ```python blocks executed
there in order in one namespace."""

from __future__ import annotations

import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"^```(python|yaml)( file=(\S+))?\n(.*?)^```$", flags=re.S | re.M)


def doc_blocks(doc: Path) -> list[tuple[str | None, str]]:
    """``(file path or None, code)`` of the page's python and yaml blocks, in order; yaml
    blocks without a file name are not part of the example."""
    text = doc.read_text(encoding="utf-8")
    return [
        (path or None, code)
        for lang, _, path, code in BLOCK.findall(text)
        if path or lang == "python"
    ]


def run_page(doc: Path, folder: Path, blocks: list[tuple[str | None, str]] | None = None) -> dict:
    """Save the file blocks under ``folder`` and execute the python blocks in order (all the
    page's blocks, or ``blocks``); returns the namespace."""
    namespace: dict = {"__name__": f"{doc.stem}_example"}
    for path, code in doc_blocks(doc) if blocks is None else blocks:
        if path is None:
            exec(compile(code, str(doc), "exec"), namespace)
        else:
            (folder / path).parent.mkdir(parents=True, exist_ok=True)
            (folder / path).write_text(code, encoding="utf-8")
    return namespace
