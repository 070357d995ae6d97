"""Small layers and shape descriptions shared by the modeling packages."""

from detkit.layers.norm import NORM_NAMES, convert_frozen_batchnorm, freeze_module, get_norm
from detkit.layers.shape_spec import ShapeSpec

__all__ = ["NORM_NAMES", "ShapeSpec", "convert_frozen_batchnorm", "freeze_module", "get_norm"]
