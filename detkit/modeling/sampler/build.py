"""The sampler registry, the ``Sampler`` interface and its builder."""

from __future__ import annotations

from abc import ABCMeta, abstractmethod

from torch import Tensor

from detkit.registry import Registry, build_from_config

__all__ = ["SAMPLER_REGISTRY", "Sampler", "build_sampler"]

SAMPLER_REGISTRY = Registry("SAMPLER")
SAMPLER_REGISTRY.__doc__ = """
Samplers: choose which labelled anchors or RoIs enter the loss.

A member is a ``Sampler``, built from its node (``MODEL.RPN.SAMPLER`` or
``MODEL.ROI_HEADS.SAMPLER``). ``__call__(labels: Tensor[N], scores=None, losses=None)``,
labels 1 positive, 0 negative, -1 ignore; ``losses: Tensor[N]`` per-example losses for
samplers whose ``needs_losses`` is True. Returns ``(positive_idx, negative_idx)``, int64
index tensors into the N examples, disjoint and without repeats.
"""


class Sampler(metaclass=ABCMeta):
    """Picks positive and negative examples from labels (and optionally losses)."""

    #: True when ``__call__`` needs per-example ``losses`` (the caller computes them).
    needs_losses: bool = False

    @abstractmethod
    def __call__(
        self, labels: Tensor, scores: Tensor | None = None, losses: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """``labels Tensor[N]`` -> ``(positive_idx, negative_idx)``."""


def build_sampler(cfg, node, input_shape=None, **overrides) -> Sampler:
    """Build ``node.NAME`` (e.g. ``cfg.MODEL.RPN.SAMPLER``) from ``SAMPLER_REGISTRY``."""
    return build_from_config(SAMPLER_REGISTRY, cfg, node, input_shape, Sampler, **overrides)
