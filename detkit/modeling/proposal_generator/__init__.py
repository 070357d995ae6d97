"""Proposal generators: the RPN and its head, and proposals computed beforehand."""

from detkit.modeling.proposal_generator.build import (
    PROPOSAL_GENERATOR_REGISTRY,
    RPN_HEAD_REGISTRY,
    build_proposal_generator,
    build_rpn_head,
)
from detkit.modeling.proposal_generator.precomputed import PrecomputedProposals
from detkit.modeling.proposal_generator.proposals import find_top_proposals
from detkit.modeling.proposal_generator.rpn import RPN
from detkit.modeling.proposal_generator.rpn_head import StandardRPNHead

__all__ = [
    "PROPOSAL_GENERATOR_REGISTRY",
    "PrecomputedProposals",
    "RPN",
    "RPN_HEAD_REGISTRY",
    "StandardRPNHead",
    "build_proposal_generator",
    "build_rpn_head",
    "find_top_proposals",
]
