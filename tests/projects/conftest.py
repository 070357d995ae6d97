"""``projects`` is imported from the repository root, as ``tools/train_net.py`` does: put the
root on ``sys.path`` however pytest was started."""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
