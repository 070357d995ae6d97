"""Matchers: assign anchors and proposals to ground-truth boxes."""

from detkit.modeling.matcher.build import MATCHER_REGISTRY, Matcher, MatchInputs, build_matcher
from detkit.modeling.matcher.iou_matcher import IoUMatcher

__all__ = ["IoUMatcher", "MATCHER_REGISTRY", "MatchInputs", "Matcher", "build_matcher"]
