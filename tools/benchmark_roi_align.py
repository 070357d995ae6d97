#!/usr/bin/env python3
"""Time RoIAlign forward + backward: torchvision's kernel against detkit's separable one.

    python tools/benchmark_roi_align.py [--rois 256] [--channels 256] [--size 16 20]
                                        [--resolution 7] [--sampling-ratio 2] [--repeats 10]

Prints the median milliseconds of each and their ratio, on this machine's CPU (or CUDA with
--device cuda). Both compute the same values (tests/layers/test_roi_align_separable.py).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from torchvision.ops import roi_align  # noqa: E402

from detkit.layers.roi_align_separable import roi_align_separable  # noqa: E402
from detkit.utils.cli import add_debug_argument, run_cli  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--rois", type=int, default=256, help="RoIs in the batch")
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--size", type=int, nargs=2, default=[16, 20], help="map H W")
    parser.add_argument("--stride", type=int, default=16)
    parser.add_argument("--resolution", type=int, default=7)
    parser.add_argument("--sampling-ratio", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    h, w = args.size
    feature = torch.randn(args.images, args.channels, h, w, device=args.device, requires_grad=True)
    per_image = args.rois // args.images
    boxes = []
    for _ in range(args.images):
        xy = torch.rand(per_image, 2) * torch.tensor([w * args.stride * 0.8, h * args.stride * 0.8])
        wh = torch.rand(per_image, 2) * args.stride * 6 + args.stride
        boxes.append(torch.cat([xy, xy + wh], dim=1).to(args.device))

    def run(fn) -> float:
        times = []
        for _ in range(args.repeats + 2):
            start = time.perf_counter()
            out = fn()
            out.sum().backward()
            feature.grad = None
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        return statistics.median(times[2:]) * 1e3

    scale, p, s = 1 / args.stride, args.resolution, args.sampling_ratio
    tv = run(lambda: roi_align(feature, boxes, p, scale, s, True))
    sep = run(lambda: roi_align_separable(feature, boxes, p, scale, s, True))
    print(
        f"{args.rois} RoIs, {args.channels} x {h} x {w} maps, {p}x{p} bins, "
        f"sampling ratio {s}, {args.device}, {torch.get_num_threads()} threads"
    )
    print(f"torchvision roi_align   forward+backward: {tv:8.1f} ms")
    print(f"separable roi_align     forward+backward: {sep:8.1f} ms  ({tv / sep:.1f}x faster)")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
