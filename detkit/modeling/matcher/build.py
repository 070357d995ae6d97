"""The matcher registry, the ``Matcher`` interface and its builder."""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from dataclasses import dataclass

from torch import Tensor

from detkit.registry import Registry, build_from_config
from detkit.structures import Boxes

__all__ = ["MATCHER_REGISTRY", "MatchInputs", "Matcher", "build_matcher"]

MATCHER_REGISTRY = Registry("MATCHER")
MATCHER_REGISTRY.__doc__ = """
Matchers: assign each anchor or proposal to a ground-truth box and label it.

A member is a ``Matcher``, built from its node (``MODEL.RPN.MATCHER``,
``MODEL.ROI_HEADS.MATCHER``, or a plugin's). ``__call__(inputs: MatchInputs)`` (one image:
M ground truths, N candidates, see :class:`MatchInputs`) returns ``(matches: Tensor[N]
int64`` index of the matched ground truth, ``labels: Tensor[N] int8)`` with 1 positive,
0 negative, -1 ignore. With M = 0 (no ground truth) ``matches`` is all 0. Candidates with
``valid`` False are labelled -1 by the caller whatever the matcher says.
"""


@dataclass
class MatchInputs:
    """What a matcher knows about one image (built by
    :func:`detkit.modeling.labeling.match_candidates`).

    Attributes:
        iou: ``Tensor[M, N]`` IoU of the M ground-truth boxes with the N candidates,
            computed once; -1 for candidates that are not ``valid``.
        gt_boxes: ``Boxes[M]``.
        candidates: ``Boxes[N]``: anchors or proposals.
        num_per_level: candidates per feature level, in the order of ``candidates`` (anchors
            of a feature pyramid), or None when they have no levels (proposals).
        valid: ``Tensor[N]`` bool, or None for all: candidates that may be labelled.
    """

    iou: Tensor
    gt_boxes: Boxes
    candidates: Boxes
    num_per_level: list[int] | None = None
    valid: Tensor | None = None


class Matcher(metaclass=ABCMeta):
    """Assigns candidates (anchors, proposals) to ground truths."""

    @abstractmethod
    def __call__(self, inputs: MatchInputs) -> tuple[Tensor, Tensor]:
        """One image's :class:`MatchInputs` -> ``(matches Tensor[N], labels Tensor[N])``."""


def build_matcher(cfg, node, input_shape=None, **overrides) -> Matcher:
    """Build ``node.NAME`` (e.g. ``cfg.MODEL.RPN.MATCHER``) from ``MATCHER_REGISTRY``."""
    return build_from_config(MATCHER_REGISTRY, cfg, node, input_shape, Matcher, **overrides)
