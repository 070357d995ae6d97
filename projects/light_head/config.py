"""Config keys of the light head project (``MODEL.LIGHT_HEAD``)."""

from __future__ import annotations

from detkit.config import CfgNode as CN
from detkit.config import register_config_extension

__all__ = ["add_light_head_config"]


@register_config_extension
def add_light_head_config(cfg: CN) -> None:
    """Add ``MODEL.LIGHT_HEAD`` to ``cfg``, in place.

    Applied by detkit when a config lists ``projects.light_head`` in ``IMPORTS``; call it
    yourself on a ``get_cfg()`` to set the keys from Python. The fully connected part of the
    head keeps reading ``MODEL.ROI_BOX_HEAD.NUM_FC``, ``FC_DIM`` and ``DROPOUT``, so the
    light head differs from ``ConvFCHead`` only by what these keys add.
    """
    cfg.MODEL.LIGHT_HEAD = CN()  # LightConvHead (projects/light_head)
    cfg.MODEL.LIGHT_HEAD.REDUCED_DIM = 64  # channels of the 1x1 conv before the first fc
