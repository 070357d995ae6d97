"""Box heads: pooled RoI features -> one vector per RoI (VGG fc6/fc7, and convs + fcs)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn
from torch.nn import functional as F

from detkit.config import CfgNode
from detkit.layers import ShapeSpec, get_norm
from detkit.modeling.backbone.vgg import VGG16_CLASSIFIER_TO_BOX_HEAD
from detkit.modeling.roi_heads.build import ROI_BOX_HEAD_REGISTRY

__all__ = ["ConvFCHead", "VGGFCHead", "pooled_input_shape"]

_HEAD_NORMS = ("", "BN", "GN")  # FrozenBN needs pretrained statistics a new head lacks


def pooled_input_shape(head: str, input_shape: ShapeSpec | None) -> dict:
    """``{"in_channels", "pooled_height", "pooled_width"}`` of one pooled RoI, checked.

    Raises:
        ValueError: ``input_shape`` misses its channels, height or width.
    """
    fields = ("channels", "height", "width")
    if input_shape is None or any(getattr(input_shape, f) is None for f in fields):
        raise ValueError(
            f"{head} needs input_shape = ShapeSpec(channels, height, width) of one pooled RoI "
            f"(feature channels and MODEL.ROI_HEADS.POOLER.RESOLUTION); got {input_shape}."
        )
    return {
        "in_channels": input_shape.channels,
        "pooled_height": input_shape.height,
        "pooled_width": input_shape.width,
    }


@ROI_BOX_HEAD_REGISTRY.register()
class VGGFCHead(nn.Module):
    """VGG16's fc6 and fc7 on each pooled RoI (paper "Fast R-CNN head").

    ``flatten -> fc6 + ReLU + dropout -> fc7 + ReLU + dropout``. With a 512 x 7 x 7 pooled
    input and ``fc_dim`` 4096, fc6 and fc7 have the shapes of torchvision's
    ``vgg16().classifier[0]`` and ``[3]``, and :meth:`load_imagenet_classifier` copies them in
    (the flatten order, channel-major, is torchvision's too).

    Args:
        in_channels: C of the pooled RoIs.
        pooled_height: P_h, pooled bins per column.
        pooled_width: P_w, pooled bins per row.
        fc_dim: width D of fc6 and fc7 (4096 in VGG16).
        dropout: dropout probability after each fc (0.5 in VGG16; 0 disables).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        pooled_height: int,
        pooled_width: int,
        fc_dim: int = 4096,
        dropout: float = 0.5,
    ):
        super().__init__()
        self.in_channels, self.pooled_height, self.pooled_width = (
            in_channels,
            pooled_height,
            pooled_width,
        )
        self.fc_dim, self.dropout = fc_dim, dropout
        self.fc6 = nn.Linear(in_channels * pooled_height * pooled_width, fc_dim)
        self.fc7 = nn.Linear(fc_dim, fc_dim)
        for fc in (self.fc6, self.fc7):
            # torchvision's VGG classifier initialization, used when no ImageNet weights load.
            nn.init.normal_(fc.weight, std=0.01)
            nn.init.zeros_(fc.bias)

    @classmethod
    def from_config(
        cls, cfg: CfgNode, node: CfgNode, input_shape: ShapeSpec | None = None
    ) -> dict[str, Any]:
        """``node``: ``MODEL.ROI_BOX_HEAD``, read for ``FC_DIM`` and ``DROPOUT``;
        ``input_shape``: one pooled RoI, ``ShapeSpec(channels, height, width)``."""
        return {
            **pooled_input_shape(cls.__name__, input_shape),
            "fc_dim": node.FC_DIM,
            "dropout": node.DROPOUT,
        }

    def forward(self, x: Tensor) -> Tensor:
        """``x: Tensor[R, C, P_h, P_w]`` pooled RoIs -> ``Tensor[R, fc_dim]``."""
        x = x.flatten(1)
        x = F.dropout(F.relu(self.fc6(x)), self.dropout, self.training)
        return F.dropout(F.relu(self.fc7(x)), self.dropout, self.training)

    def output_shape(self) -> ShapeSpec:
        return ShapeSpec(channels=self.fc_dim)

    def load_imagenet_classifier(self, state_dict: Mapping[str, Tensor]) -> None:
        """Copy torchvision VGG16's ``classifier.0.*`` into fc6 and ``classifier.3.*`` into fc7.

        Args:
            state_dict: a torchvision ``vgg16`` state_dict (other keys are ignored).

        Raises:
            KeyError: a classifier key is missing.
            ValueError: a shape does not fit (nothing is copied then): fc6 needs a
                512 x 7 x 7 pooled input and ``fc_dim`` 4096.
        """
        own = self.state_dict()
        mapped = {}
        for source_prefix, target_prefix in VGG16_CLASSIFIER_TO_BOX_HEAD.items():
            for suffix in ("weight", "bias"):
                source, target = source_prefix + suffix, target_prefix + suffix
                if source not in state_dict:
                    raise KeyError(
                        f"VGGFCHead.load_imagenet_classifier: the state_dict has no '{source}'; "
                        "pass a torchvision vgg16 state_dict (keys classifier.0.*, classifier.3.*)."
                    )
                value = state_dict[source]
                if tuple(value.shape) != tuple(own[target].shape):
                    raise ValueError(
                        f"Cannot load ImageNet '{source}' of shape {tuple(value.shape)} into "
                        f"VGGFCHead '{target}' of shape {tuple(own[target].shape)}. This head "
                        f"takes {self.in_channels} x {self.pooled_height} x {self.pooled_width} "
                        f"pooled RoIs with fc_dim {self.fc_dim}; VGG16's fc6/fc7 need 512 x 7 x 7 "
                        "(conv5_3 features, MODEL.ROI_HEADS.POOLER.RESOLUTION 7) and "
                        "MODEL.ROI_BOX_HEAD.FC_DIM 4096. Fix those keys, or train the head "
                        "without ImageNet fc weights."
                    )
                mapped[target] = value
        self.load_state_dict(mapped, strict=True)


