"""Small layers and shape descriptions shared by the modeling packages."""

from detkit.layers.shape_spec import ShapeSpec

__all__ = ["ShapeSpec"]
