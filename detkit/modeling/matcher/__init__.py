"""Matchers: assign anchors and proposals to ground-truth boxes."""

from detkit.modeling.matcher.build import MATCHER_REGISTRY, Matcher, build_matcher

__all__ = ["MATCHER_REGISTRY", "Matcher", "build_matcher"]
