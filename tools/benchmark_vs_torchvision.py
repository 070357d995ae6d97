#!/usr/bin/env python3
"""Time detkit's Faster R-CNN against torchvision's on the same work, with the same weights.

    .venv/bin/python tools/benchmark_vs_torchvision.py --pooler ROIPool
    .venv/bin/python tools/benchmark_vs_torchvision.py --pooler ROIAlign --runs 7

Builds detkit's model from --config-file (default configs/faster_rcnn_vgg16.yaml) with the
settings torchvision's FasterRCNN can express (modern box widths, anchors rounded to whole
pixels as torchvision's and centred at the cell corner, sigmoid objectness, batches padded
to a multiple of 32, no RPN minimum box size, no dropout after fc6/fc7 as TwoMLPHead;
RoIAlign with sampling ratio 2 and without the half-pixel alignment, as
MultiScaleRoIAlign), then torchvision's FasterRCNN from the same
parts and the same weights: torchvision's own VGG16 layers (another backbone: detkit's
module), the RPN head, fc6/fc7 and the predictor (its rows reordered: torchvision's
background is class 0, detkit's the last).
It checks that both detect the same boxes on one random image, then times, alternating
the two models run by run: inference on that image, and a training step (forward,
backward, SGD step) with two ground-truth boxes. Printed: the medians, the min-max and the
median of the paired ratios detkit / torchvision, the context (threads, image size), and
the peak memory of one run of each above the loaded models (Linux: the free pages returned
to the system first, then the kernel's peak counter reset and read). Weights are random
(seeded): the work is the same as with trained ones except the number of detections kept.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torchvision  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from torchvision.models.detection import FasterRCNN  # noqa: E402
from torchvision.models.detection.anchor_utils import AnchorGenerator  # noqa: E402
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead  # noqa: E402
from torchvision.models.detection.rpn import RPNHead  # noqa: E402
from torchvision.ops import MultiScaleRoIAlign, RoIPool  # noqa: E402

from detkit.config import get_cfg  # noqa: E402
from detkit.modeling import build_model  # noqa: E402
from detkit.modeling.meta_arch import select_memory_format  # noqa: E402
from detkit.structures import Boxes, Instances, pairwise_iou  # noqa: E402
from detkit.utils.cli import (  # noqa: E402
    add_config_overrides_arguments,
    add_debug_argument,
    int_at_least,
    parse_args_anywhere,
    run_cli,
)
from detkit.utils.memory import peak_increase_mb  # noqa: E402

# What torchvision's FasterRCNN can express, set on detkit's side too.
COMPARABLE = [
    "MODEL.DEVICE", "cpu",
    "MODEL.WEIGHTS", "",
    "MODEL.LEGACY_PLUS_ONE", False,
    "MODEL.ANCHOR_GENERATOR.NAME", "DefaultAnchorGenerator",
    "MODEL.ANCHOR_GENERATOR.OFFSET", 0.0,
    "MODEL.ANCHOR_GENERATOR.ROUND_TO_PIXELS", True,
    "MODEL.RPN.HEAD.OBJECTNESS", "sigmoid",
    "MODEL.RPN.MIN_SIZE", 0.0,
    "INPUT.SIZE_DIVISIBILITY", 32,
    # torchvision's TwoMLPHead has no dropout after fc6/fc7: without this, detkit's training
    # step does two dropouts more (inference is unaffected: dropout is off in eval mode).
    "MODEL.ROI_BOX_HEAD.DROPOUT", 0.0,
]  # fmt: skip


class _FeatureMap(nn.Module):
    """A backbone as torchvision's FasterRCNN wants one: a tensor out, ``out_channels``."""

    def __init__(self, body: nn.Module, channels: int, name: str | None = None):
        super().__init__()
        self.body, self.name, self.out_channels = body, name, channels

    def forward(self, x: Tensor) -> Tensor:
        out = self.body(x)
        return out[self.name] if self.name is not None else out


