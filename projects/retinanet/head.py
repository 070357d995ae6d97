"""The RetinaNet head: a class subnet and a box subnet shared by every feature map."""

from __future__ import annotations

import math

from torch import Tensor, nn

from detkit.layers import get_norm

__all__ = ["RetinaNetHead"]


class RetinaNetHead(nn.Module):
    """Two small fully convolutional subnets slid over each feature map (focal-loss paper,
    Fig. 3): ``num_convs`` 3x3 conv + ReLU, then a 3x3 conv to ``A * K`` class logits; and
    the same tower ending in ``A * 4`` box deltas. The subnets do not share weights with
    each other, but each is shared by all feature maps.

    Args:
        in_channels: C of the feature maps (also the width of the towers).
        num_anchors: A, anchors per position.
        num_classes: K, foreground classes (one sigmoid each, no background logit).
        num_convs: 3x3 conv layers in each tower (paper: 4).
        prior_prob: pi; the class logits start at ``log(pi / (1 - pi))`` so that every
            anchor starts as background with probability 1 - pi, which keeps the loss of the
            many easy negatives from swamping the first iterations (paper 4.1,
            "Initialization").
        norm: normalization after each tower conv, a :func:`detkit.layers.get_norm` name:
            ``""`` (none, the paper, whose backbone is pretrained) or ``"GN"``, which keeps
            a head trained from scratch alive: without it the class tower of the quickstart
            collapsed to constant scores. GN, not BN, because the head is shared by maps of
            different statistics.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_anchors: int,
        num_classes: int,
        num_convs: int = 4,
        prior_prob: float = 0.01,
        norm: str = "",
    ):
        super().__init__()
        if num_convs < 0 or not 0.0 < prior_prob < 1.0:
            raise ValueError(
                "RetinaNetHead needs num_convs >= 0 and 0 < prior_prob < 1 "
                "(MODEL.RETINANET.NUM_CONVS, PRIOR_PROB); got "
                f"num_convs={num_convs}, prior_prob={prior_prob}."
            )
        self.num_anchors = num_anchors
        self.num_classes = num_classes
        self.cls_subnet = self._tower(in_channels, num_convs, norm)
        self.bbox_subnet = self._tower(in_channels, num_convs, norm)
        self.cls_score = nn.Conv2d(in_channels, num_anchors * num_classes, 3, padding=1)
        self.bbox_pred = nn.Conv2d(in_channels, num_anchors * 4, 3, padding=1)
        for layer in self.modules():
            if isinstance(layer, nn.Conv2d):
                # Paper 4.1: Gaussian weights (sigma 0.01), zero biases, except the prior.
                nn.init.normal_(layer.weight, std=0.01)
                if layer.bias is not None:
                    nn.init.zeros_(layer.bias)
        nn.init.constant_(self.cls_score.bias, -math.log((1 - prior_prob) / prior_prob))

    @staticmethod
    def _tower(channels: int, num_convs: int, norm: str) -> nn.ModuleList:
        """``num_convs`` blocks of 3x3 conv (+ norm) + ReLU, each an ``nn.Sequential``."""
        blocks = nn.ModuleList()
        for _ in range(num_convs):
            norm_layer = get_norm(norm, channels)
            conv = nn.Conv2d(channels, channels, 3, padding=1, bias=norm_layer is None)
            layers = [conv] if norm_layer is None else [conv, norm_layer]
            blocks.append(nn.Sequential(*layers, nn.ReLU()))
        return blocks

    def forward(self, features: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Per map ``Tensor[B, C, H, W]`` -> (logits ``[B, A * K, H, W]``, deltas
        ``[B, A * 4, H, W]``); channel ``a * K + k`` is anchor a's logit of class k."""
        logits, deltas = [], []
        for x in features:
            c, b = x, x
            for block in self.cls_subnet:
                c = block(c)
            for block in self.bbox_subnet:
                b = block(b)
            logits.append(self.cls_score(c))
            deltas.append(self.bbox_pred(b))
        return logits, deltas
