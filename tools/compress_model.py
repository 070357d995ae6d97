#!/usr/bin/env python3
"""Compress a trained detector's box head with truncated SVD (Fast R-CNN, section 3.1).

    .venv/bin/python tools/compress_model.py --config-file configs/quickstart/shapes.yaml \
        --svd-ranks 64 32 --output output/quickstart_svd \
        MODEL.WEIGHTS output/quickstart/model_final.pth
    .venv/bin/python tools/train_net.py --config-file output/quickstart_svd/config.yaml \
        --eval-only MODEL.WEIGHTS output/quickstart_svd/model_svd.pth

Each of the box head's first fully connected layers (fc6, fc7, one rank each) becomes two:
``rank x in`` then ``out x rank``, the best rank-``rank`` approximation of its weights, so a
layer of ``in x out`` multiplies costs ``rank x (in + out)``. The tool writes to --output the
converted weights (``model_svd.pth``) and the config that builds the factorized model
(``config.yaml``, the input config with ``MODEL.ROI_BOX_HEAD.SVD_RANKS`` set), and prints, per
layer, the share of the weights' energy (sum of squared singular values) the rank keeps.
Config overrides are KEY VALUE or KEY=VALUE pairs, at the end or after --opts.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from detkit.checkpoint import DetectionCheckpointer  # noqa: E402
from detkit.config import get_cfg  # noqa: E402
from detkit.layers import factorize_linears  # noqa: E402
from detkit.modeling import build_model  # noqa: E402
from detkit.utils.cli import (  # noqa: E402
    add_config_overrides_arguments,
    add_debug_argument,
    int_at_least,
    parse_args_anywhere,
    run_cli,
)


def kept_energy(linear: nn.Linear, rank: int) -> float:
    """Share of ``sum(s_i ** 2)`` over the weight's singular values kept by the ``rank``
    largest (1.0: the approximation is exact)."""
    singular = torch.linalg.svdvals(linear.weight.detach().double())
    return float((singular[:rank] ** 2).sum() / (singular**2).sum())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Options may come before or after the config overrides.",
    )
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument(
        "--svd-ranks",
        type=int_at_least(1),
        nargs="+",
        required=True,
        metavar="RANK",
        help="one rank per fully connected layer of the box head, in order (fc6 fc7)",
    )
    parser.add_argument("--output", required=True, metavar="DIR", help="folder to write to")
    add_config_overrides_arguments(parser)
    add_debug_argument(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parse_args_anywhere(build_parser(), argv)
    cfg = get_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    if cfg.MODEL.ROI_BOX_HEAD.SVD_RANKS:
        raise ValueError(
            f"{args.config_file} already has MODEL.ROI_BOX_HEAD.SVD_RANKS "
            f"{list(cfg.MODEL.ROI_BOX_HEAD.SVD_RANKS)}: compress the original model's config "
            "and weights instead."
        )
    if not cfg.MODEL.WEIGHTS:
        raise ValueError(
            "MODEL.WEIGHTS is empty: give the trained weights to compress "
            "(MODEL.WEIGHTS path/to/model_final.pth)."
        )
    model = build_model(cfg)
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    head = model.roi_heads.box_head
    linears = [(n, m) for n, m in head.named_modules() if isinstance(m, nn.Linear)]
    for (name, linear), rank in zip(linears, args.svd_ranks):
        share = kept_energy(linear, min(rank, *linear.weight.shape))
        print(
            f"{name}: {linear.in_features} -> {linear.out_features}, rank {rank}: "
            f"{rank * (linear.in_features + linear.out_features):,} multiplies instead of "
            f"{linear.in_features * linear.out_features:,}; {share:.4f} of the energy kept"
        )
    factorize_linears(head, list(args.svd_ranks), from_weights=True)
    os.makedirs(args.output, exist_ok=True)
    cfg.defrost()
    cfg.MODEL.ROI_BOX_HEAD.SVD_RANKS = list(args.svd_ranks)
    cfg.MODEL.WEIGHTS = os.path.join(args.output, "model_svd.pth")
    DetectionCheckpointer(model, args.output).save("model_svd")
    with open(os.path.join(args.output, "config.yaml"), "w") as f:
        f.write(cfg.dump())
    print(f"Wrote {cfg.MODEL.WEIGHTS} and {os.path.join(args.output, 'config.yaml')}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
