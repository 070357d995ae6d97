"""``LightConvHead``: a 1x1 channel reduction on each pooled RoI before the fully connected
layers, so the first fc is several times smaller than ``ConvFCHead``'s."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torch.nn import functional as F

from detkit.config import CfgNode
from detkit.layers import ShapeSpec
from detkit.modeling import ROI_BOX_HEAD_REGISTRY
from detkit.modeling.roi_heads.box_head import ConvFCHead, pooled_input_shape

__all__ = ["LightConvHead"]


@ROI_BOX_HEAD_REGISTRY.register()
class LightConvHead(nn.Module):
    """``1x1 conv (C -> C_r) + ReLU``, then detkit's ``ConvFCHead`` fc stack on ``C_r x P x P``.

    Why: in a Fast R-CNN box head on a ``C x P x P`` pooled RoI, the first fc has
    ``C * P * P * fc_dim`` weights; with the quickstart's C = 64 (stride-8 RoIs), P = 7 and
    fc_dim = 256 that is 0.8M weights, about half of the detector, and most of the per-RoI
    FLOPs. A 1x1 conv to ``C_r`` channels first (thin RoI features, the idea of Light-Head
    R-CNN, Li et al. 2017) divides that layer by ``C / C_r`` (4x at C_r = 16) for
    ``C * C_r`` extra weights, while keeping the P x P layout that box regression needs
    (a global average pool would discard it).

    Args:
        in_channels: C of the pooled RoIs.
        pooled_height: P_h.
        pooled_width: P_w.
        reduced_dim: C_r, output channels of the 1x1 conv.
        num_fc: number of fully connected layers after it (0: the head outputs the flattened
            reduced features, D = C_r * P_h * P_w).
        fc_dim: width of each fully connected layer.
        dropout: dropout probability after each fc; 0 disables it.
        norm: ``""``, ``"BN"`` or ``"GN"`` after each fc (``MODEL.ROI_BOX_HEAD.NORM``).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        pooled_height: int,
        pooled_width: int,
        reduced_dim: int = 64,
        num_fc: int = 2,
        fc_dim: int = 256,
        dropout: float = 0.0,
        norm: str = "",
    ):
        super().__init__()
        if reduced_dim < 1:
            raise ValueError(
                "LightConvHead needs reduced_dim >= 1 (MODEL.LIGHT_HEAD.REDUCED_DIM); got "
                f"{reduced_dim}."
            )
        self.reduce = nn.Conv2d(in_channels, reduced_dim, kernel_size=1)
        # The initialization of detkit's ConvFCHead convs, so a comparison changes one thing.
        nn.init.kaiming_normal_(self.reduce.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.reduce.bias)
        # The fully connected part is detkit's own head on the thinner RoIs.
        self.fc_head = ConvFCHead(
            in_channels=reduced_dim,
            pooled_height=pooled_height,
            pooled_width=pooled_width,
            num_conv=0,
            num_fc=num_fc,
            fc_dim=fc_dim,
            dropout=dropout,
            norm=norm,
        )

    @classmethod
    def from_config(
        cls, cfg: CfgNode, node: CfgNode, input_shape: ShapeSpec | None = None
    ) -> dict[str, Any]:
        """``node``: ``MODEL.ROI_BOX_HEAD``, read for ``NUM_FC``, ``FC_DIM``, ``DROPOUT`` and
        ``NORM``; ``REDUCED_DIM`` comes from ``MODEL.LIGHT_HEAD``. ``input_shape``: one
        pooled RoI, ``ShapeSpec(channels, height, width)``."""
        return {
            **pooled_input_shape(cls.__name__, input_shape),
            "reduced_dim": cfg.MODEL.LIGHT_HEAD.REDUCED_DIM,
            "num_fc": node.NUM_FC,
            "fc_dim": node.FC_DIM,
            "dropout": node.DROPOUT,
            "norm": node.NORM,
        }

    def forward(self, x: Tensor) -> Tensor:
        """``x: Tensor[R, C, P_h, P_w]`` pooled RoIs -> ``Tensor[R, D]``.

        D is ``fc_dim`` when ``num_fc > 0``, else ``reduced_dim * P_h * P_w``.
        """
        return self.fc_head(F.relu(self.reduce(x)))

    def output_shape(self) -> ShapeSpec:
        return self.fc_head.output_shape()
