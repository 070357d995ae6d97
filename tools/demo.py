#!/usr/bin/env python3
"""Run a trained detector on images and draw its detections.

    .venv/bin/python tools/demo.py --config-file configs/quickstart/shapes.yaml \
        --input photo.jpg more_images/ --output output/demo \
        MODEL.WEIGHTS output/quickstart/model_final.pth
    .venv/bin/python tools/demo.py --config-file configs/quickstart/shapes.yaml \
        --dataset shapes_test --max-images 8 --output output/quickstart/detections \
        --opts MODEL.WEIGHTS=output/quickstart/model_final.pth --confidence-threshold 0.7

Writes each image with its labelled boxes (same file name, .png) and detections.json with
every detection (box XYXY in the image's pixels, score, class) into --output. Images of a
--dataset are drawn twice, side by side: the ground truth on the left, the detections on the
right. Images are read as training reads them (detkit.data.read_image: stored pixel grid, no
EXIF rotation); a file that is missing, truncated or not an image is refused with the reason,
the others are still processed, and the exit status is then 1.

Config overrides are ``KEY VALUE`` or ``KEY=VALUE`` pairs, at the end or after ``--opts``;
options may also follow them. Without MODEL.WEIGHTS the demo is refused (a model with random
weights draws random boxes) unless --allow-random-weights.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cv2  # noqa: E402

from detkit.config import get_cfg  # noqa: E402
from detkit.data.image_file import ImageFileError  # noqa: E402
from detkit.data.mapper import read_image  # noqa: E402
from detkit.engine.predictor import DefaultPredictor  # noqa: E402
from detkit.utils.cli import (  # noqa: E402
    add_config_overrides_arguments,
    add_debug_argument,
    parse_args_anywhere,
    run_cli,
)
from detkit.utils.visualizer import (  # noqa: E402
    draw_instances,
    draw_predictions_and_ground_truth,
)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def collect_images(inputs: list[str]) -> list[str]:
    """Files as given, and the image files of each folder (sorted)."""
    files = []
    for path in inputs:
        if os.path.isdir(path):
            files += sorted(
                os.path.join(path, f)
                for f in os.listdir(path)
                if f.lower().endswith(IMAGE_SUFFIXES)
            )
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise FileNotFoundError(f"--input {path}: no such file or folder.")
    return files


def class_names_of(cfg) -> list[str] | None:
    from detkit.data import MetadataCatalog

    for name in list(cfg.DATASETS.TEST) + list(cfg.DATASETS.TRAIN):
        names = getattr(MetadataCatalog.get(name), "thing_classes", None)
        if names:
            return list(names)
    return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Options may come before or after the config overrides.",
    )
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--input", nargs="+", default=[], help="image files or folders")
    parser.add_argument(
        "--dataset",
        default="",
        help="take the images of a registered dataset (drawn beside their ground truth)",
    )
    parser.add_argument("--max-images", type=int, default=0, help="at most this many (0: all)")
    parser.add_argument("--output", default="output/demo")
    parser.add_argument(
        "--score-thresh",
        "--confidence-threshold",
        dest="score_thresh",
        type=float,
        default=0.5,
        help="draw and keep detections scoring above this",
    )
    parser.add_argument(
        "--allow-random-weights",
        action="store_true",
        help="run without MODEL.WEIGHTS (a model with random weights draws random boxes)",
    )
    add_config_overrides_arguments(parser)
    add_debug_argument(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args_anywhere(parser, argv)

    cfg = get_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    if not cfg.MODEL.WEIGHTS and not args.allow_random_weights:
        parser.error(
            "no MODEL.WEIGHTS: a model with random weights draws random boxes. Give the "
            "trained model (e.g. MODEL.WEIGHTS output/quickstart/model_final.pth), or add "
            "--allow-random-weights to run it anyway."
        )
    # (file name, its dataset annotations, or None for a plain image)
    items: list[tuple[str, list[dict] | None]] = [(f, None) for f in collect_images(args.input)]
    if args.dataset:
        from detkit.data import DatasetCatalog

        items += [
            (d["file_name"], d.get("annotations", [])) for d in DatasetCatalog.get(args.dataset)
        ]
    if args.max_images > 0:
        items = items[: args.max_images]
    if not items:
        parser.error("no images: give --input files/folders or --dataset NAME")
    files = [f for f, _ in items]
    predictor = DefaultPredictor(cfg, allow_random_weights=args.allow_random_weights)
    names = class_names_of(cfg)
    os.makedirs(args.output, exist_ok=True)
    records, refused = [], 0
    for path, ground_truth in items:
        try:
            image = read_image(path, "BGR")
        except (FileNotFoundError, ImageFileError) as e:
            print(f"Refused: {e}", file=sys.stderr)
            refused += 1
            continue
        det = predictor(image)["instances"]
        det = det[det.scores > args.score_thresh]
        scale = 2.0 if max(image.shape[:2]) < 512 else 1.0
        if ground_truth is None:
            drawn = draw_instances(image, det, names, scale=scale)
        else:
            drawn = draw_predictions_and_ground_truth(image, det, ground_truth, names, scale)
        stem = os.path.splitext(os.path.basename(path))[0]
        cv2.imwrite(os.path.join(args.output, stem + ".png"), drawn)
        records.append(
            {
                "file_name": path,
                "detections": [
                    {
                        "box": [round(v, 2) for v in box],
                        "score": round(score, 4),
                        "class": cls,
                        "class_name": names[cls] if names and cls < len(names) else str(cls),
                    }
                    for box, score, cls in zip(
                        det.pred_boxes.tensor.tolist(),
                        det.scores.tolist(),
                        det.pred_classes.tolist(),
                    )
                ],
            }
        )
        print(f"{path}: {len(det)} detections")
    with open(os.path.join(args.output, "detections.json"), "w", encoding="utf-8") as f:
        json.dump(records, f, indent=1)
    print(f"Drawn images and detections.json in {args.output}")
    if refused:
        print(f"{refused} of {len(files)} images refused (reasons above).", file=sys.stderr)
    return 1 if refused else 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
