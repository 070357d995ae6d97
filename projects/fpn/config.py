"""Config keys of the FPN project (``MODEL.FPN``)."""

from __future__ import annotations

from detkit.config import CfgNode as CN
from detkit.config import register_config_extension

__all__ = ["add_fpn_config"]


@register_config_extension
def add_fpn_config(cfg: CN) -> None:
    """Add ``MODEL.FPN`` to ``cfg``, in place (defaults: the FPN paper's ResNet pyramid).

    Applied by detkit when a config lists ``projects.fpn`` in ``IMPORTS``. The pyramid is
    selected with ``MODEL.BACKBONE.NAME: FPN``; the bottom-up backbone it wraps keeps reading
    ``MODEL.BACKBONE.FREEZE_AT`` / ``NORM`` and its own keys (``MODEL.TINY``,
    ``MODEL.RESNETS``). The maps the RPN and the RoI heads read are named ``p{k}`` (stride
    ``2^k``) in ``MODEL.RPN.IN_FEATURES`` and ``MODEL.ROI_HEADS.IN_FEATURES``.
    """
    _F = cfg.MODEL.FPN = CN()  # FPN backbone (projects/fpn): a pyramid over a bottom-up net
    _F.BOTTOM_UP = "ResNet"  # BACKBONE_REGISTRY name of the bottom-up backbone
    _F.IN_FEATURES = ["res2", "res3", "res4", "res5"]  # its maps fused, finest first
    _F.OUT_CHANNELS = 256  # channels of every pyramid level (paper: 256)
    _F.NORM = ""  # after each lateral and output conv: "" (paper), "BN" or "GN"
    _F.TOP_BLOCK = "maxpool"  # "maxpool": one more level, stride-2 subsampling of the top
    _F.FUSE_TYPE = "sum"  # lateral + upsampled coarser level: "sum" (paper) or "avg"
