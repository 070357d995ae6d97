"""Meta-architectures: whole detectors assembled from registered components."""

from detkit.modeling.meta_arch.build import (
    META_ARCH_REGISTRY,
    build_model,
    check_num_classes,
    resolve_device,
    select_memory_format,
)
from detkit.modeling.meta_arch.rcnn import (
    GeneralizedRCNN,
    ProposalNetwork,
    detector_postprocess,
)

__all__ = [
    "GeneralizedRCNN",
    "META_ARCH_REGISTRY",
    "ProposalNetwork",
    "build_model",
    "check_num_classes",
    "detector_postprocess",
    "resolve_device",
    "select_memory_format",
]
