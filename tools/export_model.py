#!/usr/bin/env python3
"""Export a trained detector for inference (ONNX or torch.export) and check it against PyTorch.

    .venv/bin/python tools/export_model.py --config-file configs/quickstart/shapes.yaml \
        --format onnx --output output/quickstart/export \
        MODEL.WEIGHTS output/quickstart/model_final.pth
    .venv/bin/python tools/export_model.py --config-file configs/quickstart/shapes.yaml \
        --format torch-export --check-image photo.jpg other.png \
        --opts MODEL.WEIGHTS=output/quickstart/model_final.pth

Writes into --output the exported model (model.onnx or model.pt2) and the config it was
exported with (config.yaml: INPUT.FORMAT and the test sizes the inputs must be resized to).
The exported graph takes one float32 [3, H, W] image, already resized, and returns boxes
[N, 4], scores [N] and classes [N] (docs/export.md). The tool then runs the exported model
and eager PyTorch on the --check-image files (default: two synthetic shapes scenes of
different sizes and, for a trained detector, a uniform grey image), prints the largest box
and score differences and whether the counts and classes agree, and exits with status 1
when they disagree beyond --box-atol / --score-atol. MODEL.DEVICE is set to cpu and
MODEL.ROI_HEADS.POOLER.IMPLEMENTATION to torchvision (the RoIAlign the exporters translate).
Config overrides are KEY VALUE or KEY=VALUE pairs, at the end or after --opts.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from detkit.checkpoint import DetectionCheckpointer  # noqa: E402
from detkit.config import get_cfg  # noqa: E402
from detkit.export import (  # noqa: E402
    FILE_NAMES,
    FORMATS,
    ExportableDetector,
    check_inputs,
    compare_outputs,
    detector_outputs,
    export_detector,
    load_exported,
    median_ms,
    output_names_of,
    require_export_dependencies,
)
from detkit.modeling import build_model  # noqa: E402
from detkit.utils.cli import (  # noqa: E402
    add_config_overrides_arguments,
    add_debug_argument,
    int_at_least,
    parse_args_anywhere,
    run_cli,
)
from detkit.utils.logger import setup_logger  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Options may come before or after the config overrides.",
    )
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--format", required=True, choices=FORMATS, help="what to export to")
    parser.add_argument(
        "--output",
        default="",
        metavar="DIR",
        help="folder to write to (default: OUTPUT_DIR/export)",
    )
    parser.add_argument(
        "--check-image",
        nargs="+",
        default=[],
        metavar="PATH",
        help="image files to compare the exported model with PyTorch on (default: synthetic)",
    )
    parser.add_argument(
        "--box-atol", type=float, default=1e-2, help="largest box difference accepted, pixels"
    )
    parser.add_argument(
        "--score-atol", type=float, default=1e-3, help="largest score difference accepted"
    )
    parser.add_argument(
        "--benchmark-runs",
        type=int_at_least(0),
        default=0,
        metavar="N",
        help="also time eager PyTorch and the exported model on the first image (median of N)",
    )
    parser.add_argument(
        "--allow-random-weights",
        action="store_true",
        help="export without MODEL.WEIGHTS (a model with random weights: for testing only)",
    )
    add_config_overrides_arguments(parser)
    add_debug_argument(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args_anywhere(parser, argv)
    require_export_dependencies(args.format)
    cfg = get_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    if not cfg.MODEL.WEIGHTS and not args.allow_random_weights:
        parser.error(
            "no MODEL.WEIGHTS: a model with random weights detects nothing useful. Give the "
            "trained model (e.g. MODEL.WEIGHTS output/quickstart/model_final.pth), or add "
            "--allow-random-weights to export it anyway."
        )
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.ROI_HEADS.POOLER.IMPLEMENTATION = "torchvision"
    output = args.output or os.path.join(cfg.OUTPUT_DIR, "export")
    setup_logger(output)
    model = build_model(cfg).eval()
    output_names = output_names_of(model)  # refuses an unsupported model before loading
    if cfg.MODEL.WEIGHTS:
        DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    # A blank image tests "no detections" of a trained detector. Proposals are never empty,
    # and random weights score a uniform image's boxes alike (ties NMS breaks either way).
    blank = "classes" in output_names and bool(cfg.MODEL.WEIGHTS)
    inputs = check_inputs(cfg, list(args.check_image), blank=blank)
    detector = ExportableDetector(model)
    path = export_detector(
        detector, inputs[0][1], args.format, os.path.join(output, FILE_NAMES[args.format])
    )
    with open(os.path.join(output, "config.yaml"), "w", encoding="utf-8") as f:
        f.write(cfg.dump())
    print(f"Wrote {path} (outputs: {', '.join(output_names)}) and its config.yaml")

    run_exported = load_exported(path, threads=torch.get_num_threads())
    print(f"Exported ({args.format}) vs eager PyTorch:")
    failed = []
    for name, image in inputs:
        with torch.no_grad():
            eager = detector_outputs(model, image)
        parity = compare_outputs(name, tuple(image.shape[1:]), eager, run_exported(image))
        print(f"  {parity.describe()}")
        if not parity.within(args.box_atol, args.score_atol):
            failed.append(name)
    if args.benchmark_runs:
        image = inputs[0][1]
        eager_ms = median_ms(lambda x: detector_outputs(model, x), image, args.benchmark_runs)
        exported_ms = median_ms(run_exported, image, args.benchmark_runs)
        print(
            f"Time on {inputs[0][0]} [{image.shape[1]}x{image.shape[2]}], median of "
            f"{args.benchmark_runs} runs, {torch.get_num_threads()} threads each: eager PyTorch "
            f"{eager_ms:.1f} ms, exported ({args.format}) {exported_ms:.1f} ms"
        )
    if failed:
        print(
            f"The exported model disagrees with eager PyTorch on {len(failed)} of "
            f"{len(inputs)} images ({', '.join(failed)}): counts or classes differ, or boxes "
            f"beyond {args.box_atol} px or scores beyond {args.score_atol} (lines above). "
            f"Check {path} before deploying it; on images with many exactly equal scores "
            "(uniform areas, random weights) NMS may keep other boxes than eager PyTorch.",
            file=sys.stderr,
        )
        return 1
    print(f"Parity OK: boxes within {args.box_atol} px, scores within {args.score_atol}.")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
