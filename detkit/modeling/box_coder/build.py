"""The box coder registry, the ``BoxCoder`` interface and its builder."""

from __future__ import annotations

from abc import ABCMeta, abstractmethod

from torch import Tensor

from detkit.registry import Registry, build_from_config

__all__ = ["BOX_CODER_REGISTRY", "BoxCoder", "build_box_coder"]

BOX_CODER_REGISTRY = Registry("BOX_CODER")
BOX_CODER_REGISTRY.__doc__ = """
Box coders: the regression targets between reference boxes and boxes (paper Eq. 2).

A member is a ``BoxCoder``, built from its config node (e.g. ``MODEL.RPN.BOX_CODER``).
``encode(reference: Tensor[N, 4], target: Tensor[N, 4]) -> Tensor[N, 4]`` deltas and
``decode(deltas: Tensor[N, 4 * K], reference: Tensor[N, 4]) -> Tensor[N, 4 * K]`` boxes,
all boxes XYXY in absolute pixels.
"""


class BoxCoder(metaclass=ABCMeta):
    """Encodes boxes as deltas from reference boxes and decodes them back."""

    @abstractmethod
    def encode(self, reference: Tensor, target: Tensor) -> Tensor:
        """Deltas ``Tensor[N, 4]`` that turn ``reference`` into ``target``."""

    @abstractmethod
    def decode(self, deltas: Tensor, reference: Tensor) -> Tensor:
        """Boxes ``Tensor[N, 4 * K]`` from deltas ``Tensor[N, 4 * K]`` on ``reference``."""


def build_box_coder(cfg, node, input_shape=None, **overrides) -> BoxCoder:
    """Build ``node.NAME`` (e.g. ``cfg.MODEL.RPN.BOX_CODER``) from ``BOX_CODER_REGISTRY``."""
    return build_from_config(BOX_CODER_REGISTRY, cfg, node, input_shape, BoxCoder, **overrides)
