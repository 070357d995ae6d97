"""The proposal generator and RPN head registries and their builders."""

from __future__ import annotations

from torch import nn

from detkit.layers import ShapeSpec
from detkit.registry import Registry, build_from_config

__all__ = [
    "PROPOSAL_GENERATOR_REGISTRY",
    "RPN_HEAD_REGISTRY",
    "build_proposal_generator",
    "build_rpn_head",
]

PROPOSAL_GENERATOR_REGISTRY = Registry("PROPOSAL_GENERATOR")
PROPOSAL_GENERATOR_REGISTRY.__doc__ = """
Proposal generators: class-agnostic candidate boxes for the ROI heads (e.g. the RPN).

A member is an ``nn.Module`` built with ``input_shape`` the backbone's
``{name: ShapeSpec}``. ``forward(images: ImageList, features: dict[str, Tensor],
gt_instances: list[Instances] | None, input_proposals: list[Instances] | None = None)``
returns ``(proposals, losses)``: one ``Instances(proposal_boxes: Boxes, objectness_logits:
Tensor[P])`` per image, in the padded input's pixels, sorted by objectness; and a dict of
scalar losses (empty at inference). ``input_proposals`` are the proposals that came with the
inputs (the dataset mapper's ``"proposals"``, from ``DATASETS.PROPOSAL_FILES_*``), or None:
``PrecomputedProposals`` passes them on, generators that compute their own ignore them.
"""

RPN_HEAD_REGISTRY = Registry("RPN_HEAD")
RPN_HEAD_REGISTRY.__doc__ = """
RPN heads: the small network slid over the shared feature map (paper 3.1).

A member is an ``nn.Module`` built with ``input_shape`` a list of ``ShapeSpec`` (one per
map the RPN reads). ``forward(features: list[Tensor[B, C, H, W]])`` returns
``(objectness_logits, anchor_deltas)``: per map, ``Tensor[B, A, H, W]`` of logits
(sigmoid; softmax heads return the positive-minus-negative logit difference, which has the
same sigmoid) and ``Tensor[B, 4 * A, H, W]`` of deltas.
"""


def build_proposal_generator(cfg, node=None, input_shape=None, **overrides) -> nn.Module:
    """Build ``node.NAME`` (default ``cfg.MODEL.PROPOSAL_GENERATOR``)."""
    node = cfg.MODEL.PROPOSAL_GENERATOR if node is None else node
    return build_from_config(
        PROPOSAL_GENERATOR_REGISTRY, cfg, node, input_shape, nn.Module, **overrides
    )


def build_rpn_head(
    cfg, node=None, input_shape: list[ShapeSpec] | None = None, **overrides
) -> nn.Module:
    """Build ``node.NAME`` (default ``cfg.MODEL.RPN.HEAD``)."""
    node = cfg.MODEL.RPN.HEAD if node is None else node
    return build_from_config(RPN_HEAD_REGISTRY, cfg, node, input_shape, nn.Module, **overrides)
