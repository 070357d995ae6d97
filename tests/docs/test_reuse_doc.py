"""docs/reuse.md's example runs as written: its one ```python block is executed here, and
the RPN it builds by hand must learn (loss down) and find both objects."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "reuse.md"


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", markdown, flags=re.S | re.M)


def test_reuse_example_trains_an_rpn_built_by_hand(capsys):
    blocks = python_blocks(DOC.read_text(encoding="utf-8"))
    assert len(blocks) == 1, "docs/reuse.md should hold exactly one runnable python block"
    namespace: dict = {"__name__": "reuse_example"}
    exec(compile(blocks[0], str(DOC), "exec"), namespace)
    history = namespace["history"]
    assert len(history) == 40
    assert history[-1] < 0.5 * history[0], history
    # Both objects of two_shapes_example are covered by a proposal with IoU > 0.5.
    assert namespace["best_iou"].min() > 0.5, namespace["best_iou"]
    assert "RPN loss:" in capsys.readouterr().out
