"""ROI heads: Fast R-CNN classification and box regression on proposals."""

from detkit.modeling.roi_heads.build import (
    ROI_BOX_HEAD_REGISTRY,
    ROI_HEADS_REGISTRY,
    build_roi_box_head,
    build_roi_heads,
)

__all__ = ["ROI_BOX_HEAD_REGISTRY", "ROI_HEADS_REGISTRY", "build_roi_box_head", "build_roi_heads"]
