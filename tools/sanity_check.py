#!/usr/bin/env python3
"""Overfit the quickstart-size Faster R-CNN on one synthetic image, on the CPU.

A detector that cannot memorize one image with two objects cannot learn anything; this
checks the whole training and inference path in seconds, with no data to download:

    python tools/sanity_check.py [--config-file configs/quickstart/faster_rcnn_tiny.yaml]
                                 [--iters 100] [--output output/sanity_check]

It prints the losses as they fall, then the detections with their IoU against the two
ground-truth boxes, and writes the image with the detections drawn.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from detkit.config import get_cfg  # noqa: E402
from detkit.modeling import build_model  # noqa: E402
from detkit.structures import pairwise_iou  # noqa: E402
from detkit.utils.cli import add_debug_argument, run_cli  # noqa: E402
from detkit.utils.synthetic import two_shapes_example  # noqa: E402

CLASS_NAMES = ["rectangle", "(unused)", "disc"]


def draw(image: torch.Tensor, boxes, labels: list[str], path: str) -> None:
    """Write an RGB 0-255 image tensor with labelled boxes to ``path`` (PNG)."""
    canvas = cv2.cvtColor(image.permute(1, 2, 0).clamp(0, 255).byte().numpy(), cv2.COLOR_RGB2BGR)
    canvas = np.ascontiguousarray(cv2.resize(canvas, None, fx=3, fy=3))
    for (x1, y1, x2, y2), text in zip(boxes.tolist(), labels):
        p1, p2 = (int(x1 * 3), int(y1 * 3)), (int(x2 * 3), int(y2 * 3))
        cv2.rectangle(canvas, p1, p2, (0, 255, 255), 2)
        cv2.putText(
            canvas,
            text,
            (p1[0] + 3, p1[1] + 16),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.5,
            (0, 255, 255),
            1,
            cv2.LINE_AA,
        )
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    cv2.imwrite(path, canvas)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", default="configs/quickstart/faster_rcnn_tiny.yaml")
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--output", default="output/sanity_check")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    add_debug_argument(parser)
    args = parser.parse_args(argv)

    cfg = get_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    torch.manual_seed(0)
    model = build_model(cfg)
    example = two_shapes_example()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=args.lr, momentum=0.9, weight_decay=1e-4)
    print(
        f"Training {cfg.MODEL.META_ARCHITECTURE} ({cfg.MODEL.BACKBONE.NAME}) on one image "
        f"with two objects for {args.iters} iterations on {next(model.parameters()).device}"
    )
    model.train()
    start = time.perf_counter()
    for it in range(args.iters):
        losses = model([example])
        total = sum(losses.values())
        if not torch.isfinite(total):
            print(f"iter {it}: non-finite loss { ({k: v.item() for k, v in losses.items()}) }")
            return 1
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        if it % 20 == 0 or it == args.iters - 1:
            parts = "  ".join(f"{k} {v.item():.4f}" for k, v in losses.items())
            print(f"iter {it:4d}  total {total.item():.4f}  {parts}")
    print(f"trained in {time.perf_counter() - start:.1f} s")

    model.eval()
    with torch.no_grad():
        det = model([example])[0]["instances"]
    gt = example["instances"]
    keep = det.scores > 0.5
    det = det[keep]
    iou = pairwise_iou(gt.gt_boxes, det.pred_boxes)
    found = 0
    for i in range(len(gt)):
        name = CLASS_NAMES[int(gt.gt_classes[i])]
        if len(det) == 0 or iou[i].max() <= 0.7:
            print(f"  {name}: not detected")
            continue
        j = int(iou[i].argmax())
        ok = det.pred_classes[j] == gt.gt_classes[i]
        found += int(ok)
        print(
            f"  {name}: detected as {CLASS_NAMES[int(det.pred_classes[j])]}, "
            f"score {det.scores[j]:.3f}, IoU {iou[i, j]:.3f}"
        )
    labels = [f"{CLASS_NAMES[int(c)]} {s:.2f}" for c, s in zip(det.pred_classes, det.scores)]
    path = os.path.join(args.output, "detections.png")
    draw(example["image"], det.pred_boxes.tensor, labels, path)
    print(f"{found}/{len(gt)} objects detected with IoU > 0.7 and the right class; picture: {path}")
    return 0 if found == len(gt) else 1


if __name__ == "__main__":
    sys.exit(run_cli(main))
