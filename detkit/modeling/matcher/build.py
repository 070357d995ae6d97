"""The matcher registry, the ``Matcher`` interface and its builder."""

from __future__ import annotations

from abc import ABCMeta, abstractmethod

from torch import Tensor

from detkit.registry import Registry, build_from_config

__all__ = ["MATCHER_REGISTRY", "Matcher", "build_matcher"]

MATCHER_REGISTRY = Registry("MATCHER")
MATCHER_REGISTRY.__doc__ = """
Matchers: assign each anchor or proposal to a ground-truth box and label it.

A member is a ``Matcher``, built from its node (``MODEL.RPN.MATCHER`` or
``MODEL.ROI_HEADS.MATCHER``). ``__call__(match_quality_matrix: Tensor[M, N])`` (M ground
truths by N predictions, e.g. IoU) returns ``(matches: Tensor[N] int64`` index of the
matched ground truth, ``labels: Tensor[N] int8)`` with 1 positive, 0 negative, -1 ignore.
With M = 0 (no ground truth) ``matches`` is all 0 and every prediction gets the label of
the interval that contains IoU 0 (RPN defaults: negative; Fast R-CNN: background).
"""


class Matcher(metaclass=ABCMeta):
    """Assigns predictions to ground truths from a quality matrix."""

    @abstractmethod
    def __call__(self, match_quality_matrix: Tensor) -> tuple[Tensor, Tensor]:
        """``Tensor[M, N]`` -> ``(matches Tensor[N], labels Tensor[N])``."""


def build_matcher(cfg, node, input_shape=None, **overrides) -> Matcher:
    """Build ``node.NAME`` (e.g. ``cfg.MODEL.RPN.MATCHER``) from ``MATCHER_REGISTRY``."""
    return build_from_config(MATCHER_REGISTRY, cfg, node, input_shape, Matcher, **overrides)
