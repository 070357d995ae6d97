#!/usr/bin/env python3
"""Profile training iterations phase by phase on this machine, and print the figures.

    python tools/benchmark.py --config-file configs/quickstart/shapes.yaml [--iters 30]
        [--warmup 5] [KEY VALUE ...]

Phases of one iteration, each timed on its own (median, mean and share over the measured
iterations): data (waiting for the next batch from the loader), backbone, RPN, ROI heads
(forward, losses included), backward, optimizer step. Also the throughput in images/s.
Figures are printed, never asserted: compare two configs, or a change, in one session.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from detkit.config import get_cfg  # noqa: E402
from detkit.data import build_detection_train_loader  # noqa: E402
from detkit.engine import seed_all_rng  # noqa: E402
from detkit.modeling import build_model  # noqa: E402
from detkit.solver import build_optimizer  # noqa: E402
from detkit.utils.cli import add_debug_argument, run_cli  # noqa: E402

PHASES = ("data", "backbone", "rpn", "roi_heads", "backward", "optimizer")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def profile(cfg, iters: int, warmup: int) -> dict[str, list[float]]:
    """Seconds of each phase, per measured iteration."""
    seed_all_rng(max(cfg.SEED, 0))
    model = build_model(cfg)
    model.train()
    optimizer = build_optimizer(cfg, model)
    loader = iter(build_detection_train_loader(cfg))
    device = model.device
    times: dict[str, list[float]] = {p: [] for p in PHASES}
    for it in range(warmup + iters):
        marks = [time.perf_counter()]
        batch = next(loader)
        marks.append(time.perf_counter())
        images = model.preprocessor(batch)
        gt = model.preprocessor.ground_truth(batch)
        features = model.backbone(images.tensor)
        _sync(device)
        marks.append(time.perf_counter())
        proposals, losses = model.proposal_generator(images, features, gt)
        _sync(device)
        marks.append(time.perf_counter())
        if hasattr(model, "roi_heads"):
            _, detector_losses = model.roi_heads(images, features, proposals, gt)
            losses = {**losses, **detector_losses}
        _sync(device)
        marks.append(time.perf_counter())
        optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        _sync(device)
        marks.append(time.perf_counter())
        optimizer.step()
        _sync(device)
        marks.append(time.perf_counter())
        if it >= warmup:
            for phase, start, end in zip(PHASES, marks[:-1], marks[1:]):
                times[phase].append(end - start)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--iters", type=int, default=30, help="measured iterations")
    parser.add_argument("--warmup", type=int, default=5, help="iterations not measured")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    cfg = get_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    times = profile(cfg, args.iters, args.warmup)
    total = [sum(step) for step in zip(*times.values())]
    print(f"config: {args.config_file} {' '.join(args.opts)}")
    print(
        f"device: {cfg.MODEL.DEVICE}, torch threads: {torch.get_num_threads()}, "
        f"images per iteration: {cfg.SOLVER.IMS_PER_BATCH}, "
        f"measured iterations: {args.iters} (after {args.warmup} warm-up)"
    )
    print(f"{'phase':<10} {'median ms':>10} {'mean ms':>9} {'share':>6}")
    mean_total = statistics.mean(total)
    for phase in PHASES:
        values = times[phase]
        mean = statistics.mean(values)
        print(
            f"{phase:<10} {1e3 * statistics.median(values):>10.1f} {1e3 * mean:>9.1f} "
            f"{mean / mean_total:>6.1%}"
        )
    print(f"{'total':<10} {1e3 * statistics.median(total):>10.1f} {1e3 * mean_total:>9.1f}")
    print(f"throughput: {cfg.SOLVER.IMS_PER_BATCH / mean_total:.2f} images/s")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
