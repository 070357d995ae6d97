"""What ``tools/train_net.py`` is made of: the argument parser, the run setup and a trainer
that assembles model, data, solver, checkpoints, evaluation and metric writers from a config."""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
import time
from collections import OrderedDict

import numpy as np
import torch
import yaml
from torch.nn.parallel import DistributedDataParallel

from detkit.config import CfgNode, get_cfg
from detkit.engine import hooks
from detkit.engine.output_dir import claim_output_dir
from detkit.engine.train_loop import SimpleTrainer
from detkit.utils import comm
from detkit.utils.cli import add_debug_argument
from detkit.utils.events import CommonMetricPrinter, JSONWriter, TensorboardWriter
from detkit.utils.io import atomic_write_text
from detkit.utils.logger import setup_logger

__all__ = ["DefaultTrainer", "default_argument_parser", "default_setup", "seed_all_rng", "setup"]

logger = logging.getLogger("detkit")


class _OptionsAnywhereParser(argparse.ArgumentParser):
    """An argument parser whose ``--options`` may also come after the ``KEY VALUE`` pairs
    (``... SOLVER.BASE_LR 0.01 --resume``): they are moved before them, so the trailing
    pairs stay pure config overrides (config values never start with ``--``)."""

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        tokens = list(sys.argv[1:] if args is None else args)
        options: list[str] = []
        pairs: list[str] = []
        index = 0
        while index < len(tokens):
            token = tokens[index]
            if token.startswith("--") and token != "--":
                options.append(token)
                action = self._option_string_actions.get(token.split("=", 1)[0])
                takes_value = action is not None and action.nargs != 0 and "=" not in token
                if takes_value and index + 1 < len(tokens):
                    options.append(tokens[index + 1])
                    index += 1
            else:
                pairs.append(token)
            index += 1
        return super().parse_args(options + pairs, namespace)


def default_argument_parser(description: str | None = None) -> argparse.ArgumentParser:
    """``--config-file``, ``--resume``, ``--eval-only``, ``--overwrite``, ``--debug``, the
    distributed options and trailing ``KEY VALUE`` config overrides (options may also be
    written after the pairs)."""
    parser = _OptionsAnywhereParser(
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Trailing KEY VALUE pairs override the config, e.g. SOLVER.BASE_LR 0.01",
    )
    parser.add_argument("--config-file", default="", metavar="FILE", help="YAML config")
    parser.add_argument(
        "--resume", action="store_true",
        help="continue from OUTPUT_DIR/last_checkpoint (model, optimizer, scheduler, iteration)",
    )
    parser.add_argument("--eval-only", action="store_true", help="only evaluate MODEL.WEIGHTS")
    parser.add_argument(
        "--overwrite", action="store_true",
        help="train into an OUTPUT_DIR holding a previous run: delete its checkpoints, "
        "last_checkpoint, metrics.json and summary.json first (without it, such a folder "
        "is refused unless --resume)",
    )
    add_debug_argument(parser)
    parser.add_argument(
        "--num-gpus", type=int, default=1,
        help="processes per machine: one per GPU, or CPU processes (gloo) without GPUs",
    )
    parser.add_argument("--num-machines", type=int, default=1)
    parser.add_argument("--machine-rank", type=int, default=0, help="this machine's index")
    parser.add_argument("--dist-url", default="auto", help="tcp://host:port of machine 0")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
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