def torchvision_backbone(model: nn.Module, feature_name: str, channels: int) -> _FeatureMap:
    """torchvision's own VGG16 ``features`` (up to conv5_3, contiguous, its default layout)
    with detkit's weights and frozen layers; another backbone: a copy of detkit's module."""
    ours = model.backbone
    if type(ours).__name__ != "VGG16":
        return _FeatureMap(copy.deepcopy(ours), channels, feature_name)
    features = torchvision.models.vgg16(weights=None).features[:30]  # no pool5
    features.load_state_dict(ours.features.state_dict())
    for theirs, mine in zip(features.parameters(), ours.features.parameters()):
        theirs.requires_grad_(mine.requires_grad)
    return _FeatureMap(features, channels)


class _RoIPoolOneMap(MultiScaleRoIAlign):
    """torchvision's RoIPool where FasterRCNN takes a MultiScaleRoIAlign (one map, "0")."""

    def __init__(self, output_size: int, spatial_scale: float):
        super().__init__(["0"], output_size, sampling_ratio=0)
        self.pool = RoIPool(output_size, spatial_scale)

    def forward(self, features: dict, proposals: list[Tensor], image_shapes) -> Tensor:
        return self.pool(features["0"], proposals)


def _copy_layer(target: nn.Module, source: nn.Module, rows: Tensor | None = None) -> None:
    """Copy a conv's or linear layer's weight and bias (optionally output ``rows`` of it)."""
    with torch.no_grad():
        target.weight.copy_(source.weight if rows is None else source.weight[rows])
        target.bias.copy_(source.bias if rows is None else source.bias[rows])


def torchvision_twin(cfg, model: nn.Module) -> FasterRCNN:
    """torchvision's FasterRCNN with ``model``'s settings and weights (see the docstring)."""
    rpn, heads, a = cfg.MODEL.RPN, cfg.MODEL.ROI_HEADS, cfg.MODEL.ANCHOR_GENERATOR
    (feature_name,) = list(rpn.IN_FEATURES)
    shape = model.backbone.output_shape()[feature_name]
    backbone = torchvision_backbone(model, feature_name, shape.channels)
    num_anchors = len(a.SIZES) * len(a.ASPECT_RATIOS)
    rpn_head = RPNHead(shape.channels, num_anchors)
    ours = model.proposal_generator.head
    _copy_layer(rpn_head.conv[0][0], ours.conv)
    _copy_layer(rpn_head.cls_logits, ours.objectness_logits)
    _copy_layer(rpn_head.bbox_pred, ours.anchor_deltas)
    pooler = heads.POOLER
    if pooler.NAME == "ROIPool":
        box_roi_pool = _RoIPoolOneMap(pooler.RESOLUTION, 1.0 / shape.stride)
    else:
        box_roi_pool = MultiScaleRoIAlign(["0"], pooler.RESOLUTION, pooler.SAMPLING_RATIO)
    fc_dim = cfg.MODEL.ROI_BOX_HEAD.FC_DIM
    box_head = TwoMLPHead(shape.channels * pooler.RESOLUTION**2, fc_dim)
    _copy_layer(box_head.fc6, model.roi_heads.box_head.fc6)
    _copy_layer(box_head.fc7, model.roi_heads.box_head.fc7)
    k = heads.NUM_CLASSES
    predictor = FastRCNNPredictor(fc_dim, k + 1)
    # detkit: classes 0..K-1, background K; torchvision: background 0, classes 1..K.
    order = torch.tensor([k, *range(k)])
    box_rows = (order[:, None] * 4 + torch.arange(4)).reshape(-1)
    ours = model.roi_heads.box_predictor
    _copy_layer(predictor.cls_score, ours.cls_score, order)
    _copy_layer(predictor.bbox_pred, ours.bbox_pred, box_rows)
    mean = [m / 255 for m in cfg.MODEL.PIXEL_MEAN]
    std = [s / 255 for s in cfg.MODEL.PIXEL_STD]
    twin = FasterRCNN(
        backbone,
        num_classes=None,
        min_size=cfg.INPUT.MIN_SIZE_TEST,
        max_size=cfg.INPUT.MAX_SIZE_TEST,
        image_mean=mean,
        image_std=std,
        rpn_anchor_generator=AnchorGenerator((tuple(a.SIZES),), (tuple(a.ASPECT_RATIOS),)),
        rpn_head=rpn_head,
        rpn_pre_nms_top_n_train=rpn.PRE_NMS_TOPK_TRAIN,
        rpn_pre_nms_top_n_test=rpn.PRE_NMS_TOPK_TEST,
        rpn_post_nms_top_n_train=rpn.POST_NMS_TOPK_TRAIN,
        rpn_post_nms_top_n_test=rpn.POST_NMS_TOPK_TEST,
        rpn_nms_thresh=rpn.NMS_THRESH,
        rpn_fg_iou_thresh=rpn.MATCHER.IOU_THRESHOLDS[1],
        rpn_bg_iou_thresh=rpn.MATCHER.IOU_THRESHOLDS[0],
        rpn_batch_size_per_image=rpn.SAMPLER.BATCH_SIZE_PER_IMAGE,
        rpn_positive_fraction=rpn.SAMPLER.POSITIVE_FRACTION,
        box_roi_pool=box_roi_pool,
        box_head=box_head,
        box_predictor=predictor,
        box_score_thresh=heads.SCORE_THRESH_TEST,
        box_nms_thresh=heads.NMS_THRESH_TEST,
        box_detections_per_img=heads.DETECTIONS_PER_IMAGE,
        box_fg_iou_thresh=heads.MATCHER.IOU_THRESHOLDS[1],
        box_bg_iou_thresh=heads.MATCHER.IOU_THRESHOLDS[1],
        box_batch_size_per_image=heads.SAMPLER.BATCH_SIZE_PER_IMAGE,
        box_positive_fraction=heads.SAMPLER.POSITIVE_FRACTION,
    )
    return twin


