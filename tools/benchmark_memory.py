#!/usr/bin/env python3
"""Train a config for many iterations and print the resident memory over time.

    python tools/benchmark_memory.py --config-file configs/quickstart/shapes.yaml
        [--iters 1000] [--every 50] [--warmup 100] [KEY VALUE ...]

The real training run (DefaultTrainer with its hooks: metric writers, checkpoints, timers),
into a temporary OUTPUT_DIR and without evaluation, with the resident set of the main
process and of its data-loader workers sampled every ``--every`` iterations. After the
warm-up the memory should stay flat: the growth from the first sample after warm-up to the
last, and the largest excursion, are printed (a leak shows as steady growth), never
asserted. The iteration time is printed beside them.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from detkit.config import get_cfg  # noqa: E402
from detkit.engine import DefaultTrainer, HookBase, seed_all_rng  # noqa: E402
from detkit.utils.cli import add_debug_argument, run_cli  # noqa: E402
from detkit.utils.memory import child_pids, resident_mb  # noqa: E402


class MemorySampler(HookBase):
    """Records (iteration, seconds, main MiB, workers MiB) every ``every`` iterations."""

    def __init__(self, every: int):
        self.every = every
        self.samples: list[tuple[int, float, float, float]] = []
        self._start = 0.0

    def before_train(self) -> None:
        self._start = time.perf_counter()

    def after_step(self) -> None:
        done = self.trainer.iter + 1
        if done % self.every == 0 or done == self.trainer.max_iter:
            workers = sum(resident_mb(pid) for pid in child_pids())
            self.samples.append(
                (done, time.perf_counter() - self._start, resident_mb(), workers)
            )


class _Trainer(DefaultTrainer):
    sampler: MemorySampler

    def build_hooks(self):
        return [*super().build_hooks(), self.sampler]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--iters", type=int, default=1000, help="training iterations")
    parser.add_argument("--every", type=int, default=50, help="sample every N iterations")
    parser.add_argument("--warmup", type=int, default=100, help="iterations before 'flat'")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="detkit_memory_") as output_dir:
        cfg = get_cfg()
        cfg.merge_from_file(args.config_file)
        cfg.merge_from_list(args.opts)
        cfg.merge_from_list([
            "SOLVER.MAX_ITER", args.iters, "TEST.EVAL_PERIOD", 0, "DATASETS.TEST", [],
            "OUTPUT_DIR", output_dir,
        ])
        cfg.freeze()
        seed_all_rng(max(cfg.SEED, 0))
        trainer = _Trainer(cfg)
        trainer.sampler = MemorySampler(args.every)
        trainer.train()
    samples = trainer.sampler.samples
    print(f"config: {args.config_file} {' '.join(args.opts)}")
    print(f"device: {cfg.MODEL.DEVICE}, torch threads: {torch.get_num_threads()}, "
          f"images per iteration: {cfg.SOLVER.IMS_PER_BATCH}, "
          f"data-loader workers: {cfg.DATALOADER.NUM_WORKERS}")
    print(f"{'iteration':>9} {'seconds':>8} {'main MiB':>9} {'workers MiB':>12} {'total MiB':>10}")
    for done, seconds, main_mb, workers_mb in samples:
        print(f"{done:>9} {seconds:>8.1f} {main_mb:>9.1f} {workers_mb:>12.1f} "
              f"{main_mb + workers_mb:>10.1f}")
    after = [s for s in samples if s[0] > args.warmup]
    if len(after) >= 2:
        totals = [main_mb + workers_mb for _, _, main_mb, workers_mb in after]
        mains = [main_mb for _, _, main_mb, _ in after]
        print(f"after warm-up (iteration {after[0][0]} to {after[-1][0]}): total "
              f"{totals[-1] - totals[0]:+.1f} MiB ({totals[-1] / totals[0] - 1:+.1%}), "
              f"range {min(totals):.1f}-{max(totals):.1f} MiB "
              f"({max(totals) / min(totals) - 1:.1%} of the lowest); main process "
              f"{mains[-1] - mains[0]:+.1f} MiB ({mains[-1] / mains[0] - 1:+.1%})")
    seconds_per_iter = (samples[-1][1] - samples[0][1]) / max(samples[-1][0] - samples[0][0], 1)
    print(f"iteration time (hooks included): {1e3 * seconds_per_iter:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
