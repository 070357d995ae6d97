#!/usr/bin/env python3
"""Draw the ground truth of a dataset, as annotated or as the training mapper gives it.

    .venv/bin/python tools/visualize_data.py --config-file configs/quickstart/shapes.yaml \
        --source annotation --output output/vis_annotation --max-images 8
    .venv/bin/python tools/visualize_data.py --config-file configs/quickstart/shapes.yaml \
        --source dataloader --output output/vis_dataloader --max-images 8 INPUT.RANDOM_FLIP=none

--source annotation draws each dataset dict's boxes and class names on the original image.
--source dataloader draws what training sees: the output of DatasetMapper(cfg, is_train=True),
i.e. the image after the configured augmentations (random crop INPUT.CROP, resize
INPUT.MIN_SIZE_TRAIN / MAX_SIZE_TRAIN, flip INPUT.RANDOM_FLIP, colour jitter
INPUT.COLOR_JITTER), with the boxes it keeps (difficult, crowd and cropped-away objects
dropped). Random choices are seeded with SEED
(when >= 0), so a run repeats.

The datasets are --dataset (repeat for several), else the config's DATASETS.TRAIN. Each
picture is written as <output>/<image file stem>.png (with the dataset name in front when
there are several datasets). Config overrides are KEY VALUE or KEY=VALUE pairs, at the end or
after --opts; options may also follow them.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from detkit.config import get_cfg  # noqa: E402
from detkit.data import DatasetCatalog, DatasetMapper, MetadataCatalog  # noqa: E402
from detkit.data.mapper import read_image  # noqa: E402
from detkit.utils.cli import (  # noqa: E402
    add_config_overrides_arguments,
    add_debug_argument,
    int_at_least,
    parse_args_anywhere,
    run_cli,
)
from detkit.utils.visualizer import draw_annotations  # noqa: E402

SOURCES = ("annotation", "dataloader")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Options may come before or after the config overrides.",
    )
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument(
        "--source",
        choices=SOURCES,
        default="annotation",
        help="annotation: the dataset dicts on the original images; dataloader: the "
        "training mapper's output (resized, flipped)",
    )
    parser.add_argument("--output", required=True, metavar="DIR", help="folder for the pictures")
    parser.add_argument(
        "--max-images",
        type=int_at_least(0),
        default=0,
        metavar="N",
        help="at most N pictures in all (0: every image)",
    )
    parser.add_argument(
        "--dataset",
        action="append",
        default=[],
        metavar="NAME",
        help="a registered dataset (repeat for several; default: the config's DATASETS.TRAIN)",
    )
    add_config_overrides_arguments(parser)
    add_debug_argument(parser)
    return parser


def mapped_ground_truth(mapper: DatasetMapper, dataset_dict: dict) -> tuple[np.ndarray, list]:
    """The training mapper's output for ``dataset_dict``: (uint8 HxWx3 BGR image as the model
    receives it, its boxes as annotations ``[{"bbox", "category_id"}]`` in that image)."""
    mapped = mapper(dataset_dict)
    image = mapped["image"].permute(1, 2, 0).numpy().round().clip(0, 255).astype(np.uint8)
    if mapper.image_format == "RGB":
        image = image[:, :, ::-1]
    instances = mapped["instances"]
    boxes = instances.gt_boxes.tensor.numpy().astype(np.float64)
    if mapper.legacy_plus_one:
        boxes[:, 2:] += 1  # back from last-pixel indices to the continuous box
    annotations = [
        {"bbox": box.tolist(), "category_id": int(cls)}
        for box, cls in zip(boxes, instances.gt_classes.tolist())
    ]
    return np.ascontiguousarray(image), annotations


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args_anywhere(parser, argv)
    cfg = get_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    names = list(dict.fromkeys(args.dataset or list(cfg.DATASETS.TRAIN)))
    if not names:
        parser.error("no dataset: give --dataset NAME or a config with DATASETS.TRAIN")
    unknown = [n for n in names if n not in DatasetCatalog]
    if unknown:
        parser.error(f"unknown dataset(s) {unknown}; registered: {sorted(DatasetCatalog)}")
    if cfg.SEED >= 0:
        torch.manual_seed(cfg.SEED)  # the mapper seeds its generator from torch's
    mapper = DatasetMapper(cfg, is_train=True) if args.source == "dataloader" else None
    os.makedirs(args.output, exist_ok=True)
    written = 0
    for name in names:
        class_names = getattr(MetadataCatalog.get(name), "thing_classes", None)
        for dataset_dict in DatasetCatalog.get(name):
            if args.max_images and written >= args.max_images:
                break
            if mapper is None:
                image = read_image(dataset_dict["file_name"], "BGR", dataset_dict.get("image_id"))
                annotations = dataset_dict.get("annotations", [])
            else:
                image, annotations = mapped_ground_truth(mapper, dataset_dict)
            drawn = draw_annotations(image, annotations, class_names)
            stem = os.path.splitext(os.path.basename(dataset_dict["file_name"]))[0]
            prefix = f"{name}_" if len(names) > 1 else ""
            cv2.imwrite(os.path.join(args.output, f"{prefix}{stem}.png"), drawn)
            written += 1
    print(f"{written} pictures ({args.source}) in {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
