"""Samplers: choose the labelled examples that enter a loss."""

from detkit.modeling.sampler.build import SAMPLER_REGISTRY, Sampler, build_sampler

__all__ = ["SAMPLER_REGISTRY", "Sampler", "build_sampler"]