def compare_detections(ours: Instances, theirs: dict, num_classes: int) -> dict[str, float]:
    """How far the two sets of detections are apart: counts, and for each of ours the
    best-overlapping one of theirs of the same class (IoU, score difference)."""
    boxes = Boxes(theirs["boxes"])
    classes = theirs["labels"] - 1  # torchvision counts background as class 0
    matched_iou, score_gap = [], []
    if len(ours) and len(boxes):
        iou = pairwise_iou(ours.pred_boxes, boxes)
        iou[ours.pred_classes[:, None] != classes[None, :]] = -1
        best, index = iou.max(dim=1)
        matched_iou = best.tolist()
        score_gap = (ours.scores - theirs["scores"][index]).abs().tolist()
    return {
        "detkit": len(ours),
        "torchvision": len(boxes),
        "min_iou": min(matched_iou, default=1.0),
        "max_score_gap": max(score_gap, default=0.0),
    }


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def paired(run_ours, run_theirs, runs: int) -> dict[str, list[float]]:
    """Milliseconds of each, alternating (one warm-up each first)."""
    run_ours(), run_theirs()
    times: dict[str, list[float]] = {"detkit": [], "torchvision": []}
    for _ in range(runs):
        times["detkit"].append(_timed(run_ours))
        times["torchvision"].append(_timed(run_theirs))
    return times


