"""Proposal generators: the RPN and its head."""

from detkit.modeling.proposal_generator.build import (
    PROPOSAL_GENERATOR_REGISTRY,
    RPN_HEAD_REGISTRY,
    build_proposal_generator,
    build_rpn_head,
)

__all__ = [
    "PROPOSAL_GENERATOR_REGISTRY",
    "RPN_HEAD_REGISTRY",
    "build_proposal_generator",
    "build_rpn_head",
]
