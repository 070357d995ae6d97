"""ROI heads: Fast R-CNN classification and box regression on proposals."""

from detkit.modeling.roi_heads.box_head import ConvFCHead, VGGFCHead
from detkit.modeling.roi_heads.build import (
    ROI_BOX_HEAD_REGISTRY,
    ROI_HEADS_REGISTRY,
    build_roi_box_head,
    build_roi_heads,
    quantize_box_head,
)
from detkit.modeling.roi_heads.fast_rcnn import (
    FastRCNNOutputLayers,
    fast_rcnn_inference_single_image,
)
from detkit.modeling.roi_heads.res5_head import Res5Head
from detkit.modeling.roi_heads.standard import StandardROIHeads

__all__ = [
    "ConvFCHead",
    "FastRCNNOutputLayers",
    "ROI_BOX_HEAD_REGISTRY",
    "ROI_HEADS_REGISTRY",
    "Res5Head",
    "StandardROIHeads",
    "VGGFCHead",
    "build_roi_box_head",
    "build_roi_heads",
    "fast_rcnn_inference_single_image",
    "quantize_box_head",
]
