"""What ``tools/train_net.py`` is made of: the argument parser and the run setup (from
:mod:`detkit.engine.run_setup`, re-exported here) and a trainer that assembles model, data,
solver, checkpoints, evaluation and metric writers from a config."""

from __future__ import annotations

import inspect
import logging
import os
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import torch
from torch.nn.parallel import DistributedDataParallel

from detkit.config import CfgNode
from detkit.engine import hooks
from detkit.engine.run_setup import default_argument_parser, default_setup, seed_all_rng, setup
from detkit.engine.train_loop import SimpleTrainer, build_grad_scaler, model_device_type
from detkit.utils import comm
from detkit.utils.events import (
    CommonMetricPrinter,
    EventStorage,
    EventWriter,
    JSONWriter,
    TensorboardWriter,
)

if TYPE_CHECKING:
    from detkit.evaluation import DatasetEvaluator

__all__ = ["DefaultTrainer", "default_argument_parser", "default_setup", "seed_all_rng", "setup"]

logger = logging.getLogger("detkit")


class DefaultTrainer:
    """Trains and evaluates the model of a config, with the standard hooks.

    ``resume_or_load`` first (``--resume`` continues from ``OUTPUT_DIR/last_checkpoint``),
    then ``train()``, which returns the final evaluation results.

    Subclasses change one part without rewriting the rest by overriding a classmethod:
    ``build_model``, ``build_optimizer``, ``build_lr_scheduler``, ``build_train_loader``
    (e.g. a custom mapper), ``build_test_loader``, ``build_evaluator``; or the method
    ``build_hooks`` (extend ``super().build_hooks()``). Hooks given to ``register_hooks``
    run after those of ``build_hooks``, in the order registered. Example::

        class Trainer(DefaultTrainer):
            @classmethod
            def build_train_loader(cls, cfg, start_iter=0):
                mapper = MyMapper(cfg)
                return build_detection_train_loader(cfg, mapper, start_iter=start_iter)
    """

    def __init__(self, cfg: CfgNode):
        from detkit.checkpoint import DetectionCheckpointer, RNGState
        from detkit.data.verify import verify_datasets
        from detkit.modeling.meta_arch import check_num_classes, select_memory_format

        self.cfg = cfg
        if cfg.MODEL.ROI_BOX_HEAD.QUANTIZE:
            raise ValueError(
                f"MODEL.ROI_BOX_HEAD.QUANTIZE is '{cfg.MODEL.ROI_BOX_HEAD.QUANTIZE}' in a "
                "training run: int8 layers have no backward. Train with QUANTIZE '' and "
                "evaluate or deploy the trained model with it (train_net.py --eval-only, "
                "DefaultPredictor)."
            )
        # DATASETS.VERIFY: every image of DATASETS.TRAIN and DATASETS.TEST is checked now
        # (cached by file size and time), not when the sampler or the first evaluation
        # reaches a bad one hours later. Every rank calls it (the others read rank 0's cache).
        verify_datasets(cfg)
        # After the datasets were read (a COCO json gives its classes only then).
        check_num_classes(cfg)
        # MODEL.MEMORY_FORMAT "measure": the layout that trains this backbone faster here.
        model = select_memory_format(cfg, self.build_model(cfg), "training")
        logger.info(
            f"Model: {cfg.MODEL.META_ARCHITECTURE} with "
            f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters "
            f"({sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6:.2f}M "
            "trained)"
        )
        self.optimizer = self.build_optimizer(cfg, model)
        self.scheduler = self.build_lr_scheduler(cfg, self.optimizer)
        self.model = model
        if comm.get_world_size() > 1:
            device_ids = [torch.cuda.current_device()] if torch.cuda.is_available() else None
            self.model = DistributedDataParallel(model, device_ids=device_ids)
        # float16 mixed precision (CUDA) scales its losses; the scale is saved for a resume.
        self.grad_scaler = build_grad_scaler(cfg.SOLVER.AMP.ENABLED, model_device_type(model))
        extra = {"grad_scaler": self.grad_scaler} if self.grad_scaler is not None else {}
        self.checkpointer = DetectionCheckpointer(
            model,
            cfg.OUTPUT_DIR,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            rng=RNGState(),
            **extra,
        )
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.timer: hooks.IterationTimer | None = None
        self.eval_hook: hooks.EvalHook | None = None
        self._registered_hooks: list[hooks.HookBase] = []
        self.loop: SimpleTrainer | None = None

    # -- override points (classmethods, as the components do not depend on the trainer) --

    @classmethod
    def build_model(cls, cfg: CfgNode) -> torch.nn.Module:
        """The model of ``cfg`` (``MODEL.META_ARCHITECTURE``), on ``MODEL.DEVICE``."""
        from detkit.modeling import build_model

        return build_model(cfg)

    @classmethod
    def build_optimizer(cls, cfg: CfgNode, model: torch.nn.Module) -> torch.optim.Optimizer:
        """SGD with the ``SOLVER`` parameter groups (bias lr and weight decay)."""
        from detkit.solver import build_optimizer

        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg: CfgNode, optimizer: torch.optim.Optimizer):
        """The ``SOLVER`` schedule (warmup, steps), stepped once per update."""
        from detkit.solver import build_lr_scheduler

        return build_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_train_loader(cls, cfg: CfgNode, start_iter: int = 0):
        """The infinite training loader, positioned after ``start_iter`` batches (so that a
        resumed run sees exactly the batches an uninterrupted one would). An override that
        does not take ``start_iter`` still works, but a resumed run then restarts the data
        order (a warning says so)."""
        from detkit.data import build_detection_train_loader

        return build_detection_train_loader(cfg, start_iter=start_iter)

    @classmethod
    def build_test_loader(cls, cfg: CfgNode, dataset_name: str):
        """The loader of one dataset of ``DATASETS.TEST``."""
        from detkit.data import build_detection_test_loader

        return build_detection_test_loader(cfg, dataset_name)

    @classmethod
    def build_evaluator(cls, cfg: CfgNode, dataset_name: str, output_folder: str | None = None):
        """The evaluator of one dataset (by its metadata's ``evaluator_type``, or proposal
        recall for a proposal model); ``output_folder`` default
        ``OUTPUT_DIR/inference/<dataset_name>``."""
        from detkit.evaluation import build_evaluator

        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return build_evaluator(cfg, dataset_name, output_folder)

    def build_hooks(self) -> list[hooks.HookBase]:
        """Timer, lr schedule, checkpoints, evaluation every ``TEST.EVAL_PERIOD``, and on the
        main process the metric writers and the training curves. Subclasses extend it:
        ``return [*super().build_hooks(), MyHook()]``."""
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
            result.append(hooks.PeriodicWriter(self.build_writers(), period=20))
            metrics = os.path.join(cfg.OUTPUT_DIR, "metrics.json")
            result.append(hooks.TrainingCurves(metrics, os.path.join(cfg.OUTPUT_DIR, "curves.png")))
        return result

    def build_writers(self) -> list[EventWriter]:
        """Console line, ``OUTPUT_DIR/metrics.json`` and TensorBoard events."""
        return [
            CommonMetricPrinter(self.max_iter),
            JSONWriter(os.path.join(self.cfg.OUTPUT_DIR, "metrics.json")),
            TensorboardWriter(self.cfg.OUTPUT_DIR),
        ]

    def register_hooks(self, new_hooks: Iterable[hooks.HookBase | None]) -> None:
        """Add hooks to the next ``train()``, after those of ``build_hooks`` (None skipped)."""
        self._registered_hooks.extend(h for h in new_hooks if h is not None)

    # -- running --

    def resume_or_load(self, resume: bool = True) -> None:
        """With ``resume`` and a checkpoint in OUTPUT_DIR: restore model, optimizer,
        scheduler and iteration. Otherwise initialize from ``MODEL.WEIGHTS`` (if set)."""
        checkpoint = self.checkpointer.resume_or_load(self.cfg.MODEL.WEIGHTS, resume=resume)
        if resume and self.checkpointer.has_checkpoint():
            self.start_iter = int(checkpoint.get("iteration", -1)) + 1
            logger.info(f"Resuming at iteration {self.start_iter}")

    def _train_loader(self):
        # Each update consumes ITER_SIZE batches: resuming skips exactly those already used.
        start_batch = self.start_iter * self.cfg.SOLVER.ITER_SIZE
        if "start_iter" in inspect.signature(self.build_train_loader).parameters:
            return self.build_train_loader(self.cfg, start_iter=start_batch)
        if start_batch > 0:
            logger.warning(
                f"{type(self).__name__}.build_train_loader takes no start_iter: the resumed "
                f"run restarts the data order instead of skipping the {start_batch} batches "
                "already used. Add a start_iter argument and pass it to "
                "build_detection_train_loader to resume exactly."
            )
        return self.build_train_loader(self.cfg)

    def train(self) -> dict:
        """Train from ``start_iter`` to ``SOLVER.MAX_ITER``; returns the last evaluation."""
        cfg = self.cfg
        self.loop = SimpleTrainer(
            self.model,
            self._train_loader(),
            self.optimizer,
            cfg.SOLVER.ITER_SIZE,
            cfg.SOLVER.CLIP_GRADIENTS,
            amp=cfg.SOLVER.AMP.ENABLED,
            grad_scaler=self.grad_scaler,
        )
        self.loop.register_hooks([*self.build_hooks(), *self._registered_hooks])
        self.loop.train(self.start_iter, self.max_iter)
        return self.eval_hook.latest_results if self.eval_hook else {}

    @property
    def storage(self) -> EventStorage | None:
        """The ``EventStorage`` of the last (or running) ``train()``; None before."""
        return self.loop.storage if self.loop else None

    @property
    def train_time(self) -> float:
        """Seconds of training steps in the last ``train()`` (evaluation excluded)."""
        return self.timer.train_time if self.timer else 0.0

    @classmethod
    def test(
        cls,
        cfg: CfgNode,
        model: torch.nn.Module,
        evaluators: DatasetEvaluator | Sequence[DatasetEvaluator | None] | None = None,
    ) -> OrderedDict:
        """Evaluate ``model`` on every dataset of ``DATASETS.TEST``.

        Args:
            cfg: the config.
            model: the model (a DDP wrapper is unwrapped).
            evaluators: None: ``build_evaluator`` for each dataset; a list: one per
                ``DATASETS.TEST`` name, in order (a None item is built); a single evaluator
                (only with one test dataset).

        Returns:
            With one test dataset, its ``inference_on_dataset`` results (``{task: {metric:
            value}}``, values fractions in [0, 1], with the ``"evaluators"`` and ``"timing"``
            entries); with several, ``{dataset: those results}``.
        """
        from detkit.evaluation import DatasetEvaluator, inference_on_dataset, print_results

        names = list(cfg.DATASETS.TEST)
        if isinstance(evaluators, DatasetEvaluator):
            evaluators = [evaluators]
        if evaluators is not None and len(evaluators) != len(names):
            raise ValueError(
                f"DefaultTrainer.test got {len(evaluators)} evaluators for the "
                f"{len(names)} datasets of DATASETS.TEST {names}: give one per dataset, in "
                "that order (None builds the default one), or none at all."
            )
        if isinstance(model, DistributedDataParallel):
            model = model.module
        results: OrderedDict = OrderedDict()
        for index, name in enumerate(names):
            loader = cls.build_test_loader(cfg, name)
            evaluator = evaluators[index] if evaluators is not None else None
            if evaluator is None:
                evaluator = cls.build_evaluator(cfg, name)
            results[name] = inference_on_dataset(model, loader, evaluator)
            if comm.is_main_process():
                print_results(name, results[name])
        if len(results) == 1:
            return OrderedDict(next(iter(results.values())))
        return results
