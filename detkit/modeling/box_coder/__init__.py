"""Box coders: regression targets between reference boxes and boxes (Eq. 2)."""

from detkit.modeling.box_coder.build import BOX_CODER_REGISTRY, BoxCoder, build_box_coder
from detkit.modeling.box_coder.delta_xywh import DeltaXYWHBoxCoder

__all__ = ["BOX_CODER_REGISTRY", "BoxCoder", "DeltaXYWHBoxCoder", "build_box_coder"]
