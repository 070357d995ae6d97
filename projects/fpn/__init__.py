"""FPN: a Feature Pyramid Network backbone over any registered backbone.

Importing this package registers ``FPN`` in ``BACKBONE_REGISTRY`` and ``add_fpn_config``
(``MODEL.FPN``) as a config extension. The pyramid over ResNet reads detkit's ``ResNet``
backbone (``res2..res5``, ``MODEL.RESNETS.OUT_FEATURES``).
"""

from projects.fpn.config import add_fpn_config
from projects.fpn.fpn import FPN, ConvNorm

__all__ = ["FPN", "ConvNorm", "add_fpn_config"]
