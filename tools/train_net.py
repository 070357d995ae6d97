#!/usr/bin/env python3
"""Train and evaluate a detector from a config.

    python tools/train_net.py --config-file configs/faster_rcnn_vgg16.yaml
    python tools/train_net.py --config-file configs/faster_rcnn_vgg16.yaml --resume
    python tools/train_net.py --config-file ... --overwrite   # replace a previous run's folder
    python tools/train_net.py --config-file configs/faster_rcnn_vgg16.yaml --eval-only \
        MODEL.WEIGHTS output/faster_rcnn_vgg16/model_final.pth
    python tools/train_net.py --config-file ... --num-gpus 8     # DDP, one process per GPU
    python tools/train_net.py --config-file configs/faster_rcnn_vgg16_alternating.yaml
        # SOLVER.SCHEME alternating: the paper's 4-step training, --resume continues it

Trailing KEY VALUE pairs override the config. Plugins listed in the config's IMPORTS are
imported before anything is built, so projects need no training script of their own.
An OUTPUT_DIR serves one run at a time (a lock file), and a folder holding another run's
checkpoints needs --resume or --overwrite. Errors print their message and what to do;
--debug (or DETKIT_DEBUG=1) adds the traceback.
"""

from __future__ import annotations

import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from detkit.engine import DefaultTrainer, default_argument_parser, launch, setup  # noqa: E402
from detkit.engine.summary import (  # noqa: E402
    summarize_results,
    summary_message,
    write_summary,
)
from detkit.modeling.meta_arch import check_num_classes  # noqa: E402
from detkit.utils import comm  # noqa: E402
from detkit.utils.cli import run_cli  # noqa: E402

logger = logging.getLogger("detkit")


def main(args) -> dict:
    cfg = setup(args)
    datasets = list(cfg.DATASETS.TEST)
    if args.eval_only:
        from detkit.checkpoint import DetectionCheckpointer
        from detkit.data.verify import verify_datasets
        from detkit.modeling import build_model
        from detkit.modeling.meta_arch import select_memory_format
        from detkit.modeling.roi_heads import quantize_box_head

        verify_datasets(cfg, cfg.DATASETS.TEST)  # every test set before the first is evaluated
        check_num_classes(cfg, datasets)  # training runs: DefaultTrainer checks
        model = select_memory_format(cfg, build_model(cfg), "inference")
        checkpointer = DetectionCheckpointer(model, cfg.OUTPUT_DIR)
        resuming = args.resume and checkpointer.has_checkpoint()
        if not cfg.MODEL.WEIGHTS and not resuming and not args.allow_random_weights:
            raise ValueError(
                "--eval-only without weights: MODEL.WEIGHTS is empty"
                + (" and OUTPUT_DIR has no checkpoint to --resume from" if args.resume else "")
                + ", so a randomly initialized model would be evaluated (near-zero AP). Give "
                "MODEL.WEIGHTS path/to/model_final.pth, or --allow-random-weights to "
                "evaluate the random model anyway (e.g. to time inference)."
            )
        checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        model = quantize_box_head(cfg, model.eval())  # MODEL.ROI_BOX_HEAD.QUANTIZE
        results = DefaultTrainer.test(cfg, model)
        if comm.is_main_process():
            summary = {
                "eval_only": True,
                "weights": cfg.MODEL.WEIGHTS,
                **summarize_results(results),
            }
            write_summary(cfg.OUTPUT_DIR, summary)
            logger.info(f"{summary_message(summary, datasets)}. Outputs in {cfg.OUTPUT_DIR}")
        return results
    if cfg.SOLVER.SCHEME == "alternating":
        from detkit.engine.alternating import AlternatingTrainer

        return AlternatingTrainer(cfg).train(resume=args.resume)
    if cfg.SOLVER.SCHEME != "joint":
        raise ValueError(
            f"SOLVER.SCHEME must be 'joint' or 'alternating'; got '{cfg.SOLVER.SCHEME}'."
        )
    trainer = DefaultTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    start = time.perf_counter()
    results = trainer.train()
    if comm.is_main_process():
        summary = {
            "scheme": "joint",
            "training_time_s": round(trainer.train_time, 1),
            "wall_time_s": round(time.perf_counter() - start, 1),
            "iterations": cfg.SOLVER.MAX_ITER,
            "start_iteration": trainer.start_iter,  # > 0 when resumed: times cover the rest
            "seed": cfg.SEED,
            **summarize_results(results if isinstance(results, dict) else {}),
        }
        write_summary(cfg.OUTPUT_DIR, summary)
        logger.info(
            f"Final {summary_message(summary, datasets)}. Training time "
            f"{trainer.train_time / 60:.1f} min. Outputs in {cfg.OUTPUT_DIR}"
        )
    return results


def argument_parser():
    """detkit's standard parser plus ``--allow-random-weights`` (evaluation only)."""
    parser = default_argument_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--allow-random-weights",
        action="store_true",
        help="with --eval-only and no MODEL.WEIGHTS, evaluate the random model anyway",
    )
    return parser


if __name__ == "__main__":
    args = argument_parser().parse_args()

    def run() -> None:
        launch(
            main, args.num_gpus, args.num_machines, args.machine_rank, args.dist_url, args=(args,)
        )

    sys.exit(run_cli(run, debug=args.debug))
