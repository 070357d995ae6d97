"""Light head: a Fast R-CNN box head with a 1x1 channel reduction (``LightConvHead``).

Importing this package registers ``LightConvHead`` in ``ROI_BOX_HEAD_REGISTRY`` and
``add_light_head_config`` (``MODEL.LIGHT_HEAD``) as a config extension.
"""

from projects.light_head.box_head import LightConvHead
from projects.light_head.config import add_light_head_config

__all__ = ["LightConvHead", "add_light_head_config"]
