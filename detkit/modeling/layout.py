"""The memory format of a model chosen by measurement (``MODEL.MEMORY_FORMAT "measure"``).

Which layout is faster, channels_last or contiguous, depends on the CPU and on the mode: on
one 2-core machine channels_last sped the quickstart's backbone forward up by 13%, on
another it made VGG16's backward twice as slow. ``"measure"`` times the model's backbone in
both layouts, on one image of the training (or test) size, forward (and backward when
training), alternating the layouts; the faster median wins. The result is cached in
``$DETKIT_CACHE/layout.json`` per CPU model, torch version, thread count, mode, backbone
(class and parameter shapes) and input size, so a machine measures once. CUDA always uses
the contiguous layout (no measurement).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from detkit.modeling.preprocessing import ImagePreprocessor
from detkit.utils.io import atomic_write_text, detkit_cache_dir

__all__ = [
    "LAYOUTS",
    "MODES",
    "ROI_ALIGN_IMPLEMENTATIONS",
    "apply_memory_format",
    "choose_memory_format",
    "choose_roi_align",
    "layout_cache_key",
    "layout_cache_path",
    "time_layouts",
]

logger = logging.getLogger(__name__)

LAYOUTS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}
MODES = ("training", "inference")
ROI_ALIGN_IMPLEMENTATIONS = ("separable", "torchvision")


def layout_cache_path() -> str:
    """``layout.json`` under :func:`detkit.utils.io.detkit_cache_dir` (``$DETKIT_CACHE``, else
    ``$XDG_CACHE_HOME/detkit``, else ``~/.cache/detkit``)."""
    return os.path.join(detkit_cache_dir(), "layout.json")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _machine() -> str:
    """What a timing depends on besides the work: CPU model, torch version, threads."""
    return f"{_cpu_model()} | torch {torch.__version__} | {torch.get_num_threads()} threads"


def layout_cache_key(backbone: nn.Module, mode: str, input_size: tuple[int, int]) -> str:
    """What the measurement depends on: CPU model, torch version, threads, mode, the
    backbone (class and parameter shapes) and the input size."""
    shapes = [(name, tuple(p.shape)) for name, p in backbone.named_parameters()]
    signature = hashlib.sha1(repr((type(backbone).__name__, shapes)).encode()).hexdigest()[:12]
    return (
        f"{_machine()} | {mode} | {type(backbone).__name__} {signature} | "
        f"{input_size[0]}x{input_size[1]}"
    )


def time_layouts(
    backbone: nn.Module, mode: str, input_size: tuple[int, int], repeats: int = 3
) -> dict[str, float]:
    """Median milliseconds of one backbone forward (``"inference"``) or forward + backward
    (``"training"``) on a ``1 x C x H x W`` image in each layout, the layouts alternating
    (after one warm-up run each), on a copy of the backbone: the backbone is left as it was."""
    if mode not in MODES:
        raise ValueError(f"Layout mode must be one of {MODES}; got '{mode}'.")
    channels = next(p for p in backbone.parameters() if p.dim() == 4).shape[1]
    # A private generator and a copy of the backbone: timing must not change what the run
    # computes afterwards (the global random stream, batch norm's running statistics, the
    # gradients), or a run that measures would differ from one that reads the cache.
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(1, channels, *input_size, generator=generator)
    backbone = copy.deepcopy(backbone).train(mode == "training")
    times: dict[str, list[float]] = {name: [] for name in LAYOUTS}
    for round_index in range(repeats + 1):
        for name, memory_format in LAYOUTS.items():
            elapsed = _time_once(backbone, image, memory_format, mode)
            if round_index > 0:  # the first round warms up
                times[name].append(elapsed)
    return {name: statistics.median(values) for name, values in times.items()}


def _time_once(backbone: nn.Module, image, memory_format, mode: str) -> float:
    backbone.to(memory_format=memory_format)
    batch = image.contiguous(memory_format=memory_format)
    start = time.perf_counter()
    # A backbone frozen whole (e.g. the alternating scheme's later steps) trains no weight:
    # its training cost is its forward.
    if mode == "training" and any(p.requires_grad for p in backbone.parameters()):
        with torch.enable_grad():  # callers may run under no_grad (inference)
            outputs = backbone(batch)
            sum(o.float().mean() for o in outputs.values()).backward()
    else:
        with torch.no_grad():
            backbone(batch)
    return (time.perf_counter() - start) * 1000


def time_roi_align(
    pooler: nn.Module,
    mode: str,
    feature_size: tuple[int, int],
    num_rois: int,
    repeats: int = 3,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> dict[str, float]:
    """Median milliseconds of ``pooler`` (a ``ROIAlign``) with each implementation on one
    ``1 x C x H x W`` map in ``memory_format`` and ``num_rois`` boxes of 16 to 400 px,
    forward (``"inference"``) or forward + backward into the map (``"training"``),
    alternating. The pooler is left as it was."""
    height, width = feature_size
    stride = 1.0 / pooler.spatial_scale
    generator = torch.Generator().manual_seed(0)
    corners = torch.rand(num_rois, 2, generator=generator) * torch.tensor([width, height]) * stride
    sides = 16 + torch.rand(num_rois, 2, generator=generator) * 384
    boxes = torch.cat([corners, corners + sides], dim=1)
    feature = torch.randn(1, pooler.in_channels, height, width, generator=generator)
    feature = feature.contiguous(memory_format=memory_format).requires_grad_(mode == "training")
    before = (pooler.implementation, dict(pooler.implementation_by_mode))
    times: dict[str, list[float]] = {name: [] for name in ROI_ALIGN_IMPLEMENTATIONS}
    try:
        for round_index in range(repeats + 1):
            for name in ROI_ALIGN_IMPLEMENTATIONS:
                pooler.implementation, pooler.implementation_by_mode = name, {}
                start = time.perf_counter()
                if mode == "training":
                    with torch.enable_grad():  # callers may run under no_grad (inference)
                        pooler._pool(feature, [boxes]).sum().backward()
                else:
                    with torch.no_grad():
                        pooler._pool(feature, [boxes])
                if round_index > 0:
                    times[name].append((time.perf_counter() - start) * 1000)
    finally:
        pooler.implementation, pooler.implementation_by_mode = before
    return {name: statistics.median(values) for name, values in times.items()}


def choose_roi_align(
    pooler: nn.Module,
    mode: str,
    feature_size: tuple[int, int],
    num_rois: int,
    cache_path: str | None = None,
    timer: Callable[..., dict[str, float]] = time_roi_align,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> tuple[str, dict]:
    """The faster RoIAlign implementation for ``pooler`` in ``mode`` on this machine (its
    map in ``memory_format``), from the cache or measured by ``timer`` and cached (as
    :func:`choose_memory_format`)."""
    layout = "channels_last" if memory_format == torch.channels_last else "contiguous"
    key = (
        f"{_machine()} | {mode} | ROIAlign C{pooler.in_channels} P{pooler.output_size} "
        f"r{pooler.sampling_ratio} {layout} | {feature_size[0]}x{feature_size[1]} | "
        f"{num_rois} RoIs"
    )
    entry = _cached_choice(
        cache_path or layout_cache_path(),
        key,
        "implementation",
        ROI_ALIGN_IMPLEMENTATIONS,
        lambda: timer(pooler, mode, feature_size, num_rois, memory_format=memory_format),
    )
    return entry["implementation"], entry


def choose_memory_format(
    backbone: nn.Module,
    mode: str,
    input_size: tuple[int, int],
    cache_path: str | None = None,
    timer: Callable[..., dict[str, float]] = time_layouts,
) -> tuple[str, dict]:
    """The faster layout for ``backbone`` in ``mode`` on this machine: from the cache, or
    measured by ``timer`` and cached.

    Returns:
        ``(layout name, cache entry)``: the entry holds the milliseconds of each layout.
    """
    entry = _cached_choice(
        cache_path or layout_cache_path(),
        layout_cache_key(backbone, mode, input_size),
        "layout",
        tuple(LAYOUTS),
        lambda: timer(backbone, mode, input_size),
    )
    return entry["layout"], entry


def _cached_choice(
    path: str, key: str, field: str, choices: tuple[str, ...], measure: Callable[[], dict]
) -> dict:
    """The cache entry ``{field: the fastest of choices, "ms": {choice: ms}}`` of ``key``:
    read from ``path``, or measured (``measure()`` gives the milliseconds) and written."""
    cache = _read_cache(path)
    entry = cache.get(key)
    if entry is None or entry.get(field) not in choices:
        milliseconds = measure()
        entry = {field: min(milliseconds, key=milliseconds.get), "ms": milliseconds}
        cache[key] = entry
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write_text(path, json.dumps(cache, indent=1, sort_keys=True))
    return entry


def _read_cache(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            cache = json.load(f)
        return cache if isinstance(cache, dict) else {}
    except (OSError, ValueError):
        return {}  # no cache yet, or an unreadable one: measure again


def apply_memory_format(model: nn.Module, memory_format: torch.memory_format) -> nn.Module:
    """Convert the model's 4-D weights to ``memory_format`` and give every
    :class:`ImagePreprocessor` in it the same format for its batches."""
    for module in model.modules():
        if isinstance(module, ImagePreprocessor):
            module.memory_format = memory_format
    return model.to(memory_format=memory_format)
