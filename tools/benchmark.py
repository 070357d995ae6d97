#!/usr/bin/env python3
"""Profile training iterations (or inference) phase by phase on this machine, and print the
figures.

    python tools/benchmark.py --config-file configs/quickstart/shapes.yaml [--iters 30]
        [--warmup 5] [--inference] [KEY VALUE ...]

Phases of one training iteration, each timed on its own (median, mean and share over the
measured iterations): data (waiting for the next batch from the loader), backbone, RPN, ROI
heads (forward, losses included), backward, optimizer step. Also the throughput in images/s.

With --inference: one image per iteration, in eval mode, the model set up as
``DefaultPredictor`` sets it up (``MODEL.MEMORY_FORMAT measure``,
``MODEL.ROI_BOX_HEAD.QUANTIZE``), on a random image of the test size (``INPUT.MIN_SIZE_TEST``
by 4/3 of it, e.g. 600 x 800): preprocess (normalize, pad), backbone, the RPN's head (its
convs), proposals (anchors, box decoding, top-k, NMS), pooler, box head (e.g. fc6/fc7), box
predictor, and postprocess (per-class boxes and NMS, rescaling). Two overheads are printed:
everything but the backbone and the box head, and the glue: everything but learned layers
and the pooling kernel (preprocess, proposals, postprocess).

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
INFERENCE_PHASES = (
    "preprocess",
    "backbone",
    "rpn_head",
    "proposals",
    "pooler",
    "box_head",
    "predictor",
    "postprocess",
)
GLUE_PHASES = ("preprocess", "proposals", "postprocess")  # no learned layer, no pooling
# Submodules timed inside the RPN and the ROI heads: (phase, path in the model).
_WATCHED = (
    ("rpn_head", "proposal_generator.head"),
    ("pooler", "roi_heads.pooler"),
    ("box_head", "roi_heads.box_head"),
    ("predictor", "roi_heads.box_predictor"),
)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def profile(cfg, iters: int, warmup: int) -> dict[str, list[float]]:
    """Seconds of each phase, per measured iteration."""
    from detkit.modeling.meta_arch import select_memory_format

    seed_all_rng(max(cfg.SEED, 0))
    # As DefaultTrainer builds it: MODEL.MEMORY_FORMAT "measure" times the layouts first.
    model = select_memory_format(cfg, build_model(cfg), "training")
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


class _Stopwatch:
    """Wall time spent inside one module's forward, summed over its calls (forward hooks)."""

    def __init__(self, module: torch.nn.Module, device: torch.device):
        self.seconds, self._start, self._device = 0.0, 0.0, device
        module.register_forward_pre_hook(self._enter)
        module.register_forward_hook(self._exit)

    def _enter(self, *_) -> None:
        _sync(self._device)
        self._start = time.perf_counter()

    def _exit(self, *_) -> None:
        _sync(self._device)
        self.seconds += time.perf_counter() - self._start


