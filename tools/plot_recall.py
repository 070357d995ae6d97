#!/usr/bin/env python3
"""Recall against IoU of several proposal methods side by side (the paper's Figure 4).

    python tools/plot_recall.py --output recall.png \\
        "RPN=output/quickstart_rpn/inference/shapes_test/proposal_metrics.json" \\
        "selective search=output/ss_eval/inference/shapes_test/proposal_metrics.json"

Each argument is LABEL=PATH of a ``proposal_metrics.json`` that a proposal model's
evaluation writes (``train_net.py --eval-only`` of a ``ProposalNetwork`` config). One panel per
proposal count (``--topk``, default 300 1000 2000), one curve per method.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from detkit.evaluation.recall_plots import (  # noqa: E402
    load_recall_report,
    plot_recall_comparison,
)
from detkit.utils.cli import add_debug_argument, run_cli  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "methods",
        nargs="+",
        metavar="LABEL=PATH",
        help="a method's label and its proposal_metrics.json",
    )
    parser.add_argument("--output", required=True, help="PNG file to write")
    parser.add_argument("--topk", type=int, nargs="+", default=[300, 1000, 2000])
    parser.add_argument("--title", default="")
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    reports = {}
    for item in args.methods:
        label, sep, path = item.partition("=")
        if not sep or not label or not path:
            parser.error(f"'{item}' is not LABEL=PATH (e.g. \"RPN=out/proposal_metrics.json\").")
        try:
            reports[label] = load_recall_report(path)
        except (OSError, ValueError) as e:
            print(f"plot_recall.py: {e}", file=sys.stderr)
            return 2
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    plot_recall_comparison(reports, args.output, topk=args.topk, title=args.title)
    print(f"Wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
