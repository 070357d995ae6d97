#!/usr/bin/env python3
"""Train a config for many iterations and print the resident memory over time.

    python tools/benchmark_memory.py --config-file configs/quickstart/shapes.yaml
        [--iters 1000] [--every 50] [--warmup 300] [KEY VALUE ...]

The real training run (DefaultTrainer with its hooks: metric writers, checkpoints, timers),
into a temporary OUTPUT_DIR and without evaluation, with the resident set of the main
process and of its data-loader workers sampled every ``--every`` iterations. After the
warm-up the memory should stay flat: the medians of the two halves of the later samples and
the trend per 1,000 iterations (a robust slope) are printed (a leak is a steady trend), never
asserted. The iteration time is printed beside them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from detkit.config import get_cfg  # noqa: E402
from detkit.engine import DefaultTrainer, HookBase, seed_all_rng  # noqa: E402
from detkit.utils.cli import add_debug_argument, run_cli  # noqa: E402
from detkit.utils.memory import child_pids, release_free_memory, resident_mb  # noqa: E402


class MemorySampler(HookBase):
    """Records (iteration, seconds, main MiB, main MiB in use, workers MiB) every ``every``
    iterations; "in use" is measured after the allocator returned its free pages (only
    with ``release``, else NaN)."""

    def __init__(self, every: int, release: bool = False):
        self.every = every
        self.release = release
        self.samples: list[tuple[int, float, float, float, float]] = []
        self._start = 0.0

    def before_train(self) -> None:
        self._start = time.perf_counter()

    def after_step(self) -> None:
        done = self.trainer.iter + 1
        if done % self.every == 0 or done == self.trainer.max_iter:
            workers = sum(resident_mb(pid) for pid in child_pids())
            resident = resident_mb()
            released = self.release and release_free_memory()
            in_use = resident_mb() if released else float("nan")
            self.samples.append(
                (done, time.perf_counter() - self._start, resident, in_use, workers)
            )


def flatness_summary(samples: list[tuple[int, float]], label: str) -> str:
    """Whether memory stays flat over ``(iteration, MiB)`` samples: the median of the
    second half against the first half's, and the trend per 1,000 iterations (Theil-Sen:
    a leak is a steady trend; the allocator returning memory to the system shows as a
    single low sample, which moves neither figure much)."""
    half = len(samples) // 2
    first = statistics.median(m for _, m in samples[:half])
    second = statistics.median(m for _, m in samples[half:])
    ys = [m for _, m in samples]
    # Theil-Sen: the median of the slopes between every two samples.
    slope = statistics.median(
        (b[1] - a[1]) / (b[0] - a[0]) for k, a in enumerate(samples) for b in samples[k + 1 :]
    )
    return (
        f"{label} after warm-up (iterations {samples[0][0]}-{samples[-1][0]}): median "
        f"{first:.0f} MiB in the first half, {second:.0f} MiB in the second "
        f"({second / first - 1:+.1%}); trend {1000 * slope:+.0f} MiB per 1,000 iterations "
        f"({1000 * slope / first:+.1%}); samples {min(ys):.0f}-{max(ys):.0f} MiB"
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
    parser.add_argument(
        "--warmup",
        type=int,
        default=300,
        help="iterations before memory should be flat (the allocator's pools grow while "
        "images of new sizes pass through)",
    )
    parser.add_argument(
        "--release-free-memory",
        action="store_true",
        help="at each sample, have the C allocator return its free pages first (glibc "
        "malloc_trim) and print the memory in use beside the resident set",
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="detkit_memory_") as output_dir:
        cfg = get_cfg()
        cfg.merge_from_file(args.config_file)
        cfg.merge_from_list(args.opts)
        cfg.merge_from_list(
            [
                "SOLVER.MAX_ITER",
                args.iters,
                "TEST.EVAL_PERIOD",
                0,
                "DATASETS.TEST",
                [],
                "OUTPUT_DIR",
                output_dir,
            ]
        )
        cfg.freeze()
        seed_all_rng(max(cfg.SEED, 0))
        trainer = _Trainer(cfg)
        trainer.sampler = MemorySampler(args.every, args.release_free_memory)
        trainer.train()
    samples = trainer.sampler.samples
    print(f"config: {args.config_file} {' '.join(args.opts)}")
    print(
        f"device: {cfg.MODEL.DEVICE}, torch threads: {torch.get_num_threads()}, "
        f"images per iteration: {cfg.SOLVER.IMS_PER_BATCH}, "
        f"data-loader workers: {cfg.DATALOADER.NUM_WORKERS}"
    )
    in_use_header = f" {'in use MiB':>11}" if args.release_free_memory else ""
    print(
        f"{'iteration':>9} {'seconds':>8} {'main MiB':>9}{in_use_header} "
        f"{'workers MiB':>12} {'total MiB':>10}"
    )
    for done, seconds, main_mb, in_use_mb, workers_mb in samples:
        in_use = f" {in_use_mb:>11.1f}" if args.release_free_memory else ""
        print(
            f"{done:>9} {seconds:>8.1f} {main_mb:>9.1f}{in_use} "
            f"{workers_mb:>12.1f} {main_mb + workers_mb:>10.1f}"
        )
    after = [s for s in samples if s[0] > args.warmup]
    if len(after) >= 4:
        print(flatness_summary([(s[0], s[2] + s[4]) for s in after], "total"))
        print(flatness_summary([(s[0], s[2]) for s in after], "main"))
        if args.release_free_memory:
            print(flatness_summary([(s[0], s[3]) for s in after], "main in use"))
    seconds_per_iter = (samples[-1][1] - samples[0][1]) / max(samples[-1][0] - samples[0][0], 1)
    print(f"iteration time (hooks included): {1e3 * seconds_per_iter:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
