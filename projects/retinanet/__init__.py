"""RetinaNet: a one-stage detector built from detkit's registered components.

Importing this package registers ``RetinaNet`` in ``META_ARCH_REGISTRY`` and
``add_retinanet_config`` (``MODEL.RETINANET``) as a config extension.
"""

from projects.retinanet.config import add_retinanet_config
from projects.retinanet.head import RetinaNetHead
from projects.retinanet.meta_arch import RetinaNet, flatten_predictions

__all__ = ["RetinaNet", "RetinaNetHead", "add_retinanet_config", "flatten_predictions"]
