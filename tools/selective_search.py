#!/usr/bin/env python3
"""Compute Selective Search proposals of registered datasets as detkit proposals files.

    pip install -e ".[selective-search]"     # OpenCV's contrib build (make install does it)
    python tools/selective_search.py --dataset shapes_train --dataset shapes_test \\
        --output-dir output/selective_search
    python tools/train_net.py --config-file configs/quickstart/shapes.yaml \\
        MODEL.PROPOSAL_GENERATOR.NAME PrecomputedProposals \\
        DATASETS.PROPOSAL_FILES_TRAIN '["output/selective_search/shapes_train.npz"]' \\
        DATASETS.PROPOSAL_FILES_TEST '["output/selective_search/shapes_test.npz"]' \\
        MODEL.PRECOMPUTED_PROPOSALS.TOPK_TEST 2000

Writes DIR/<dataset>.npz for each --dataset (or --output FILE for a single one): every
image's boxes in SS's "fast" mode (the paper's "SS 2000" rows: at most 2,000 boxes per image,
used for training and testing, hence TOPK_TEST 2000 above), in the format of
detkit.data.proposals. Names are those of detkit.data.DatasetCatalog; built-in datasets live
under $DETKIT_DATASETS (default ./datasets), and shapes_* is generated there on first use.

SS is slow: "fast" mode takes ~0.7 s of one core per 500x375 VOC image (an hour for VOC 2007
trainval), ~0.23 s per 256 px shapes image (the last line prints the time measured);
--num-workers runs one process per core, and --resize-to S searches a copy whose shorter side
is S (boxes scaled back; faster, fewer boxes). An interrupted run keeps its results in
DIR/<dataset>.partial.npz and the same command continues from there.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from detkit.data import DatasetCatalog  # noqa: E402  (registers the built-in names)
from detkit.data.catalog import DatasetNotFoundError  # noqa: E402
from detkit.data.selective_search import (  # noqa: E402
    DEFAULT_MIN_SIZE,
    SELECTIVE_SEARCH_MODES,
    compute_selective_search_proposals,
    require_selective_search,
)
from detkit.utils.cli import add_debug_argument, int_at_least, run_cli  # noqa: E402


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Example: python tools/selective_search.py --dataset shapes_train "
        "--output-dir output/selective_search",
    )
    parser.add_argument(
        "--dataset",
        action="append",
        required=True,
        metavar="NAME",
        help="a registered dataset name (repeat for several)",
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--output-dir", metavar="DIR", help="write DIR/<dataset>.npz")
    where.add_argument("--output", metavar="FILE", help="the .npz file (one --dataset only)")
    parser.add_argument(
        "--mode",
        choices=SELECTIVE_SEARCH_MODES,
        default="fast",
        help="OpenCV's SS setting (default: fast, the paper's)",
    )
    parser.add_argument(
        "--max-proposals",
        type=int_at_least(1),
        default=2000,
        metavar="N",
        help="at most N boxes per image, SS's first ones (default: 2000)",
    )
    parser.add_argument(
        "--min-size",
        type=_non_negative_float,
        default=DEFAULT_MIN_SIZE,
        metavar="PX",
        help=f"drop boxes narrower or lower than PX pixels (default: {DEFAULT_MIN_SIZE:g})",
    )
    parser.add_argument(
        "--resize-to",
        type=int_at_least(1),
        default=None,
        metavar="S",
        help="run SS on a copy whose shorter side is S px (default: original)",
    )
    parser.add_argument(
        "--num-workers",
        type=int,
        default=os.cpu_count() or 1,
        metavar="N",
        help="worker processes, 0 or 1: none (default: the number of cores)",
    )
    parser.add_argument(
        "--max-images",
        type=int,
        default=0,
        metavar="N",
        help="only the first N images (a timing run; the file covers only them) (default 0: all)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of SS's random ranking (default: 0)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _format_seconds(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds:.1f} s"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    if args.output and len(args.dataset) > 1:
        parser.error("--output names one file: give one --dataset, or use --output-dir")
    if args.num_workers < 0:
        parser.error(f"--num-workers must be >= 0, got {args.num_workers}")
    if args.max_images < 0:
        parser.error(f"--max-images must be >= 0, got {args.max_images}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    try:
        require_selective_search()
        for name in args.dataset:  # check every name before the first long run
            if name not in DatasetCatalog:
                DatasetCatalog.get(name)  # raises, listing the registered names
        for name in args.dataset:
            dicts = DatasetCatalog.get(name)
            if args.max_images:
                dicts = dicts[: args.max_images]
            output = args.output or os.path.join(args.output_dir, f"{name}.npz")
            run = compute_selective_search_proposals(
                dicts,
                output,
                mode=args.mode,
                max_proposals=args.max_proposals,
                min_size=args.min_size,
                resize_to=args.resize_to,
                seed=args.seed,
                num_workers=args.num_workers,
                progress=not args.no_progress,
            )
            per_image = (
                f"{run.seconds_per_image:.3f} s/image per process "
                f"({run.cpu_seconds_per_image:.3f} s CPU)"
                if not math.isnan(run.seconds_per_image)
                else "all images resumed"
            )
            resumed = f" ({run.num_resumed} resumed)" if run.num_resumed else ""
            print(
                f"{name}: {run.num_images} images{resumed}, "
                f"{run.num_proposals / run.num_images:.0f} proposals/image -> {run.output_path}; "
                f"time {per_image} (SS {args.mode}, "
                f"{'original size' if args.resize_to is None else f'shorter side {args.resize_to}'}"
                f"), {_format_seconds(run.wall_seconds)} wall with "
                f"{max(args.num_workers, 1)} process(es)"
            )
    except KeyboardInterrupt:
        print("Interrupted; run the same command again to continue.", file=sys.stderr)
        return 130
    except (ImportError, DatasetNotFoundError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
