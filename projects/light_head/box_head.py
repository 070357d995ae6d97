"""``LightConvHead``: a 1x1 channel reduction on each pooled RoI before the fully connected
layers, so the first fc is several times smaller than ``ConvFCHead``'s."""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from detkit.layers import ShapeSpec
from detkit.modeling import ROI_BOX_HEAD_REGISTRY
from detkit.modeling.roi_heads.box_head import pooled_input_shape

__all__ = ["LightConvHead"]


@ROI_BOX_HEAD_REGISTRY.register()
class LightConvHead(nn.Module):
    """``1x1 conv (C -> C_r) + ReLU -> flatten -> num_fc x (fc + ReLU [+ dropout])``.

    Why: in a Fast R-CNN box head on a ``C x P x P`` pooled RoI, the first fc has
    ``C * P * P * fc_dim`` weights; with the quickstart's C = 256, P = 7 and fc_dim = 256
    that is 3.2M weights, about two thirds of the detector, and most of the per-RoI FLOPs.
    A 1x1 conv to ``C_r`` channels first (thin RoI features, the idea of Light-Head R-CNN,
    Li et al. 2017) divides that layer by ``C / C_r`` (4x at C_r = 64) for
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
    ):
        super().__init__()
        if reduced_dim < 1 or num_fc < 0:
            raise ValueError(
                "LightConvHead needs reduced_dim >= 1 and num_fc >= 0 "
                f"(MODEL.LIGHT_HEAD.REDUCED_DIM, MODEL.ROI_BOX_HEAD.NUM_FC); got "
                f"reduced_dim={reduced_dim}, num_fc={num_fc}."
            )
        self.dropout = dropout
        self.reduce = nn.Conv2d(in_channels, reduced_dim, kernel_size=1)
        # The initializations of detkit's ConvFCHead, so a comparison changes one thing.
        nn.init.kaiming_normal_(self.reduce.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.reduce.bias)
        self.fcs = nn.ModuleList()
        self._output_dim = reduced_dim * pooled_height * pooled_width
        for _ in range(num_fc):
            fc = nn.Linear(self._output_dim, fc_dim)
            nn.init.kaiming_uniform_(fc.weight, a=1)
            nn.init.zeros_(fc.bias)
            self.fcs.append(fc)
            self._output_dim = fc_dim

    @classmethod
    def from_config(cls, cfg, node, input_shape: ShapeSpec | None = None) -> dict:
        return {
            **pooled_input_shape(cls.__name__, input_shape),
            "reduced_dim": cfg.MODEL.LIGHT_HEAD.REDUCED_DIM,
            "num_fc": node.NUM_FC,
            "fc_dim": node.FC_DIM,
            "dropout": node.DROPOUT,
        }

    def forward(self, x: Tensor) -> Tensor:
        """``x: Tensor[R, C, P_h, P_w]`` pooled RoIs -> ``Tensor[R, D]``.

        D is ``fc_dim`` when ``num_fc > 0``, else ``reduced_dim * P_h * P_w``.
        """
        x = F.relu(self.reduce(x)).flatten(1)  # channel-major, as ConvFCHead flattens
        for fc in self.fcs:
            x = F.relu(fc(x))
            if self.dropout > 0:
                x = F.dropout(x, self.dropout, self.training)
        return x

    def output_shape(self) -> ShapeSpec:
        return ShapeSpec(channels=self._output_dim)