def report(label: str, times: dict[str, list[float]]) -> str:
    ratios = [a / b for a, b in zip(times["detkit"], times["torchvision"])]
    parts = [
        f"{name} {statistics.median(v):.1f} ms ({min(v):.1f}-{max(v):.1f})"
        for name, v in times.items()
    ]
    return (
        f"{label}: {', '.join(parts)}; detkit / torchvision {statistics.median(ratios):.3f} "
        f"({min(ratios):.3f}-{max(ratios):.3f})"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Options may come before or after the config overrides.",
    )
    parser.add_argument("--config-file", default="configs/faster_rcnn_vgg16.yaml", metavar="FILE")
    parser.add_argument("--pooler", choices=["ROIPool", "ROIAlign"], default="ROIPool")
    parser.add_argument("--size", type=int_at_least(32), nargs=2, default=(600, 800))
    parser.add_argument("--runs", type=int_at_least(1), default=5, help="timed runs of each")
    parser.add_argument("--skip-training", action="store_true", help="time inference only")
    add_config_overrides_arguments(parser)
    add_debug_argument(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parse_args_anywhere(build_parser(), argv)
    cfg = get_cfg()
    cfg.merge_from_file(args.config_file)
    pooler = ["MODEL.ROI_HEADS.POOLER.NAME", args.pooler]
    if args.pooler == "ROIAlign":  # torchvision's MultiScaleRoIAlign: not aligned
        pooler += [
            "MODEL.ROI_HEADS.POOLER.SAMPLING_RATIO",
            2,
            "MODEL.ROI_HEADS.POOLER.ALIGNED",
            False,
        ]
    height, width = args.size
    sizes = ["INPUT.MIN_SIZE_TEST", min(height, width), "INPUT.MAX_SIZE_TEST", max(height, width)]
    cfg.merge_from_list([*COMPARABLE, *pooler, *sizes, *args.opts])
    torch.manual_seed(0)
    # MODEL.MEMORY_FORMAT measure (an override): the layout and the RoIAlign
    # implementations measured on this machine; other values: the model as built.
    model = select_memory_format(cfg, build_model(cfg), "inference").eval()
    twin = torchvision_twin(cfg, model).eval()
    image = torch.rand(3, height, width) * 255
    with torch.no_grad():
        (ours,) = model([{"image": image}])
        (theirs,) = twin([image / 255])
    agreement = compare_detections(ours["instances"], theirs, cfg.MODEL.ROI_HEADS.NUM_CLASSES)
    print(
        f"{args.config_file}, {args.pooler}, one {height}x{width} image, "
        f"{torch.get_num_threads()} threads"
    )
    print(
        f"detections: detkit {agreement['detkit']}, torchvision {agreement['torchvision']}; "
        f"worst matched IoU {agreement['min_iou']:.4f}, largest score gap "
        f"{agreement['max_score_gap']:.2e}"
    )
    with torch.no_grad():
        inference = paired(
            lambda: model([{"image": image}]), lambda: twin([image / 255]), args.runs
        )
    print(report("inference", inference))
    with torch.no_grad():
        memory = {
            "detkit": peak_increase_mb(lambda: model([{"image": image}])),
            "torchvision": peak_increase_mb(lambda: twin([image / 255])),
        }
    if None not in memory.values():
        print(
            "inference peak memory above the loaded models: "
            + ", ".join(f"{k} {v:.0f} MiB" for k, v in memory.items())
        )
    if not args.skip_training:
        boxes = torch.tensor([[50.0, 60.0, 250.0, 300.0], [300.0, 200.0, 500.0, 420.0]])
        classes = torch.tensor([3, 11])
        ours_input = [
            {"image": image, "instances": Instances((height, width), gt_boxes=Boxes(boxes),
                                                    gt_classes=classes)}
        ]  # fmt: skip
        theirs_target = [{"boxes": boxes, "labels": classes + 1}]
        model.train(), twin.train()
        ours_opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-6)
        theirs_opt = torch.optim.SGD([p for p in twin.parameters() if p.requires_grad], lr=1e-6)

        def step(net, optimizer, *inputs):
            losses = net(*inputs)
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()

        training = paired(
            lambda: step(model, ours_opt, ours_input),
            lambda: step(twin, theirs_opt, [image / 255], theirs_target),
            args.runs,
        )
        print(report("training step", training))
        memory = {
            "detkit": peak_increase_mb(lambda: step(model, ours_opt, ours_input)),
            "torchvision": peak_increase_mb(
                lambda: step(twin, theirs_opt, [image / 255], theirs_target)
            ),
        }
        if None not in memory.values():
            print(
                "training step peak memory above the loaded models: "
                + ", ".join(f"{k} {v:.0f} MiB" for k, v in memory.items())
            )
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
