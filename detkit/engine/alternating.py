"""4-step alternating training (paper 3.2), one command: ``SOLVER.SCHEME alternating``.

1. Train the RPN (``ProposalNetwork``) from the initial weights (``MODEL.WEIGHTS``, e.g.
   ImageNet); write its proposals for every training and test dataset.
2. Train Fast R-CNN (``PrecomputedProposals``) from the initial weights on step 1's
   proposals. Its evaluation on step 1's test proposals is the "unshared" result.
3. Initialize from step 2, freeze the shared layers (``ALTERNATING.SHARED_MODULES``), train
   the RPN's own layers (new, as in the released code); write its proposals.
4. Initialize from step 2 with step 3's shared layers, keep them frozen, fine-tune the
   Fast R-CNN layers on step 3's proposals.

The result is one Faster R-CNN (the config's own model: ``GeneralizedRCNN`` with an RPN)
whose backbone is shared by both heads: step 4's backbone and ROI heads with step 3's RPN,
in ``OUTPUT_DIR/model_final.pth``. ``train_net.py --eval-only`` and ``demo.py`` load it like
any other model. Each step runs in its own folder (``OUTPUT_DIR/step1_rpn`` ...) with its own
config, metrics and checkpoints; ``--resume`` skips finished steps (their ``summary.json``)
and continues the interrupted one from its last checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

import torch

from detkit.config import CfgNode
from detkit.engine.defaults import DefaultTrainer, seed_all_rng
from detkit.engine.summary import summarize_results, summary_message, write_summary
from detkit.utils import comm
from detkit.utils.io import atomic_write, atomic_write_text

__all__ = ["STEP_FOLDERS", "AlternatingTrainer"]

logger = logging.getLogger("detkit")

#: Output folder of each step, under OUTPUT_DIR.
STEP_FOLDERS = {1: "step1_rpn", 2: "step2_fast_rcnn", 3: "step3_rpn", 4: "step4_fast_rcnn"}

_NO_LIMIT = 2**31 - 1  # ALTERNATING.DUMP_PRE_NMS_TOPK -1: every box goes to NMS


class AlternatingTrainer:
    """Runs the four steps of a config whose ``SOLVER.SCHEME`` is "alternating".

    Args:
        cfg: the final model's config (``GeneralizedRCNN`` with an RPN), with the steps'
            schedules in ``ALTERNATING.STEP1`` ... ``STEP4``.
    """

    def __init__(self, cfg: CfgNode):
        if cfg.MODEL.META_ARCHITECTURE != "GeneralizedRCNN" or (
            cfg.MODEL.PROPOSAL_GENERATOR.NAME != "RPN"
        ):
            raise ValueError(
                "SOLVER.SCHEME 'alternating' trains a Faster R-CNN: MODEL.META_ARCHITECTURE "
                "must be GeneralizedRCNN and MODEL.PROPOSAL_GENERATOR.NAME RPN (got "
                f"{cfg.MODEL.META_ARCHITECTURE} and {cfg.MODEL.PROPOSAL_GENERATOR.NAME})."
            )
        if not cfg.DATASETS.TRAIN:
            raise ValueError("Alternating training needs DATASETS.TRAIN.")
        self.cfg = cfg
        self.step_configs = {step: self.step_config(step) for step in STEP_FOLDERS}
        self.step_summaries: dict[int, dict] = {}

    def folder(self, step: int) -> str:
        return os.path.join(self.cfg.OUTPUT_DIR, STEP_FOLDERS[step])

    def proposal_file(self, step: int, dataset: str) -> str:
        """Where RPN step ``step`` (1 or 3) writes the proposals of ``dataset``."""
        return os.path.join(self.folder(step), "inference", dataset, "proposals.npz")

    def step_config(self, step: int) -> CfgNode:
        """The config of one step: its schedule, model, weights, frozen modules and
        proposal files. Built (and so checked) for all four steps before step 1 starts."""
        cfg = self.cfg.clone()
        cfg.defrost()
        node = cfg.ALTERNATING[f"STEP{step}"]
        cfg.SOLVER.SCHEME = "joint"  # each step is an ordinary training run
        cfg.SOLVER.MAX_ITER = node.MAX_ITER
        cfg.SOLVER.STEPS = list(node.STEPS)
        cfg.SOLVER.IMS_PER_BATCH = node.IMS_PER_BATCH
        cfg.SOLVER.ITER_SIZE = node.ITER_SIZE
        cfg.OUTPUT_DIR = self.folder(step)
        frozen = list(cfg.MODEL.FROZEN_MODULES)
        if step >= 3:
            frozen += [m for m in cfg.ALTERNATING.SHARED_MODULES if m not in frozen]
        cfg.MODEL.FROZEN_MODULES = frozen
        if step in (1, 3):
            cfg.MODEL.META_ARCHITECTURE = "ProposalNetwork"
            pre = cfg.ALTERNATING.DUMP_PRE_NMS_TOPK
            cfg.MODEL.RPN.PRE_NMS_TOPK_TEST = _NO_LIMIT if pre < 0 else pre
            cfg.MODEL.RPN.POST_NMS_TOPK_TEST = cfg.ALTERNATING.DUMP_POST_NMS_TOPK
            cfg.TEST.SAVE_PROPOSALS = True
            cfg.DATASETS.PROPOSAL_FILES_TRAIN = []
            cfg.DATASETS.PROPOSAL_FILES_TEST = []
        else:
            rpn_step = step - 1
            cfg.MODEL.PROPOSAL_GENERATOR.NAME = "PrecomputedProposals"
            cfg.DATASETS.PROPOSAL_FILES_TRAIN = [
                self.proposal_file(rpn_step, d) for d in cfg.DATASETS.TRAIN
            ]
            cfg.DATASETS.PROPOSAL_FILES_TEST = [
                self.proposal_file(rpn_step, d) for d in cfg.DATASETS.TEST
            ]
        if step == 3:
            cfg.MODEL.WEIGHTS = os.path.join(self.folder(2), "model_final.pth")
        elif step == 4:
            cfg.MODEL.WEIGHTS = os.path.join(self.cfg.OUTPUT_DIR, "step4_initial_weights.pth")
        try:
            cfg.merge_from_list(list(node.OPTS))
        except (KeyError, ValueError, TypeError) as e:
            raise type(e)(f"ALTERNATING.STEP{step}.OPTS: {e}") from e
        cfg.freeze()
        return cfg

    def train(self, resume: bool = False) -> dict:
        """Run the steps (skipping finished ones with ``resume``), assemble the shared
        model, evaluate it on ``DATASETS.TEST`` and write ``OUTPUT_DIR/summary.json``.

        Returns:
            The final model's evaluation results.
        """
        start = time.perf_counter()
        for step in STEP_FOLDERS:
            self.step_summaries[step] = self._run_step(step, resume)
        return self._finish(time.perf_counter() - start)

    def _run_step(self, step: int, resume: bool) -> dict:
        cfg = self.step_configs[step]
        done = os.path.join(cfg.OUTPUT_DIR, "summary.json")
        if resume and os.path.isfile(done):
            logger.info(f"Alternating step {step} ({STEP_FOLDERS[step]}) already done: {done}")
            with open(done, encoding="utf-8") as f:
                return json.load(f)
        logger.info(
            f"Alternating step {step} ({STEP_FOLDERS[step]}): {cfg.SOLVER.MAX_ITER} iterations, "
            f"{cfg.MODEL.META_ARCHITECTURE} with {cfg.MODEL.PROPOSAL_GENERATOR.NAME}, weights "
            f"{cfg.MODEL.WEIGHTS or '(none)'}, frozen {list(cfg.MODEL.FROZEN_MODULES) or 'none'}"
        )
        if step == 3:
            logger.info(
                "Step 3 takes step 2's backbone (frozen) and trains new RPN layers: step 2's ROI "
                "heads are not part of this step, so the checkpointer lists them as unused."
            )
        if step == 4:
            self._write_step4_weights()
        if comm.is_main_process():
            os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
            atomic_write_text(os.path.join(cfg.OUTPUT_DIR, "config.yaml"), cfg.dump())
        seed_all_rng(cfg.SEED + 1000 * step + comm.get_rank())
        trainer = DefaultTrainer(cfg)
        trainer.resume_or_load(resume=resume)
        results = trainer.train()
        if step in (1, 3):
            self._write_training_proposals(cfg, trainer.model)
        summary: dict[str, Any] = {
            "step": step,
            "training_time_s": round(trainer.train_time, 1),
            "iterations": cfg.SOLVER.MAX_ITER,
            **summarize_results(results),
        }
        if comm.is_main_process():
            write_summary(cfg.OUTPUT_DIR, summary)
        comm.synchronize()
        return summary

    def _write_training_proposals(self, cfg: CfgNode, model: torch.nn.Module) -> None:
        """Proposals of every training dataset (the test ones were written by the step's
        final evaluation), at the test-time input size, without flipping: the mapper moves
        them with each training image."""
        from detkit.data import build_detection_test_loader
        from detkit.evaluation import build_evaluator, inference_on_dataset

        if isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        for name in cfg.DATASETS.TRAIN:
            if name in cfg.DATASETS.TEST:
                continue  # already written
            loader = build_detection_test_loader(cfg, name)
            output_dir = os.path.join(cfg.OUTPUT_DIR, "inference", name)
            evaluator = build_evaluator(cfg, name, output_dir, "proposals")
            inference_on_dataset(model, loader, evaluator)

    def _write_step4_weights(self) -> None:
        """Step 4 starts from step 2's model with step 3's shared layers (the same tensors
        when the whole backbone was frozen in step 3, as in the paper)."""
        if not comm.is_main_process():
            comm.synchronize()
            return
        step2 = _load_state(os.path.join(self.folder(2), "model_final.pth"))
        step3 = _load_state(os.path.join(self.folder(3), "model_final.pth"))
        merged = dict(step2)
        merged.update({k: v for k, v in step3.items() if k in step2})
        path = os.path.join(self.cfg.OUTPUT_DIR, "step4_initial_weights.pth")
        atomic_write(path, lambda f: torch.save({"model": merged}, f))
        comm.synchronize()

    def assemble(self) -> str:
        """``OUTPUT_DIR/model_final.pth``: step 4's backbone and ROI heads with step 3's RPN.

        Returns:
            Its path. Raises ValueError when a step's model lacks what it must contribute.
        """
        step3 = _load_state(os.path.join(self.folder(3), "model_final.pth"))
        step4 = _load_state(os.path.join(self.folder(4), "model_final.pth"))
        rpn = {k: v for k, v in step3.items() if k.startswith("proposal_generator.")}
        if not rpn or not any(k.startswith("roi_heads.") for k in step4):
            raise ValueError(
                f"Cannot assemble the shared model from {self.folder(3)} and {self.folder(4)}: "
                "step 3 must hold the RPN (proposal_generator.*) and step 4 the ROI heads."
            )
        shared = [k for k in step4 if k in step3]
        differing = [k for k in shared if not torch.equal(step3[k], step4[k])]
        if differing:
            logger.warning(
                f"{len(differing)} shared tensors differ between steps 3 and 4 (e.g. "
                f"{differing[0]}): ALTERNATING.SHARED_MODULES does not freeze them, so the "
                "RPN was trained on other features than the detector uses."
            )
        path = os.path.join(self.cfg.OUTPUT_DIR, "model_final.pth")
        if comm.is_main_process():
            atomic_write(path, lambda f: torch.save({"model": {**step4, **rpn}}, f))
        comm.synchronize()
        self.num_shared_tensors = len(shared) - len(differing)
        return path

    def _finish(self, wall_time: float) -> dict:
        from detkit.checkpoint import DetectionCheckpointer
        from detkit.modeling import build_model

        path = self.assemble()
        cfg = self.cfg
        logger.info(f"Shared Faster R-CNN assembled: {path}; evaluating it.")
        model = build_model(cfg)
        DetectionCheckpointer(model, save_to_disk=False).load(path)
        results = DefaultTrainer.test(cfg, model)
        summary: dict[str, Any] = {
            "scheme": "alternating",
            "training_time_s": round(
                sum(s.get("training_time_s", 0.0) for s in self.step_summaries.values()), 1
            ),
            "wall_time_s": round(wall_time, 1),
            "iterations": sum(c.SOLVER.MAX_ITER for c in self.step_configs.values()),
            **summarize_results(results),
            "shared_tensors": self.num_shared_tensors,
            "steps": {STEP_FOLDERS[s]: v for s, v in self.step_summaries.items()},
        }
        unshared = self.step_summaries.get(2, {}).get("mAP@0.5")
        if unshared is not None:
            summary["unshared_mAP@0.5"] = unshared
        if comm.is_main_process():
            write_summary(cfg.OUTPUT_DIR, summary)
            logger.info(
                f"Final {summary_message(summary, list(cfg.DATASETS.TEST))} (shared features; "
                f"step 2, unshared: {unshared}). Training time "
                f"{summary['training_time_s'] / 60:.1f} min in 4 steps. Outputs in "
                f"{cfg.OUTPUT_DIR}"
            )
        return results


def _load_state(path: str) -> dict[str, torch.Tensor]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Alternating training expected the model {path}; rerun the step.")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    return checkpoint["model"] if isinstance(checkpoint, dict) and "model" in checkpoint else {}
