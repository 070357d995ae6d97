#!/usr/bin/env python3
"""Check every image and box of registered datasets, as a training run does before it starts.

    python tools/verify_dataset.py --dataset shapes_train --dataset shapes_test
    python tools/verify_dataset.py --config-file configs/faster_rcnn_vgg16.yaml
    python tools/verify_dataset.py --config-file configs/quickstart/shapes.yaml --no-cache

Each image is read as training reads it: it must exist, be complete (a truncated JPEG or PNG
is refused), decode, and have the size its annotation gives. Each box must be finite, of
non-negative size and not farther outside its image than the image's size; each category id
one of the dataset's classes. Prints one report with every problem and what to do; the exit
status is 1 if there is any problem or a dataset cannot be read, 0 otherwise.

A config's datasets are its DATASETS.TRAIN and DATASETS.TEST (its IMPORTS are imported
first: plugins may register datasets); --dataset adds names. Names are those of
detkit.data.DatasetCatalog; built-in datasets live under $DETKIT_DATASETS (default
./datasets). Results are cached per file, keyed by (path, size, mtime), in
$DETKIT_CACHE/verify (default ~/.cache/detkit/verify): a second run decodes only new or
changed files. --no-cache decodes every file and keeps nothing.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from detkit.config import get_cfg  # noqa: E402
from detkit.data import DatasetCatalog  # noqa: E402  (registers the built-in names)
from detkit.data.verify import VerificationReport, verify_registered_datasets  # noqa: E402
from detkit.utils.cli import add_debug_argument, int_at_least, run_cli  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Example: python tools/verify_dataset.py --dataset shapes_train",
    )
    parser.add_argument("--config-file", metavar="FILE", help="check its TRAIN and TEST sets")
    parser.add_argument(
        "--dataset",
        action="append",
        default=[],
        metavar="NAME",
        help="a registered dataset name (repeat for several)",
    )
    parser.add_argument(
        "--num-workers",
        type=int_at_least(0),
        default=0,
        metavar="N",
        help="decoding threads (default 0: one per core, at most 8)",
    )
    parser.add_argument("--no-cache", action="store_true", help="decode every file, keep nothing")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    names = []
    if args.config_file:
        cfg = get_cfg()
        cfg.merge_from_file(args.config_file)
        cfg.merge_from_list(args.opts)
        names += list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)
    elif args.opts:
        parser.error(f"config overrides {args.opts} need --config-file")
    names = list(dict.fromkeys(names + args.dataset))
    if not names:
        parser.error("nothing to check: give --dataset NAME or a --config-file with datasets")
    unknown = [n for n in names if n not in DatasetCatalog]
    if unknown:
        parser.error(
            f"unknown dataset(s) {unknown}; registered: {', '.join(DatasetCatalog.list())}"
        )
    report, unreadable = VerificationReport(), []
    for name in names:
        try:
            report.extend(
                verify_registered_datasets(
                    [name],
                    num_workers=args.num_workers,
                    use_cache=not args.no_cache,
                    progress=True,
                )
            )
        except (OSError, ValueError) as e:  # the loader itself failed: bad annotation files
            unreadable.append(f"{name}: cannot be read: {e}")
    print(report.format())
    for line in unreadable:
        print(line)
    return 1 if unreadable or not report.ok else 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
