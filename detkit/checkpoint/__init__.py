"""Checkpoints: atomic saves, resume, and ImageNet / URL / torchvision:// weights."""

from detkit.checkpoint.checkpoint_file import CheckpointReadError
from detkit.checkpoint.detection_checkpoint import (
    DetectionCheckpointer,
    atomic_write,
    non_finite_tensors,
)
from detkit.checkpoint.imagenet import (
    TORCHVISION_SCHEME,
    cached_torchvision_weights,
    convert_imagenet_state_dict,
    detect_imagenet_format,
    resolve_torchvision_url,
)
from detkit.checkpoint.rng_state import RNGState

__all__ = [
    "TORCHVISION_SCHEME",
    "CheckpointReadError",
    "DetectionCheckpointer",
    "RNGState",
    "atomic_write",
    "cached_torchvision_weights",
    "convert_imagenet_state_dict",
    "detect_imagenet_format",
    "non_finite_tensors",
    "resolve_torchvision_url",
]
