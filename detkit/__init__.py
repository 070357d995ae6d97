"""detkit: a Detectron-style object-detection framework; Faster R-CNN is its reference detector."""

__version__ = "0.1.0"
