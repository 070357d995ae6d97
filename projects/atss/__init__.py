"""ATSS: Adaptive Training Sample Selection as a matcher (``ATSSMatcher``).

Importing this package registers ``ATSSMatcher`` in ``MATCHER_REGISTRY`` and
``add_atss_config`` (``MODEL.ATSS``) as a config extension.
"""

from projects.atss.config import add_atss_config
from projects.atss.matcher import ATSSMatcher

__all__ = ["ATSSMatcher", "add_atss_config"]
