"""The meta-architecture registry and ``build_model``."""

from __future__ import annotations

import logging

import torch
from torch import nn

from detkit.layers import freeze_modules_by_name
from detkit.modeling.layout import (
    LAYOUTS,
    apply_memory_format,
    choose_memory_format,
    choose_roi_align,
    layout_cache_path,
)
from detkit.modeling.poolers.roi_pool import ROIAlign
from detkit.modeling.preprocessing import ImagePreprocessor
from detkit.registry import Registry, build_from_config

__all__ = [
    "MEMORY_FORMATS",
    "META_ARCH_REGISTRY",
    "build_model",
    "check_num_classes",
    "resolve_device",
    "resolve_memory_format",
    "select_memory_format",
]

logger = logging.getLogger(__name__)

MEMORY_FORMATS = ("auto", "channels_last", "contiguous", "measure")  # MODEL.MEMORY_FORMAT

META_ARCH_REGISTRY = Registry("META_ARCH")
META_ARCH_REGISTRY.__doc__ = """
Meta-architectures: whole detectors assembled from the other registries.

A member is an ``nn.Module``. ``forward(batched_inputs: list[dict])`` takes one dict per
image with ``"image": Tensor[C, H, W]`` (and, in training, ``"instances"`` holding
``gt_boxes`` and ``gt_classes``; optionally ``"height"``/``"width"`` of the original
image). In training it returns a dict of scalar losses; in inference a list with one dict
per image, ``{"instances": Instances(pred_boxes, scores, pred_classes)}`` (or
``{"proposals": ...}`` for proposal-only models) in original image coordinates. A class
attribute ``output_kind`` ("instances" or "proposals"; "instances" when absent) names which,
so that the evaluation of a config picks detection AP or proposal recall. A class
attribute ``num_classes_key`` names the config key holding its number of classes (None for
class-agnostic models), which :func:`check_num_classes` compares with the datasets'.
"""