class DefaultTrainer:
    """Trains and evaluates the model of a config, with the standard hooks.

    ``resume_or_load`` first (``--resume`` continues from ``OUTPUT_DIR/last_checkpoint``),
    then ``train()``, which returns the final evaluation results.
    """

    def __init__(self, cfg: CfgNode):
        from detkit.checkpoint import DetectionCheckpointer, RNGState
        from detkit.data.verify import verify_datasets
        from detkit.modeling import build_model
        from detkit.solver import build_lr_scheduler, build_optimizer

        self.cfg = cfg
        # DATASETS.VERIFY: every image of DATASETS.TRAIN and DATASETS.TEST is checked now
        # (cached by file size and time), not when the sampler or the first evaluation
        # reaches a bad one hours later. Every rank calls it (the others read rank 0's cache).
        verify_datasets(cfg)
        model = build_model(cfg)
        logger.info(
            f"Model: {cfg.MODEL.META_ARCHITECTURE} with "
            f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters "
            f"({sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6:.2f}M "
            "trained)"
        )
        self.optimizer = build_optimizer(cfg, model)
        self.scheduler = build_lr_scheduler(cfg, self.optimizer)
        self.model = model
        if comm.get_world_size() > 1:
            device_ids = [torch.cuda.current_device()] if torch.cuda.is_available() else None
            self.model = DistributedDataParallel(model, device_ids=device_ids)
        self.checkpointer = DetectionCheckpointer(
            model, cfg.OUTPUT_DIR, optimizer=self.optimizer, scheduler=self.scheduler,
            rng=RNGState(),
        )
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.timer: hooks.IterationTimer | None = None
        self.eval_hook: hooks.EvalHook | None = None

    def resume_or_load(self, resume: bool = True) -> None:
        """With ``resume`` and a checkpoint in OUTPUT_DIR: restore model, optimizer,
        scheduler and iteration. Otherwise initialize from ``MODEL.WEIGHTS`` (if set)."""
        checkpoint = self.checkpointer.resume_or_load(self.cfg.MODEL.WEIGHTS, resume=resume)
        if resume and self.checkpointer.has_checkpoint():
            self.start_iter = int(checkpoint.get("iteration", -1)) + 1
            logger.info(f"Resuming at iteration {self.start_iter}")

    def build_hooks(self) -> list[hooks.HookBase]:
        cfg = self.cfg
        self.timer = hooks.IterationTimer()
        self.eval_hook = hooks.EvalHook(cfg.TEST.EVAL_PERIOD, lambda: self.test(cfg, self.model))
        result: list[hooks.HookBase] = [
            self.timer,
            hooks.LRScheduler(self.optimizer, self.scheduler),
        ]
        if comm.is_main_process():
            result.append(
                hooks.PeriodicCheckpointer(self.checkpointer, cfg.SOLVER.CHECKPOINT_PERIOD)
            )
        result.append(self.eval_hook)
        if comm.is_main_process():
            metrics = os.path.join(cfg.OUTPUT_DIR, "metrics.json")
            writers = [
                CommonMetricPrinter(self.max_iter),
                JSONWriter(metrics),
                TensorboardWriter(cfg.OUTPUT_DIR),
            ]
            result.append(hooks.PeriodicWriter(writers, period=20))
            result.append(
                hooks.TrainingCurves(metrics, os.path.join(cfg.OUTPUT_DIR, "curves.png"))
            )
        return result

    def train(self) -> dict:
        """Train from ``start_iter`` to ``SOLVER.MAX_ITER``; returns the last evaluation."""
        from detkit.data import build_detection_train_loader

        cfg = self.cfg
        # Each update consumes ITER_SIZE batches: resuming skips exactly those already used.
        loader = build_detection_train_loader(
            cfg, start_iter=self.start_iter * cfg.SOLVER.ITER_SIZE
        )
        trainer = SimpleTrainer(
            self.model, loader, self.optimizer, cfg.SOLVER.ITER_SIZE, cfg.SOLVER.CLIP_GRADIENTS
        )
        trainer.register_hooks(self.build_hooks())
        trainer.train(self.start_iter, self.max_iter)
        return self.eval_hook.latest_results if self.eval_hook else {}

    @property
    def train_time(self) -> float:
        """Seconds of training steps in the last ``train()`` (evaluation excluded)."""
        return self.timer.train_time if self.timer else 0.0

    @classmethod
    def test(cls, cfg: CfgNode, model: torch.nn.Module) -> OrderedDict:
        """Evaluate ``model`` on every dataset of ``DATASETS.TEST``."""
        from detkit.data import build_detection_test_loader
        from detkit.evaluation import build_evaluator, inference_on_dataset, print_results

        if isinstance(model, DistributedDataParallel):
            model = model.module
        results: OrderedDict = OrderedDict()
        for name in cfg.DATASETS.TEST:
            loader = build_detection_test_loader(cfg, name)
            output_dir = os.path.join(cfg.OUTPUT_DIR, "inference", name)
            evaluator = build_evaluator(
                cfg, name, output_dir, getattr(model, "output_kind", "instances")
            )
            results[name] = inference_on_dataset(model, loader, evaluator)
            if comm.is_main_process():
                print_results(name, results[name])
        if len(results) == 1:
            return OrderedDict(next(iter(results.values())))
        return results
