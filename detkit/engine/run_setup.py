"""The command line and setup of a run (``tools/train_net.py`` and the other tools): the
argument parser, seeding, and ``default_setup``, which claims ``OUTPUT_DIR``, starts the log
and writes the full config there. :mod:`detkit.engine.defaults` re-exports them next to
``DefaultTrainer``."""

from __future__ import annotations

import argparse
import logging
import os
import random
import time

import numpy as np
import torch
import yaml

from detkit.config import CfgNode, get_cfg
from detkit.engine.output_dir import claim_output_dir
from detkit.utils import comm
from detkit.utils.cli import (
    add_config_overrides_arguments,
    add_debug_argument,
    parse_args_anywhere,
)
from detkit.utils.io import atomic_write_text
from detkit.utils.logger import setup_logger

__all__ = ["default_argument_parser", "default_setup", "seed_all_rng", "setup"]

logger = logging.getLogger("detkit")


class _OptionsAnywhereParser(argparse.ArgumentParser):
    """``parse_args`` is :func:`~detkit.utils.cli.parse_args_anywhere`: options may come
    before, between or after the ``KEY VALUE`` / ``KEY=VALUE`` overrides, also after
    ``--opts`` (detectron2's form)."""

    _parsing = False

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        if self._parsing:  # the options alone, from parse_args_anywhere
            return super().parse_args(args, namespace)
        self._parsing = True
        try:
            return parse_args_anywhere(self, args)
        finally:
            self._parsing = False


def default_argument_parser(description: str | None = None) -> argparse.ArgumentParser:
    """``--config-file``, ``--resume``, ``--eval-only``, ``--overwrite``, ``--debug``, the
    distributed options and the config overrides: trailing ``KEY VALUE`` or ``KEY=VALUE``
    pairs, or after ``--opts``; options may also be written after the pairs."""
    parser = _OptionsAnywhereParser(
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Trailing KEY VALUE (or KEY=VALUE) pairs override the config, e.g. "
        "SOLVER.BASE_LR 0.01",
    )
    parser.add_argument("--config-file", default="", metavar="FILE", help="YAML config")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUTPUT_DIR/last_checkpoint (model, optimizer, scheduler, iteration)",
    )
    parser.add_argument("--eval-only", action="store_true", help="only evaluate MODEL.WEIGHTS")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="train into an OUTPUT_DIR holding a previous run: delete its checkpoints, "
        "last_checkpoint, metrics.json and summary.json first (without it, such a folder "
        "is refused unless --resume)",
    )
    add_debug_argument(parser)
    parser.add_argument(
        "--num-gpus",
        type=int,
        default=1,
        help="processes per machine: one per GPU, or CPU processes (gloo) without GPUs",
    )
    parser.add_argument("--num-machines", type=int, default=1)
    parser.add_argument("--machine-rank", type=int, default=0, help="this machine's index")
    parser.add_argument("--dist-url", default="auto", help="tcp://host:port of machine 0")
    add_config_overrides_arguments(parser)
    return parser


def seed_all_rng(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _previous_seed(output_dir: str) -> int | None:
    path = os.path.join(output_dir, "config.yaml")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        seed = (yaml.safe_load(f) or {}).get("SEED")
    return seed if isinstance(seed, int) and seed >= 0 else None


def default_setup(cfg: CfgNode, args: argparse.Namespace) -> None:
    """Output directory, logger, seed, environment summary and ``OUTPUT_DIR/config.yaml``.

    The main process first claims ``OUTPUT_DIR`` (:func:`claim_output_dir`): it is locked
    for this run, and a training run into a folder holding another run's checkpoints is
    refused unless ``--resume`` or ``--overwrite``, before anything there is written.

    A negative ``SEED`` picks one at random and records it in the written config; with
    ``--resume`` the seed of the run being resumed is reused, so the data order continues.
    """
    output_dir = cfg.OUTPUT_DIR
    rank = comm.get_rank()
    if comm.is_main_process():
        claim_output_dir(
            output_dir,
            resume=getattr(args, "resume", False),
            overwrite=getattr(args, "overwrite", False),
            training=not getattr(args, "eval_only", False),
        )
    setup_logger(output_dir, distributed_rank=rank)
    if cfg.SEED < 0:
        previous = _previous_seed(output_dir) if getattr(args, "resume", False) else None
        seed = previous if previous is not None else (os.getpid() + int(time.time() * 1e3)) % 2**31
        cfg.defrost()
        cfg.SEED = seed
        cfg.freeze()
    seed_all_rng(cfg.SEED + rank)
    logger.info(f"Rank {rank} of {comm.get_world_size()}; torch {torch.__version__}")
    logger.info(f"Command line arguments: {args}")
    if comm.is_main_process():
        path = os.path.join(output_dir, "config.yaml")
        atomic_write_text(path, cfg.dump())
        logger.info(f"Full config written to {path}")


def setup(args: argparse.Namespace) -> CfgNode:
    """The merged, frozen config of a command line, with ``default_setup`` done."""
    cfg = get_cfg()
    if args.config_file:
        cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg
