"""The ZF net (Zeiler & Fergus 2014) conv1 .. conv5, the paper's small shared backbone."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torch.nn import functional as F

from detkit.config import CfgNode
from detkit.layers import ShapeSpec, freeze_module
from detkit.modeling.backbone.build import BACKBONE_REGISTRY, Backbone

__all__ = ["ZF", "WithinChannelLRN"]


class WithinChannelLRN(nn.Module):
    """Caffe's local response normalization with ``norm_region: WITHIN_CHANNEL``.

    ``y = x / (k + alpha * mean(x^2 over the size x size window around each pixel)) ** beta``,
    each channel on its own. The window mean counts the zero padding at the border (Caffe
    computes it with an AVE pooling over squares, padding (size - 1) / 2). This differs from
    ``nn.LocalResponseNorm``, which sums over neighbouring channels (ACROSS_CHANNELS).

    Args:
        size: window side (odd).
        alpha: scale of the mean of squares.
        beta: exponent.
        k: additive constant (Caffe's default 1).
    """

    def __init__(self, size: int, alpha: float, beta: float, k: float = 1.0):
        super().__init__()
        if size % 2 != 1:
            raise ValueError(f"WithinChannelLRN needs an odd window size, got {size}.")
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x: Tensor) -> Tensor:
        """``Tensor[N, C, H, W]`` -> normalized ``Tensor[N, C, H, W]``."""
        mean_square = F.avg_pool2d(
            x * x, self.size, stride=1, padding=self.size // 2, count_include_pad=True
        )
        return x * (self.k + self.alpha * mean_square).pow(-self.beta)

    def extra_repr(self) -> str:
        return f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"


@BACKBONE_REGISTRY.register()
class ZF(Backbone):
    """ZF net as the paper's released code uses it: one map ``"conv5"``, 256 channels, stride 16.

    Layers (names as in the released Caffe model, so converted weights load by name)::

        conv1 96 7x7 s2 p3, ReLU, norm1 LRN, pool1 max 3x3 s2 p1      (stride 4)
        conv2 256 5x5 s2 p2, ReLU, norm2 LRN, pool2 max 3x3 s2 p1     (stride 16)
        conv3 384 3x3 p1, ReLU; conv4 384 3x3 p1, ReLU; conv5 256 3x3 p1, ReLU

    The LRN is the released model's: WITHIN_CHANNEL, local size 3, alpha 5e-5, beta 0.75,
    k 1 (Caffe's default). It is kept as released rather than swapped for
    ``nn.LocalResponseNorm`` (across channels) because ZF weights were trained with it; its
    effect is small (alpha 5e-5), but the other variant would change every conv2 input.
    Pools round down, so an ``H x W`` image gives a ``ceil(H / 16) x ceil(W / 16)`` map like
    the other backbones (38 x 63 for 600 x 1000); Caffe's round-up gave one extra row or
    column at some sizes (39 x 64 there), a border cell covering only padding.

    Args:
        in_channels: image channels (3).
        freeze_at: number of stages frozen from the input, 0 to 5 (stage i = conv_i with
            its LRN and pool). The paper trains all ZF layers (0).
    """

    def __init__(self, *, in_channels: int = 3, freeze_at: int = 0):
        super().__init__()
        if not 0 <= freeze_at <= 5:
            raise ValueError(
                "ZF has 5 conv stages; freeze_at must be in [0, 5], got "
                f"{freeze_at} (config key MODEL.BACKBONE.FREEZE_AT)."
            )
        self.freeze_at = freeze_at
        self.conv1 = nn.Conv2d(in_channels, 96, kernel_size=7, stride=2, padding=3)
        self.norm1 = WithinChannelLRN(3, alpha=5e-5, beta=0.75)
        self.pool1 = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(96, 256, kernel_size=5, stride=2, padding=2)
        self.norm2 = WithinChannelLRN(3, alpha=5e-5, beta=0.75)
        self.pool2 = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(256, 384, kernel_size=3, padding=1)
        self.conv4 = nn.Conv2d(384, 384, kernel_size=3, padding=1)
        self.conv5 = nn.Conv2d(384, 256, kernel_size=3, padding=1)
        convs = [self.conv1, self.conv2, self.conv3, self.conv4, self.conv5]
        for conv in convs:
            # He initialization, for training without ImageNet weights.
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
        for stage in range(1, freeze_at + 1):
            # LRN and pools have no parameters: freezing stage i freezes conv_i.
            setattr(self, f"conv{stage}", freeze_module(getattr(self, f"conv{stage}")))

    @classmethod
    def from_config(
        cls, cfg: CfgNode, node: CfgNode, input_shape: ShapeSpec | None = None
    ) -> dict[str, Any]:
        """``node``: ``MODEL.BACKBONE``, read for ``FREEZE_AT``; ``input_shape``: the image's
        ``ShapeSpec`` (its channels, default 3)."""
        channels = input_shape.channels if input_shape is not None else None
        return {"in_channels": channels or 3, "freeze_at": node.FREEZE_AT}

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """``images: Tensor[B, C, H, W]`` -> ``{"conv5": Tensor[B, 256, H', W']}``.

        ``H' = ceil(H / 16)``, ``W' = ceil(W / 16)``.
        """
        x = self.pool1(self.norm1(F.relu(self.conv1(images))))
        x = self.pool2(self.norm2(F.relu(self.conv2(x))))
        x = F.relu(self.conv3(x))
        x = F.relu(self.conv4(x))
        return {"conv5": F.relu(self.conv5(x))}

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {"conv5": ShapeSpec(channels=256, stride=16)}
