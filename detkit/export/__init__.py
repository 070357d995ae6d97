"""Export of a trained detector for inference: to ONNX (run with onnxruntime) and to a
``torch.export`` program (``.pt2``). ``tools/export_model.py`` is the command line;
docs/export.md says what the exported graph contains and its limits."""

from detkit.export.check import Parity, check_inputs, compare_outputs, detector_input, median_ms
from detkit.export.formats import (
    FILE_NAMES,
    FORMATS,
    MAX_SIDE,
    MIN_SIDE,
    export_detector,
    load_exported,
    require_export_dependencies,
)
from detkit.export.wrapper import (
    SUPPORTED_META_ARCHITECTURES,
    ExportableDetector,
    FrozenBatchNorm1d,
    detector_outputs,
    output_names_of,
)

__all__ = [
    "FILE_NAMES",
    "FORMATS",
    "MAX_SIDE",
    "MIN_SIDE",
    "SUPPORTED_META_ARCHITECTURES",
    "ExportableDetector",
    "FrozenBatchNorm1d",
    "Parity",
    "check_inputs",
    "compare_outputs",
    "detector_input",
    "detector_outputs",
    "export_detector",
    "load_exported",
    "median_ms",
    "output_names_of",
    "require_export_dependencies",
]
