#!/usr/bin/env python3
"""Run named variants of a config one after the other, resumably, and tabulate them.

    python tools/sweep.py sweeps/lr.yaml                  # run what is not done yet
    python tools/sweep.py sweeps/lr.yaml --dry-run        # print the commands only
    python tools/sweep.py sweeps/lr.yaml --only lr_0.02 --force lr_0.02

Each variant runs tools/train_net.py (or its `tool`) in <output_dir>/<variant>; finished
runs are skipped, interrupted ones continue with --resume, a failed one does not stop the
others. results.md, results.json and results.png in output_dir are rewritten after each
run. Paths in the sweep file are relative to the current directory. Format: docs/sweeps.md.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from detkit.engine.sweep import main  # noqa: E402
from detkit.utils.cli import run_cli  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_cli(main))
