"""Small layers and shape descriptions shared by the modeling packages."""

from detkit.layers.freeze import freeze_modules_by_name
from detkit.layers.low_rank import LowRankLinear, factorize_linears
from detkit.layers.norm import NORM_NAMES, convert_frozen_batchnorm, freeze_module, get_norm
from detkit.layers.quantize import QUANTIZE_MODES, quantize_linears
from detkit.layers.shape_spec import ShapeSpec

__all__ = [
    "LowRankLinear",
    "NORM_NAMES",
    "QUANTIZE_MODES",
    "ShapeSpec",
    "convert_frozen_batchnorm",
    "factorize_linears",
    "freeze_module",
    "freeze_modules_by_name",
    "get_norm",
    "quantize_linears",
]
