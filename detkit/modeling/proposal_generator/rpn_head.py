"""The RPN head: a 3x3 conv slid over the feature map and two sibling 1x1 convs (paper 3.1)."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from detkit.config import CfgNode
from detkit.layers import ShapeSpec
from detkit.modeling.anchor_generator import build_anchor_generator
from detkit.modeling.proposal_generator.build import RPN_HEAD_REGISTRY

__all__ = ["StandardRPNHead"]

_OBJECTNESS_KINDS = ("sigmoid", "softmax")


@RPN_HEAD_REGISTRY.register()
class StandardRPNHead(nn.Module):
    """3x3 conv + ReLU, then objectness logits and box deltas for A anchors per position.

    Args:
        in_channels: channels of the input feature map(s).
        num_anchors: A, anchors per position (from the anchor generator).
        conv_dim: channels of the 3x3 conv; -1 means ``in_channels`` (VGG 512, ZF 256).
        objectness: ``"sigmoid"`` (A logits, one per anchor) or ``"softmax"`` (2A logits,
            background and object per anchor, as in the released code). Both return one
            logit per anchor: for softmax, the object logit minus the background logit, whose
            sigmoid is the softmax's object probability, so losses and scores are the same.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_anchors: int,
        conv_dim: int = -1,
        objectness: str = "sigmoid",
    ):
        super().__init__()
        if objectness not in _OBJECTNESS_KINDS:
            raise ValueError(
                f"RPN objectness must be one of {_OBJECTNESS_KINDS}; got '{objectness}' "
                "(config key MODEL.RPN.HEAD.OBJECTNESS)."
            )
        conv_dim = in_channels if conv_dim < 0 else conv_dim
        self.num_anchors = num_anchors
        self.objectness = objectness
        self.conv = nn.Conv2d(in_channels, conv_dim, kernel_size=3, padding=1)
        logits_per_anchor = 1 if objectness == "sigmoid" else 2
        self.objectness_logits = nn.Conv2d(conv_dim, logits_per_anchor * num_anchors, 1)
        self.anchor_deltas = nn.Conv2d(conv_dim, 4 * num_anchors, 1)
        for layer in (self.conv, self.objectness_logits, self.anchor_deltas):
            # New layers drawn from N(0, 0.01), bias 0 (paper 3.1.3).
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    @classmethod
    def from_config(
        cls, cfg: CfgNode, node: CfgNode, input_shape: list[ShapeSpec] | None = None
    ) -> dict[str, Any]:
        """``node``: ``MODEL.RPN.HEAD``, read for ``CONV_DIM`` and ``OBJECTNESS``; the anchors
        per location come from ``MODEL.ANCHOR_GENERATOR``. ``input_shape``: one
        ``ShapeSpec`` per map of ``MODEL.RPN.IN_FEATURES``, all with the same channels."""
        if not input_shape:
            raise ValueError("StandardRPNHead needs input_shape: a ShapeSpec per feature map.")
        channels = {s.channels for s in input_shape}
        if len(channels) != 1:
            raise ValueError(
                f"StandardRPNHead shares one conv across maps; their channels differ: {channels}."
            )
        anchor_generator = build_anchor_generator(cfg, input_shape=input_shape)
        return {
            "in_channels": channels.pop(),
            "num_anchors": anchor_generator.num_anchors_per_location,
            "conv_dim": node.CONV_DIM,
            "objectness": node.OBJECTNESS,
        }

    def forward(self, features: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Feature maps ``[B, C, H, W]`` -> (logits ``[B, A, H, W]``, deltas ``[B, 4A, H, W]``)."""
        logits, deltas = [], []
        for x in features:
            t = nn.functional.relu(self.conv(x))
            score = self.objectness_logits(t)
            if self.objectness == "softmax":
                # Released-code layout: the 2A channels are A background then A object scores.
                background, foreground = score.split(self.num_anchors, dim=1)
                score = foreground - background
            logits.append(score)
            deltas.append(self.anchor_deltas(t))
        return logits, deltas
