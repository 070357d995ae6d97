"""A small stride-16 backbone that trains from scratch on a CPU (the quickstart's)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn
from torch.nn import functional as F

from detkit.config import CfgNode
from detkit.layers import ShapeSpec, freeze_module, get_norm
from detkit.modeling.backbone.build import BACKBONE_REGISTRY, Backbone

__all__ = ["ConvNormReLU", "TinyBackbone"]


class ConvNormReLU(nn.Module):
    """3x3 conv (padding 1) + optional normalization + ReLU.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        stride: conv stride (2 halves the resolution, rounding up).
        dilation: conv dilation (the padding equals it, so stride 1 keeps the size).
        norm: a :func:`detkit.layers.get_norm` name; ``""`` gives the conv a bias instead.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        stride: int = 1,
        dilation: int = 1,
        norm: str = "",
    ):
        super().__init__()
        self.norm = get_norm(norm, out_channels)
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            3,
            stride=stride,
            padding=dilation,
            dilation=dilation,
            bias=self.norm is None,
        )
        # He initialization (Kaiming): keeps activations' scale through ReLUs from scratch.
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        if self.conv.bias is not None:
            nn.init.zeros_(self.conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        """``Tensor[N, C_in, H, W]`` -> ``Tensor[N, C_out, ceil(H / stride), ceil(W / stride)]``."""
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x)
        return F.relu(x)


@BACKBONE_REGISTRY.register()
class TinyBackbone(Backbone):
    """Four stages of small 3x3 convs, each halving the resolution: ``"stage4"`` at stride 16.

    Stage i (submodule ``stage{i}``) is a 3x3 stride-2 :class:`ConvNormReLU` to
    ``channels[i - 1]`` channels, then ``blocks_per_stage`` stride-1 ones (no residuals).
    An ``H x W`` image gives a ``ceil(H / 16) x ceil(W / 16)`` map, like VGG16, so anchors
    and RoI pooling at scale 1/16 work unchanged.

    Args:
        in_channels: image channels (3).
        channels: output channels of the four stages, e.g. ``[32, 64, 128, 256]``.
        blocks_per_stage: extra stride-1 blocks after each stage's strided conv (>= 0): one
            number for every stage, or four, one per stage (``[0, 1, 1, 1]``: stage 1, at
            the largest maps, only its strided conv).
        norm: ``""`` (conv bias, no normalization), ``"BN"``, ``"FrozenBN"`` or ``"GN"``.
        freeze_at: number of stages frozen from the input, 0 to 4.
        out_features: the stages returned, e.g. ``["stage3", "stage4"]`` to pool RoIs from
            the stride-8 map while the RPN reads the stride-16 one.
        stage4_dilation: 1, or 2 to keep stage 4 at stride 8: its first conv then does not
            stride and all its convs are dilated by 2, so their receptive field grows as if it
            did (like ResNet's dilated res5). Small objects then get a finer anchor grid and
            finer RoI features, at 4x the cost of stage 4.
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        channels: Sequence[int] = (32, 64, 128, 256),
        blocks_per_stage: int | Sequence[int] = 1,
        norm: str = "",
        freeze_at: int = 0,
        out_features: Sequence[str] = ("stage4",),
        stage4_dilation: int = 1,
    ):
        super().__init__()
        channels = list(channels)
        names = [f"stage{i}" for i in range(1, 5)]
        unknown = [f for f in out_features if f not in names]
        if unknown or not out_features:
            raise ValueError(
                f"TinyBackbone outputs are among {names}; got {list(out_features)} "
                "(config key MODEL.TINY.OUT_FEATURES)."
            )
        self.out_features = [n for n in names if n in out_features]
        self._channels = dict(zip(names, channels))
        if len(channels) != 4 or min(channels) < 1:
            raise ValueError(
                "TinyBackbone needs 4 positive stage widths (config key MODEL.TINY.CHANNELS), "
                f"got {channels}."
            )
        if isinstance(blocks_per_stage, int):
            blocks_per_stage = [blocks_per_stage] * 4
        blocks_per_stage = list(blocks_per_stage)
        if len(blocks_per_stage) != 4 or min(blocks_per_stage) < 0:
            raise ValueError(
                "TinyBackbone needs extra blocks >= 0, one number or four (config keys "
                f"MODEL.TINY.BLOCKS_PER_STAGE, MODEL.TINY.BLOCKS); got {blocks_per_stage}."
            )
        if not 0 <= freeze_at <= 4:
            raise ValueError(
                "TinyBackbone has 4 stages; freeze_at must be in [0, 4], got "
                f"{freeze_at} (config key MODEL.BACKBONE.FREEZE_AT)."
            )
        if stage4_dilation not in (1, 2):
            raise ValueError(f"MODEL.TINY.STAGE4_DILATION must be 1 or 2, got {stage4_dilation}.")
        self.freeze_at = freeze_at
        self._strides = {name: 2 ** int(name[-1]) for name in names}
        self._strides["stage4"] //= stage4_dilation
        previous = in_channels
        for index, (width, extra) in enumerate(zip(channels, blocks_per_stage), start=1):
            dilation = stage4_dilation if index == 4 else 1
            blocks = [
                ConvNormReLU(previous, width, stride=2 // dilation, dilation=dilation, norm=norm)
            ]
            blocks += [
                ConvNormReLU(width, width, dilation=dilation, norm=norm) for _ in range(extra)
            ]
            stage = nn.Sequential(*blocks)
            if index <= freeze_at:
                stage = freeze_module(stage)
            self.add_module(f"stage{index}", stage)
            previous = width

    @classmethod
    def from_config(
        cls, cfg: CfgNode, node: CfgNode, input_shape: ShapeSpec | None = None
    ) -> dict[str, Any]:
        """``node``: ``MODEL.BACKBONE``, read for ``NORM`` and ``FREEZE_AT``; the layout
        comes from ``MODEL.TINY`` (``CHANNELS``, ``BLOCKS`` or else ``BLOCKS_PER_STAGE``,
        ``OUT_FEATURES``, ``STAGE4_DILATION``). ``input_shape``: the image's ``ShapeSpec``
        (its channels, default 3)."""
        channels = input_shape.channels if input_shape is not None else None
        return {
            "in_channels": channels or 3,
            "channels": list(cfg.MODEL.TINY.CHANNELS),
            "blocks_per_stage": list(cfg.MODEL.TINY.BLOCKS) or cfg.MODEL.TINY.BLOCKS_PER_STAGE,
            "norm": node.NORM,
            "freeze_at": node.FREEZE_AT,
            "out_features": list(cfg.MODEL.TINY.OUT_FEATURES),
            "stage4_dilation": cfg.MODEL.TINY.STAGE4_DILATION,
        }

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """``images: Tensor[B, C, H, W]`` -> ``{name: map}`` for each of ``out_features``;
        stage i has stride ``2 ** i`` (stage 4: 8 when dilated): ``"stage4"`` is
        ``[B, channels[3], ceil(H / 16), ceil(W / 16)]``."""
        outputs = {}
        x = images
        for index in range(1, 5):
            name = f"stage{index}"
            x = getattr(self, name)(x)
            if name in self.out_features:
                outputs[name] = x
            if name == self.out_features[-1]:
                break  # later stages feed no output
        return outputs

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {
            name: ShapeSpec(channels=self._channels[name], stride=self._strides[name])
            for name in self.out_features
        }
