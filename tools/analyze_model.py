#!/usr/bin/env python3
"""Count a model's parameters and FLOPs per module.

    .venv/bin/python tools/analyze_model.py --config-file configs/quickstart/shapes.yaml
    .venv/bin/python tools/analyze_model.py --config-file configs/faster_rcnn_vgg16.yaml \
        --tasks flop --input-size 600 1000 --depth 3

--tasks parameter prints the parameters of each module down to --depth levels of nesting
(each row counts its submodules too). --tasks flop runs the model in inference mode on one
image of --input-size H W (default: a square of INPUT.MIN_SIZE_TEST) and prints fvcore's
FlopCountAnalysis per module, where one multiply-add counts as one FLOP. The model has the
config's random initialization (MODEL.WEIGHTS is not loaded): the convolutions and fully
connected layers cost the same, but the number of proposals and detections kept after NMS, and
so the cost of the parts after them, may differ from a trained model's. Config overrides are
KEY VALUE or KEY=VALUE pairs, at the end or after --opts; options may also follow them.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

# fvcore scripts a loss function on import; torch's deprecation notice of that is not ours.
warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated")
from fvcore.nn import FlopCountAnalysis, flop_count_table, parameter_count  # noqa: E402
from torch import nn  # noqa: E402

from detkit.config import get_cfg  # noqa: E402
from detkit.modeling import build_model  # noqa: E402
from detkit.utils.cli import (  # noqa: E402
    add_config_overrides_arguments,
    add_debug_argument,
    int_at_least,
    parse_args_anywhere,
    run_cli,
)

TASKS = ("parameter", "flop")


def _tensors_of(output) -> list[torch.Tensor]:
    """The tensors in a model's output (lists, dicts, Instances, Boxes), in a fixed order."""
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, dict):
        return [t for key in sorted(output) for t in _tensors_of(output[key])]
    if isinstance(output, (list, tuple)):
        return [t for item in output for t in _tensors_of(item)]
    if hasattr(output, "get_fields"):  # Instances
        return _tensors_of(output.get_fields())
    if isinstance(getattr(output, "tensor", None), torch.Tensor):  # Boxes
        return [output.tensor]
    return []


class _TensorInOut(nn.Module):
    """The model as the tracer of FlopCountAnalysis needs it: one image tensor in, a tuple of
    tensors out. Its only child is named ``model``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(_tensors_of(self.model([{"image": image}])))


def parameter_counts(model: nn.Module, depth: int) -> dict[str, int]:
    """Parameters of the whole model ("") and of each module at most ``depth`` levels deep
    (``"backbone"`` is depth 1, ``"backbone.stage1"`` depth 2), its submodules included."""
    counts = parameter_count(model)  # fvcore: every module prefix and parameter name
    modules = {name for name, _ in model.named_modules()}
    return {
        name: int(count)
        for name, count in counts.items()
        if name in modules and (name == "" or name.count(".") < depth)
    }


def format_parameter_table(counts: dict[str, int]) -> str:
    """``counts`` (from :func:`parameter_counts`) as an aligned two-column table."""
    rows = [("module", "#parameters")] + [
        (name or "(model)", f"{count:,}") for name, count in counts.items()
    ]
    width = max(len(name) for name, _ in rows)
    number_width = max(len(count) for _, count in rows)
    lines = [f"{name:<{width}}  {count:>{number_width}}" for name, count in rows]
    lines.insert(1, "-" * (width + 2 + number_width))
    return "\n".join(lines)


def flop_analysis(model: nn.Module, input_size: tuple[int, int]) -> FlopCountAnalysis:
    """fvcore's FLOP count of ``model`` (in inference mode) on one image of ``input_size``
    (H, W) of uniform grey; module names are the model's (``"backbone.stage1.0.conv"``)."""
    model.eval()
    device = next(model.parameters()).device
    image = torch.full((3, *input_size), 127.0, device=device)
    analysis = FlopCountAnalysis(_TensorInOut(model), (image,))
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    analysis.tracer_warnings("none")
    return analysis


def flop_counts(model: nn.Module, input_size: tuple[int, int]) -> dict[str, int]:
    """FLOPs (one multiply-add = 1) per module name, ``""`` being the whole model."""
    with torch.no_grad():
        by_module = flop_analysis(model, input_size).by_module()
    return {
        name.removeprefix("model").removeprefix("."): int(count)
        for name, count in by_module.items()
        if name == "model" or name.startswith("model.")
    }


def _without_wrapper(table: str) -> str:
    """fvcore's table with the model's own module names (no ``model.`` of the wrapper)."""
    lines = []
    for line in table.splitlines():
        cells = line.split("|")
        if len(cells) > 2:
            name = cells[1].strip()
            if name == "model":
                cells[1] = " (model)".ljust(len(cells[1]))
            elif name.startswith("model."):
                cells[1] = f" {name.removeprefix('model.')}".ljust(len(cells[1]))
        lines.append("|".join(cells))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Options may come before or after the config overrides.",
    )
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument(
        "--tasks",
        nargs="+",
        choices=TASKS,
        default=list(TASKS),
        help="what to count (default: both)",
    )
    parser.add_argument(
        "--depth",
        type=int_at_least(0),
        default=2,
        metavar="N",
        help="rows for modules down to N levels deep (default 2: backbone.stage1)",
    )
    parser.add_argument(
        "--input-size",
        type=int_at_least(1),
        nargs=2,
        metavar=("H", "W"),
        help="image size for --tasks flop (default: INPUT.MIN_SIZE_TEST square)",
    )
    add_config_overrides_arguments(parser)
    add_debug_argument(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parse_args_anywhere(build_parser(), argv)
    cfg = get_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    model = build_model(cfg)
    if "parameter" in args.tasks:
        print(format_parameter_table(parameter_counts(model, args.depth)))
    if "flop" in args.tasks:
        size = tuple(args.input_size or (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST))
        # The tracer reports every Python-side branch it cannot record; they do not change
        # the counts of the layers, and fvcore logs them on its own loggers.
        logging.getLogger("fvcore").setLevel(logging.ERROR)
        with torch.no_grad():
            analysis = flop_analysis(model, size)
            table = flop_count_table(analysis, max_depth=args.depth, show_param_shapes=False)
        print(f"\nFLOPs (one multiply-add = 1) on one {size[0]}x{size[1]} image:")
        print(_without_wrapper(table))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
