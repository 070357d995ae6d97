#!/usr/bin/env python3
"""Where a detector's VOC AP goes: its false positives by kind, and the objects it missed.

    .venv/bin/python tools/analyze_errors.py \\
        output/quickstart/inference/shapes_test/voc_detections.json

Reads the ``voc_detections.json`` that the VOC evaluator writes beside ``voc_metrics.json``
(every evaluation of a VOC-style test set: ``train_net.py``, with or without ``--eval-only``)
and the ground truth of the dataset named in it, and prints one row per class: the final
recall, the precision at ``--recall`` (0.9: the 11-point metric's last point below full
recall), the false positives ranked up to that recall by kind (a second detection of a found
object, the right box with another class's label, a poor box of the right class, nothing),
and the objects missed, of which how many a detection of another class covers. The matching
is the evaluator's (IoU strictly above ``--iou``, difficult objects ignored), so the true
positives are the ones behind its AP. ``--config-file`` is needed only when the dataset is
registered by a plugin that the config's ``IMPORTS`` loads. ``--json FILE`` writes the report.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from detkit.utils.cli import add_debug_argument, run_cli  # noqa: E402


def load_detections(path: str) -> dict:
    """The evaluator's ``voc_detections.json``, checked for the fields this tool reads."""
    try:
        with open(path) as f:
            data = json.load(f)
    except OSError as e:
        raise ValueError(
            f"Cannot read {path}: {e.strerror}. Give the voc_detections.json that an "
            "evaluation wrote (OUTPUT_DIR/inference/<dataset>/voc_detections.json)."
        ) from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not JSON ({e}); was it written completely?") from None
    missing = [k for k in ("dataset", "box_mode", "images") if k not in data]
    if missing:
        raise ValueError(
            f"{path} has no {missing}: it is not a voc_detections.json written by the VOC "
            "evaluator."
        )
    return data


def arrays_from_detections(data: dict, image_index: dict, path: str) -> dict:
    """Detection arrays for ``analyze_errors`` from the JSON's images, by the dataset's
    image order. An image of the file that the dataset lacks is an error naming it."""
    ids, boxes, scores, classes = [], [], [], []
    for image in data["images"]:
        image_id = image["image_id"]
        if image_id not in image_index:
            raise ValueError(
                f"{path}: image_id {image_id!r} is not in dataset '{data['dataset']}'. The "
                "file was written for another version of the dataset: evaluate again."
            )
        for det in image["detections"]:
            ids.append(image_index[image_id])
            boxes.append(det["bbox"])
            scores.append(det["score"])
            classes.append(det["category_id"])
    return {
        "det_image_ids": np.asarray(ids, dtype=np.int64),
        "det_boxes": np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
        "det_scores": np.asarray(scores, dtype=np.float64),
        "det_classes": np.asarray(classes, dtype=np.int64),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[2:4]),
    )
    parser.add_argument("detections", help="a voc_detections.json written by an evaluation")
    parser.add_argument("--recall", type=float, default=0.9, help="recall level (default 0.9)")
    parser.add_argument("--iou", type=float, default=0.5, help="IoU threshold (default 0.5)")
    parser.add_argument(
        "--background-iou",
        type=float,
        default=0.1,
        help="a false positive overlapping no object of its class above this is background",
    )
    parser.add_argument("--config-file", help="a config whose IMPORTS register the dataset")
    parser.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    if not 0.0 < args.recall <= 1.0:
        parser.error(f"--recall must be in (0, 1], got {args.recall}")
    if not 0.0 <= args.background_iou <= args.iou < 1.0:
        parser.error(
            f"need 0 <= --background-iou ({args.background_iou}) <= --iou ({args.iou}) < 1"
        )
    try:
        data = load_detections(args.detections)
    except ValueError as e:
        print(f"analyze_errors.py: {e}", file=sys.stderr)
        return 2
    if args.config_file:
        from detkit.config import get_cfg

        get_cfg().merge_from_file(args.config_file)  # imports its IMPORTS
    from detkit.data import DatasetCatalog, MetadataCatalog
    from detkit.evaluation.error_analysis import analyze_errors, format_error_report
    from detkit.evaluation.voc_evaluation import PascalVOCDetectionEvaluator

    name = data["dataset"]
    if name not in DatasetCatalog:
        print(
            f"analyze_errors.py: dataset '{name}' (named in {args.detections}) is not "
            "registered. If a plugin registers it, pass --config-file with that plugin in "
            "IMPORTS.",
            file=sys.stderr,
        )
        return 2
    legacy_plus_one = "x2 - x1 + 1" in data["box_mode"]
    # The evaluator's own ground truth: the same image order, classes and difficult flags.
    evaluator = PascalVOCDetectionEvaluator(
        dataset_dicts=DatasetCatalog.get(name),
        thing_classes=MetadataCatalog.get(name).thing_classes,
        legacy_plus_one=legacy_plus_one,
        dataset_name=name,
    )
    try:
        detections = arrays_from_detections(data, evaluator._image_index, args.detections)
    except ValueError as e:
        print(f"analyze_errors.py: {e}", file=sys.stderr)
        return 2
    report = analyze_errors(
        **detections,
        gt_image_ids=evaluator._gt_image_ids,
        gt_boxes=evaluator._gt_boxes,
        gt_classes=evaluator._gt_classes,
        gt_difficult=evaluator._gt_difficult,
        num_classes=len(evaluator.thing_classes),
        recall_level=args.recall,
        iou_threshold=args.iou,
        background_iou=args.background_iou,
        legacy_plus_one=legacy_plus_one,
    )
    print(
        f"Errors of {args.detections} on {name} (IoU > {args.iou:g}; false positives ranked "
        f"up to recall {args.recall:g}):"
    )
    print(format_error_report(report, evaluator.thing_classes, args.recall))
    if args.json:
        for entry in report:
            entry["class_name"] = evaluator.thing_classes[entry["class"]]
        with open(args.json, "w") as f:
            json.dump({"dataset": name, "recall_level": args.recall, "classes": report}, f)
        print(f"Wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
