"""The ResNet C4 box head: res5 (torchvision's ``layer4``) per RoI, then global average pooling."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from detkit.config import CfgNode
from detkit.layers import ShapeSpec
from detkit.modeling.backbone.resnet import build_torchvision_resnet
from detkit.modeling.roi_heads.build import ROI_BOX_HEAD_REGISTRY

__all__ = ["Res5Head"]

_RES5_IN_CHANNELS = 1024  # res4 output width of ResNet-50/101 (layer4's input)
_RES5_OUT_CHANNELS = 2048  # res5 output width


@ROI_BOX_HEAD_REGISTRY.register()
class Res5Head(nn.Module):
    """res5 on each pooled RoI, then the mean over its bins: ``[R, 1024, P, P] -> [R, 2048]``.

    The C4 detector (He et al. 2016) pools RoIs from ``"res4"`` (``ResNetC4``) at 14 x 14;
    res5's first block has stride 2, giving 7 x 7 before the average pool. The submodule is
    named ``layer4`` as in torchvision, so an ImageNet state_dict's ``layer4.*`` keys map by
    name.

    Args:
        depth: ResNet depth, 50 or 101 (the same as the backbone's).
        norm: ``"FrozenBN"`` or ``"BN"``.
        in_channels: C of the pooled RoIs; must be 1024 (res4's width).
    """

    def __init__(self, *, depth: int = 50, norm: str = "FrozenBN", in_channels: int = 1024):
        super().__init__()
        if in_channels != _RES5_IN_CHANNELS:
            raise ValueError(
                f"Res5Head takes pooled res4 features with {_RES5_IN_CHANNELS} channels, got "
                f"{in_channels}. Use it with the ResNetC4 backbone "
                "(MODEL.ROI_HEADS.IN_FEATURES: ['res4'])."
            )
        self.layer4 = build_torchvision_resnet(depth, norm).layer4

    @classmethod
    def from_config(
        cls, cfg: CfgNode, node: CfgNode, input_shape: ShapeSpec | None = None
    ) -> dict[str, Any]:
        """``node``: ``MODEL.ROI_BOX_HEAD`` (only its ``NAME``); ``DEPTH`` and ``NORM`` come
        from ``MODEL.RESNETS``. ``input_shape``: one pooled RoI,
        ``ShapeSpec(channels, height, width)``."""
        if input_shape is None or input_shape.channels is None:
            raise ValueError(
                "Res5Head needs input_shape = ShapeSpec(channels, height, width) of one pooled "
                f"RoI; got {input_shape}."
            )
        return {
            "depth": cfg.MODEL.RESNETS.DEPTH,
            "norm": cfg.MODEL.RESNETS.NORM,
            "in_channels": input_shape.channels,
        }

    def forward(self, x: Tensor) -> Tensor:
        """``x: Tensor[R, 1024, P, P]`` pooled RoIs -> ``Tensor[R, 2048]``."""
        return self.layer4(x).mean(dim=(2, 3))

    def output_shape(self) -> ShapeSpec:
        return ShapeSpec(channels=_RES5_OUT_CHANNELS)
