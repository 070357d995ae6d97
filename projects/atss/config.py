"""Config keys of the ATSS project (``MODEL.ATSS``)."""

from __future__ import annotations

from detkit.config import CfgNode as CN
from detkit.config import register_config_extension

__all__ = ["add_atss_config"]


@register_config_extension
def add_atss_config(cfg: CN) -> None:
    """Add ``MODEL.ATSS`` to ``cfg``, in place (defaults: the paper's and official code's).

    Applied by detkit when a config lists ``projects.atss`` in ``IMPORTS``; call it yourself
    on a ``get_cfg()`` to set the keys from Python. ``ATSSMatcher`` reads these keys wherever
    a matcher node names it (``MODEL.RPN.MATCHER.NAME``, ``MODEL.RETINANET.MATCHER.NAME``,
    a plugin's), so the keys do not depend on which other plugins define matcher nodes.
    """
    cfg.MODEL.ATSS = CN()  # ATSSMatcher (projects/atss): adaptive training sample selection
    cfg.MODEL.ATSS.TOPK = 9  # candidates nearest to each object's centre, per feature level
    cfg.MODEL.ATSS.CENTER_IN_GT_EPS = 0.01  # px a positive's centre lies inside each box side