@torch.no_grad()
def profile_inference(cfg, iters: int, warmup: int) -> dict[str, list[float]]:
    """Seconds of each inference phase, per measured image (one random image per call)."""
    from detkit.modeling.meta_arch import detector_postprocess, select_memory_format
    from detkit.modeling.roi_heads import quantize_box_head

    seed_all_rng(max(cfg.SEED, 0))
    model = select_memory_format(cfg, build_model(cfg).eval(), "inference")
    model = quantize_box_head(cfg, model)
    device = model.device
    height = int(cfg.INPUT.MIN_SIZE_TEST)
    width = int(round(height * 4 / 3))
    image = torch.randint(0, 256, (3, height, width), generator=torch.Generator().manual_seed(0))
    batch = [{"image": image.float(), "height": height, "width": width}]
    watches = {}
    for phase, path in _WATCHED:
        try:
            watches[phase] = _Stopwatch(model.get_submodule(path), device)
        except AttributeError:
            pass  # e.g. a proposal network has no ROI heads: the phase stays at 0
    times: dict[str, list[float]] = {p: [] for p in INFERENCE_PHASES}
    for it in range(warmup + iters):
        for watch in watches.values():
            watch.seconds = 0.0
        marks = [time.perf_counter()]
        images = model.preprocessor(batch)
        _sync(device)
        marks.append(time.perf_counter())
        features = model.backbone(images.tensor)
        _sync(device)
        marks.append(time.perf_counter())
        proposals, _ = model.proposal_generator(images, features, None)
        _sync(device)
        marks.append(time.perf_counter())
        if hasattr(model, "roi_heads"):
            detections, _ = model.roi_heads(images, features, proposals, None)
            detector_postprocess(detections[0], height, width)
        _sync(device)
        marks.append(time.perf_counter())
        if it < warmup:
            continue
        step = {phase: watch.seconds for phase, watch in watches.items()}
        rpn_head = step.get("rpn_head", 0.0)
        in_roi_heads = sum(v for k, v in step.items() if k != "rpn_head")
        step["preprocess"] = marks[1] - marks[0]
        step["backbone"] = marks[2] - marks[1]
        step["proposals"] = marks[3] - marks[2] - rpn_head
        step["postprocess"] = marks[4] - marks[3] - in_roi_heads
        for phase in INFERENCE_PHASES:
            times[phase].append(step.get(phase, 0.0))
    return times


def _print_table(phases: tuple[str, ...], times: dict[str, list[float]]) -> list[float]:
    total = [sum(step) for step in zip(*(times[p] for p in phases))]
    print(f"{'phase':<10} {'median ms':>10} {'mean ms':>9} {'share':>6}")
    mean_total = statistics.mean(total)
    for phase in phases:
        values = times[phase]
        mean = statistics.mean(values)
        print(
            f"{phase:<10} {1e3 * statistics.median(values):>10.1f} {1e3 * mean:>9.1f} "
            f"{mean / mean_total:>6.1%}"
        )
    print(f"{'total':<10} {1e3 * statistics.median(total):>10.1f} {1e3 * mean_total:>9.1f}")
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--iters", type=int, default=30, help="measured iterations")
    parser.add_argument("--warmup", type=int, default=5, help="iterations not measured")
    parser.add_argument(
        "--inference", action="store_true", help="time inference on one image instead"
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    cfg = get_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    print(f"config: {args.config_file} {' '.join(args.opts)}")
    if args.inference:
        times = profile_inference(cfg, args.iters, args.warmup)
        print(
            f"device: {cfg.MODEL.DEVICE}, torch threads: {torch.get_num_threads()}, inference "
            f"on a {cfg.INPUT.MIN_SIZE_TEST}x{round(cfg.INPUT.MIN_SIZE_TEST * 4 / 3)} image, "
            f"measured images: {args.iters} (after {args.warmup} warm-up)"
        )
        total = _print_table(INFERENCE_PHASES, times)
        overhead = [t - b - h for t, b, h in zip(total, times["backbone"], times["box_head"])]
        glue = [sum(parts) for parts in zip(*(times[p] for p in GLUE_PHASES))]
        for label, values in (("all but backbone and box head", overhead), ("glue", glue)):
            print(
                f"overhead ({label}): {1e3 * statistics.median(values):.1f} ms, "
                f"{statistics.mean(values) / statistics.mean(total):.1%} of the total"
            )
        return 0
    times = profile(cfg, args.iters, args.warmup)
    print(
        f"device: {cfg.MODEL.DEVICE}, torch threads: {torch.get_num_threads()}, "
        f"images per iteration: {cfg.SOLVER.IMS_PER_BATCH}, "
        f"measured iterations: {args.iters} (after {args.warmup} warm-up)"
    )
    total = _print_table(PHASES, times)
    print(f"throughput: {cfg.SOLVER.IMS_PER_BATCH / statistics.mean(total):.2f} images/s")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
