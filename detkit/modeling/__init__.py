"""Modeling: every component of a detector, each in its own registry.

Importing this package registers every built-in component, so the registries below are
complete once ``detkit.modeling`` is imported.
"""

from detkit.modeling.anchor_generator import (
    ANCHOR_GENERATOR_REGISTRY,
    AnchorGenerator,
    build_anchor_generator,
)
from detkit.modeling.backbone import (
    BACKBONE_REGISTRY,
    Backbone,
    build_backbone,
    select_feature_shapes,
)
from detkit.modeling.box_coder import BOX_CODER_REGISTRY, BoxCoder, build_box_coder
from detkit.modeling.matcher import MATCHER_REGISTRY, Matcher, build_matcher
from detkit.modeling.meta_arch import META_ARCH_REGISTRY, build_model
from detkit.modeling.poolers import ROI_POOLER_REGISTRY, ROIPooler, build_roi_pooler
from detkit.modeling.preprocessing import ImagePreprocessor, padding_multiple
from detkit.modeling.proposal_generator import (
    PROPOSAL_GENERATOR_REGISTRY,
    RPN_HEAD_REGISTRY,
    build_proposal_generator,
    build_rpn_head,
)
from detkit.modeling.roi_heads import (
    ROI_BOX_HEAD_REGISTRY,
    ROI_HEADS_REGISTRY,
    build_roi_box_head,
    build_roi_heads,
)
from detkit.modeling.sampler import SAMPLER_REGISTRY, Sampler, build_sampler

#: Every registry, by the name DESIGN.md and the component catalog use.
ALL_REGISTRIES = {
    "META_ARCH": META_ARCH_REGISTRY,
    "BACKBONE": BACKBONE_REGISTRY,
    "ANCHOR_GENERATOR": ANCHOR_GENERATOR_REGISTRY,
    "BOX_CODER": BOX_CODER_REGISTRY,
    "MATCHER": MATCHER_REGISTRY,
    "SAMPLER": SAMPLER_REGISTRY,
    "PROPOSAL_GENERATOR": PROPOSAL_GENERATOR_REGISTRY,
    "RPN_HEAD": RPN_HEAD_REGISTRY,
    "ROI_HEADS": ROI_HEADS_REGISTRY,
    "ROI_BOX_HEAD": ROI_BOX_HEAD_REGISTRY,
    "ROI_POOLER": ROI_POOLER_REGISTRY,
}

__all__ = [
    "ALL_REGISTRIES",
    "ANCHOR_GENERATOR_REGISTRY",
    "AnchorGenerator",
    "BACKBONE_REGISTRY",
    "BOX_CODER_REGISTRY",
    "Backbone",
    "BoxCoder",
    "ImagePreprocessor",
    "MATCHER_REGISTRY",
    "META_ARCH_REGISTRY",
    "Matcher",
    "PROPOSAL_GENERATOR_REGISTRY",
    "ROIPooler",
    "ROI_BOX_HEAD_REGISTRY",
    "ROI_HEADS_REGISTRY",
    "ROI_POOLER_REGISTRY",
    "RPN_HEAD_REGISTRY",
    "SAMPLER_REGISTRY",
    "Sampler",
    "build_anchor_generator",
    "build_backbone",
    "select_feature_shapes",
    "build_box_coder",
    "build_matcher",
    "build_model",
    "padding_multiple",
    "build_proposal_generator",
    "build_roi_box_head",
    "build_roi_heads",
    "build_roi_pooler",
    "build_rpn_head",
    "build_sampler",
]
