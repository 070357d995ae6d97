"""RoI poolers: fixed-size region features (torchvision RoIPool / RoIAlign)."""

from detkit.modeling.poolers.build import ROI_POOLER_REGISTRY, ROIPooler, build_roi_pooler

__all__ = ["ROI_POOLER_REGISTRY", "ROIPooler", "build_roi_pooler"]