@ROI_BOX_HEAD_REGISTRY.register()
class ConvFCHead(nn.Module):
    """``num_conv`` 3x3 convs + ReLU, then ``num_fc`` fully connected layers + ReLU (+ dropout).

    With ``num_fc = 0`` the output is the flattened (conv) features: D = C' * P_h * P_w, where
    C' is ``conv_dim`` if ``num_conv > 0``, else ``in_channels``; with ``num_conv = 0`` and
    ``num_fc = 0`` the head only flattens its input.

    Args:
        in_channels: C of the pooled RoIs.
        pooled_height: P_h.
        pooled_width: P_w.
        num_conv: number of 3x3 convs (padding 1, so the RoI's P_h x P_w is kept).
        conv_dim: output channels of each conv.
        num_fc: number of fully connected layers.
        fc_dim: width of each fully connected layer.
        dropout: dropout probability after each fc; 0 disables it.
        norm: normalization after each conv and each fc, before its ReLU: ``""`` (none),
            ``"BN"`` (batch norm over the RoIs of the batch) or ``"GN"`` (group norm per
            RoI). A head trained from scratch learns much faster with one (the layers then
            have no bias).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        pooled_height: int,
        pooled_width: int,
        num_conv: int = 0,
        conv_dim: int = 256,
        num_fc: int = 2,
        fc_dim: int = 1024,
        dropout: float = 0.0,
        norm: str = "",
    ):
        super().__init__()
        if num_conv < 0 or num_fc < 0:
            raise ValueError(
                "ConvFCHead needs num_conv >= 0 and num_fc >= 0 (MODEL.ROI_BOX_HEAD.NUM_CONV, "
                f"NUM_FC); got num_conv={num_conv}, num_fc={num_fc}."
            )
        if norm not in _HEAD_NORMS:
            raise ValueError(
                f"ConvFCHead norm must be one of {_HEAD_NORMS}; got '{norm}' "
                "(config key MODEL.ROI_BOX_HEAD.NORM)."
            )
        self.dropout = dropout
        self.convs = nn.ModuleList()
        self.conv_norms = nn.ModuleList()
        channels = in_channels
        for _ in range(num_conv):
            conv = nn.Conv2d(channels, conv_dim, kernel_size=3, padding=1, bias=not norm)
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)
            self.convs.append(conv)
            self.conv_norms.append(get_norm(norm, conv_dim) or nn.Identity())
            channels = conv_dim
        self.fcs = nn.ModuleList()
        self.fc_norms = nn.ModuleList()
        self._output_dim = channels * pooled_height * pooled_width
        for _ in range(num_fc):
            fc = nn.Linear(self._output_dim, fc_dim, bias=not norm)
            # Caffe's "xavier" fill (uniform, fan-in), as detectron2 uses for new fc layers.
            nn.init.kaiming_uniform_(fc.weight, a=1)
            if fc.bias is not None:
                nn.init.zeros_(fc.bias)
            self.fcs.append(fc)
            # Vectors [R, D]: BatchNorm1d; GroupNorm takes [R, D] as it is.
            fc_norm = nn.BatchNorm1d(fc_dim) if norm == "BN" else get_norm(norm, fc_dim)
            self.fc_norms.append(fc_norm or nn.Identity())
            self._output_dim = fc_dim

    @classmethod
    def from_config(
        cls, cfg: CfgNode, node: CfgNode, input_shape: ShapeSpec | None = None
    ) -> dict[str, Any]:
        """``node``: ``MODEL.ROI_BOX_HEAD``, read for ``NUM_CONV``, ``CONV_DIM``, ``NUM_FC``,
        ``FC_DIM``, ``DROPOUT`` and ``NORM``; ``input_shape``: one pooled RoI,
        ``ShapeSpec(channels, height, width)``."""
        return {
            **pooled_input_shape(cls.__name__, input_shape),
            "num_conv": node.NUM_CONV,
            "conv_dim": node.CONV_DIM,
            "num_fc": node.NUM_FC,
            "fc_dim": node.FC_DIM,
            "dropout": node.DROPOUT,
            "norm": node.NORM,
        }

    def forward(self, x: Tensor) -> Tensor:
        """``x: Tensor[R, C, P_h, P_w]`` pooled RoIs -> ``Tensor[R, D]`` (D: class docstring)."""
        for conv, norm in zip(self.convs, self.conv_norms):
            x = F.relu(norm(conv(x)))
        x = x.flatten(1)
        for fc, norm in zip(self.fcs, self.fc_norms):
            x = F.relu(norm(fc(x)))
            if self.dropout > 0:
                x = F.dropout(x, self.dropout, self.training)
        return x

    def output_shape(self) -> ShapeSpec:
        return ShapeSpec(channels=self._output_dim)
