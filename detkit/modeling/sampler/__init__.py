"""Samplers: choose the labelled examples that enter a loss."""

from detkit.modeling.sampler.balanced import BalancedPositiveNegativeSampler
from detkit.modeling.sampler.build import SAMPLER_REGISTRY, Sampler, build_sampler
from detkit.modeling.sampler.ohem import OHEMSampler

__all__ = [
    "BalancedPositiveNegativeSampler",
    "OHEMSampler",
    "SAMPLER_REGISTRY",
    "Sampler",
    "build_sampler",
]