def resolve_device(name: str) -> torch.device:
    """``MODEL.DEVICE`` to a device: "auto" is CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"MODEL.DEVICE is '{name}' but CUDA is not available on this machine; "
            "set MODEL.DEVICE to 'auto' or 'cpu'."
        )
    return device


def resolve_memory_format(name: str, device: torch.device) -> torch.memory_format:
    """``MODEL.MEMORY_FORMAT`` to the format a model is built in: "auto" is ``channels_last``
    on the CPU, where oneDNN's convolutions ran faster on it on the machine that chose it
    (the quickstart's backbone forward about 13%, docs/quickstart.md), and the default
    contiguous layout on CUDA. "measure" (the default) starts the same way; the trainer and
    the predictor then time both layouts for their mode (:func:`select_memory_format`)."""
    if name not in MEMORY_FORMATS:
        raise ValueError(
            f"Unknown MODEL.MEMORY_FORMAT '{name}'; valid: "
            f"{', '.join(repr(n) for n in MEMORY_FORMATS)}."
        )
    if name == "channels_last" or (name in ("auto", "measure") and device.type == "cpu"):
        return torch.channels_last
    return torch.contiguous_format


def select_memory_format(cfg, model: nn.Module, mode: str) -> nn.Module:
    """With ``MODEL.MEMORY_FORMAT "measure"`` on the CPU, convert ``model`` to the layout that
    runs its backbone faster on this machine in ``mode`` ("training" or "inference"),
    measured once on an image of the mode's size and cached
    (:func:`detkit.modeling.layout.choose_memory_format`), and give each ``ROIAlign`` left
    at "auto" the faster implementation for each mode; otherwise leave it as built."""
    if cfg.MODEL.MEMORY_FORMAT != "measure" or not isinstance(
        getattr(model, "backbone", None), nn.Module
    ):
        return model  # a meta-architecture without a backbone keeps the layout it was built in
    device = next(model.parameters()).device
    if device.type != "cpu":
        return apply_memory_format(model, torch.contiguous_format)
    size = _mode_image_size(cfg, mode)
    name, entry = choose_memory_format(model.backbone, mode, size)
    timings = ", ".join(f"{k} {v:.1f} ms" for k, v in entry["ms"].items())
    logger.info(
        f"MODEL.MEMORY_FORMAT measure: {name} for {mode} on this CPU (backbone on a "
        f"{size[0]}x{size[1]} image: {timings}; cached in {layout_cache_path()})"
    )
    model = apply_memory_format(model, LAYOUTS[name])
    _select_roi_align(cfg, model, LAYOUTS[name])
    return model


def _mode_image_size(cfg, mode: str) -> tuple[int, int]:
    """``(H, W)`` timed for ``mode``: the largest training or the test shorter side, 4:3."""
    short = max(cfg.INPUT.MIN_SIZE_TRAIN) if mode == "training" else cfg.INPUT.MIN_SIZE_TEST
    return int(short), int(round(short * 4 / 3))


def _select_roi_align(cfg, model: nn.Module, memory_format: torch.memory_format) -> None:
    """Per mode, the faster implementation of every ``ROIAlign`` left at "auto" that could
    use either (a fixed sampling ratio): timed on a map of the mode's image size with the
    mode's number of RoIs per image (sampled RoIs in training, RPN proposals at test)."""
    for module_name, pooler in model.named_modules():
        if not isinstance(pooler, ROIAlign) or pooler.implementation != "auto":
            continue
        if pooler.sampling_ratio <= 0:
            continue  # only torchvision's kernel does adaptive sampling
        stride = round(1.0 / pooler.spatial_scale)
        for mode in ("training", "inference"):
            height, width = _mode_image_size(cfg, mode)
            size = (-(-height // stride), -(-width // stride))  # the map: ceil(size / stride)
            rois = (
                cfg.MODEL.ROI_HEADS.SAMPLER.BATCH_SIZE_PER_IMAGE
                if mode == "training"
                else cfg.MODEL.RPN.POST_NMS_TOPK_TEST
            )
            choice, entry = choose_roi_align(pooler, mode, size, rois, memory_format=memory_format)
            pooler.implementation_by_mode[mode] = choice
            timings = ", ".join(f"{k} {v:.2f} ms" for k, v in entry["ms"].items())
            logger.info(f"{module_name}: {choice} RoIAlign for {mode} ({timings})")


def build_model(cfg, **overrides) -> nn.Module:
    """Build ``cfg.MODEL.META_ARCHITECTURE``, freeze ``MODEL.FROZEN_MODULES`` and move it to
    ``MODEL.DEVICE`` in ``MODEL.MEMORY_FORMAT`` (4-D weights). Every
    :class:`~detkit.modeling.preprocessing.ImagePreprocessor` in the model lays its image
    batch out in that format too, so feature maps follow without a conversion."""
    model = build_from_config(
        META_ARCH_REGISTRY,
        cfg,
        cfg.MODEL,
        None,
        nn.Module,
        name_key="META_ARCHITECTURE",
        **overrides,
    )
    if cfg.MODEL.FROZEN_MODULES:
        frozen = freeze_modules_by_name(model, list(cfg.MODEL.FROZEN_MODULES))
        logger.info("Frozen (MODEL.FROZEN_MODULES): %s", ", ".join(frozen))
    device = resolve_device(cfg.MODEL.DEVICE)
    memory_format = resolve_memory_format(cfg.MODEL.MEMORY_FORMAT, device)
    for module in model.modules():
        if isinstance(module, ImagePreprocessor):
            module.memory_format = memory_format
    return model.to(device=device, memory_format=memory_format)


def check_num_classes(cfg, dataset_names=None) -> None:
    """Refuse a run whose model predicts another number of classes than its datasets have.

    The key is the meta-architecture's ``num_classes_key`` (``MODEL.ROI_HEADS.NUM_CLASSES``
    for Faster R-CNN); datasets whose ``thing_classes`` are not known yet are skipped. Too
    few classes would be learned as background, too many never trained: both run to the
    end without a word, so the run stops before it starts.

    Args:
        dataset_names: names to check (e.g. only ``DATASETS.TEST`` when evaluating);
            default ``DATASETS.TRAIN`` then ``DATASETS.TEST``.

    Raises:
        ValueError: naming the dataset, the key, both numbers and the fix.
    """
    from detkit.data import MetadataCatalog

    key = getattr(META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE), "num_classes_key", None)
    if key is None:
        return
    node = cfg
    for part in key.split("."):
        node = getattr(node, part)
    num_classes = int(node)
    if dataset_names is None:
        dataset_names = [("DATASETS.TRAIN", n) for n in cfg.DATASETS.TRAIN] + [
            ("DATASETS.TEST", n) for n in cfg.DATASETS.TEST
        ]
    else:
        test = set(cfg.DATASETS.TEST)
        dataset_names = [("DATASETS.TEST" if n in test else "given", n) for n in dataset_names]
    for where, name in dataset_names:
        known = name in MetadataCatalog
        classes = MetadataCatalog.get(name).get("thing_classes") if known else None
        if classes is None or len(classes) == num_classes:
            continue
        shown = ", ".join(classes[:10]) + (", ..." if len(classes) > 10 else "")
        raise ValueError(
            f"{key} is {num_classes}, but dataset '{name}' ({where}) has {len(classes)} "
            f"classes ({shown}). With fewer, the other classes would be learned as "
            f"background; with more, some outputs are never trained. Set {key} "
            f"{len(classes)} (fine-tuning a checkpoint of another class count is fine: its "
            "predictor weights are skipped with a message)."
        )
