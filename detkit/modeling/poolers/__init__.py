"""RoI poolers: fixed-size region features (torchvision RoIPool / RoIAlign, and RoIAlign on
several maps concatenated or by level)."""

from detkit.modeling.poolers.build import ROI_POOLER_REGISTRY, ROIPooler, build_roi_pooler
from detkit.modeling.poolers.concat import ConcatROIAlign
from detkit.modeling.poolers.multilevel import MultiLevelROIAlign, assign_levels
from detkit.modeling.poolers.roi_pool import ROIAlign, ROIPool, SingleMapROIPooler

__all__ = [
    "ConcatROIAlign",
    "MultiLevelROIAlign",
    "ROIAlign",
    "ROIPool",
    "ROIPooler",
    "ROI_POOLER_REGISTRY",
    "SingleMapROIPooler",
    "assign_levels",
    "build_roi_pooler",
]
