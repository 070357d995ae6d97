#!/usr/bin/env python3
"""Train and evaluate a detector from a config.

    python tools/train_net.py --config-file configs/faster_rcnn_vgg16.yaml
    python tools/train_net.py --config-file configs/faster_rcnn_vgg16.yaml --resume
    python tools/train_net.py --config-file configs/faster_rcnn_vgg16.yaml --eval-only \
        MODEL.WEIGHTS output/faster_rcnn_vgg16/model_final.pth
    python tools/train_net.py --config-file ... --num-gpus 8     # DDP, one process per GPU

Trailing KEY VALUE pairs override the config. Plugins listed in the config's IMPORTS are
imported before anything is built, so projects need no training script of their own.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from detkit.engine import DefaultTrainer, default_argument_parser, launch, setup  # noqa: E402
from detkit.utils import comm  # noqa: E402

logger = logging.getLogger("detkit")


def main(args) -> dict:
    cfg = setup(args)
    if args.eval_only:
        from detkit.checkpoint import DetectionCheckpointer
        from detkit.modeling import build_model

        model = build_model(cfg)
        DetectionCheckpointer(model, cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        return DefaultTrainer.test(cfg, model)
    trainer = DefaultTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    start = time.perf_counter()
    results = trainer.train()
    if comm.is_main_process():
        summary = {
            "training_time_s": round(trainer.train_time, 1),
            "wall_time_s": round(time.perf_counter() - start, 1),
            "iterations": cfg.SOLVER.MAX_ITER,
        }
        ap50 = results.get("bbox", {}).get("AP50") if isinstance(results, dict) else None
        if ap50 is not None:
            summary["mAP@0.5"] = round(ap50 / 100, 4)
        with open(os.path.join(cfg.OUTPUT_DIR, "summary.json"), "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2)
        message = f"Training time {trainer.train_time / 60:.1f} min"
        if ap50 is not None:
            datasets = ", ".join(cfg.DATASETS.TEST)
            message = f"Final VOC mAP@0.5 on {datasets}: {ap50 / 100:.3f}. " + message
        logger.info(message + f". Outputs in {cfg.OUTPUT_DIR}")
    return results


if __name__ == "__main__":
    args = default_argument_parser(__doc__.splitlines()[0]).parse_args()
    launch(main, args.num_gpus, args.num_machines, args.machine_rank, args.dist_url, args=(args,))
