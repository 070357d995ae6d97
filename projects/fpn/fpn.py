"""``FPN``: a Feature Pyramid Network (Lin et al. 2017) over any registered backbone."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn
from torch.nn import functional as F

from detkit.layers import ShapeSpec, get_norm
from detkit.modeling import BACKBONE_REGISTRY, Backbone, build_backbone, select_feature_shapes
from detkit.modeling.preprocessing import padding_multiple
from detkit.registry import ComponentNotFoundError

__all__ = ["FPN", "FPN_FUSE_TYPES", "FPN_NORMS", "FPN_TOP_BLOCKS", "ConvNorm"]

FPN_NORMS = ("", "BN", "GN")  # MODEL.FPN.NORM values
FPN_TOP_BLOCKS = ("", "maxpool")  # MODEL.FPN.TOP_BLOCK values
FPN_FUSE_TYPES = ("sum", "avg")  # MODEL.FPN.FUSE_TYPE values


class ConvNorm(nn.Module):
    """A ``k x k`` stride-1 conv (padding ``k // 2``, so the size is kept) and an optional
    normalization; no activation (the FPN's layers are linear).

    Weights use Caffe2's "XavierFill" (``kaiming_uniform_(a=1)``: uniform with variance
    1 / fan_in), the initialization detkit's ``ConvFCHead`` gives its new fc layers; the
    bias, present only without a norm, starts at 0.

    Args:
        in_channels, out_channels: C_in and C_out.
        kernel_size: k, odd (1 for the lateral convs, 3 for the output convs).
        norm: ``""``, ``"BN"`` or ``"GN"`` (:func:`detkit.layers.get_norm`).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, norm: str = ""):
        super().__init__()
        self.norm = get_norm(norm, out_channels)
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            padding=kernel_size // 2,
            bias=self.norm is None,
        )
        nn.init.kaiming_uniform_(self.conv.weight, a=1)
        if self.conv.bias is not None:
            nn.init.zeros_(self.conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        """``Tensor[B, C_in, H, W]`` -> ``Tensor[B, C_out, H, W]``."""
        x = self.conv(x)
        return x if self.norm is None else self.norm(x)


@BACKBONE_REGISTRY.register()
class FPN(Backbone):
    """A top-down pathway with lateral connections over a bottom-up backbone's maps.

    For the bottom-up maps ``C_1 .. C_n`` of ``in_features`` (strides increasing powers of
    two, e.g. 4, 8, 16, 32), with a 1x1 lateral conv ``L_i`` and a 3x3 output conv ``O_i``
    per map (all to ``out_channels``)::

        M_n = L_n(C_n)
        M_i = fuse(L_i(C_i), nearest_upsample(M_{i+1}, size of L_i(C_i)))    i = n-1 .. 1
        P_i = O_i(M_i)

    with ``fuse`` the sum (the paper) or the mean of the two. The upsampling goes to the
    lateral's exact size, so a map of odd size (e.g. 13 under 25) lines up cell for cell:
    output row ``r`` reads input row ``r // 2``. With ``top_block="maxpool"`` one more level
    ``P_{n+1} = max_pool2d(P_n, kernel_size=1, stride=2)`` is added (the paper's P6, which
    only its RPN reads). Output ``p{k}`` is the map of stride ``2^k``.

    Args:
        bottom_up: the backbone whose maps are fused.
        in_features: its outputs read, finest first (e.g. ``["res2", "res3", "res4",
            "res5"]`` or ``["stage2", "stage3", "stage4"]``).
        out_channels: channels of every pyramid level (the paper: 256).
        norm: ``""`` (the paper), ``"BN"`` or ``"GN"`` after every lateral and output conv.
        top_block: ``""`` or ``"maxpool"`` (the extra coarsest level).
        fuse_type: ``"sum"`` (the paper) or ``"avg"``.

    ``size_divisibility`` is the coarsest stride of ``in_features`` (its least common
    multiple with the bottom-up's own ``size_divisibility``): an input padded to it halves
    exactly down to the top map, so each top-down step doubles a size exactly. The extra
    max-pool level needs nothing more.
    """

    def __init__(
        self,
        *,
        bottom_up: Backbone,
        in_features: Sequence[str],
        out_channels: int,
        norm: str = "",
        top_block: str = "",
        fuse_type: str = "sum",
    ):
        super().__init__()
        _check_choice(norm, FPN_NORMS, "MODEL.FPN.NORM")
        _check_choice(top_block, FPN_TOP_BLOCKS, "MODEL.FPN.TOP_BLOCK")
        _check_choice(fuse_type, FPN_FUSE_TYPES, "MODEL.FPN.FUSE_TYPE")
        if out_channels < 1:
            raise ValueError(f"MODEL.FPN.OUT_CHANNELS must be >= 1; got {out_channels}.")
        in_features = list(in_features)
        if not in_features:
            raise ValueError("MODEL.FPN.IN_FEATURES must name at least one bottom-up map.")
        shapes = select_feature_shapes(
            bottom_up.output_shape(), in_features, "MODEL.FPN.IN_FEATURES"
        )
        strides = [int(s.stride) for s in shapes]
        levels = _pyramid_levels(in_features, strides)
        if top_block:
            levels.append(levels[-1] + 1)
        self.bottom_up = bottom_up
        self.in_features = in_features
        self.out_channels = int(out_channels)
        self.top_block = top_block
        self.fuse_type = fuse_type
        self.lateral_convs = nn.ModuleList(
            ConvNorm(int(s.channels), out_channels, 1, norm) for s in shapes
        )
        self.output_convs = nn.ModuleList(
            ConvNorm(out_channels, out_channels, 3, norm) for _ in shapes
        )
        self._out_strides = {f"p{level}": 2**level for level in levels}
        self._size_divisibility = padding_multiple(bottom_up.size_divisibility, strides[-1])

    @classmethod
    def from_config(cls, cfg, node, input_shape: ShapeSpec | None = None) -> dict:
        """``node``: ``MODEL.BACKBONE`` (NAME ``FPN``); the pyramid's keys are ``MODEL.FPN``.
        The bottom-up backbone is ``MODEL.FPN.BOTTOM_UP``, built from ``MODEL.BACKBONE``'s
        other keys (``FREEZE_AT``, ``NORM``) and its own (``MODEL.TINY``, ``MODEL.RESNETS``)."""
        fpn = cfg.MODEL.FPN
        return {
            "bottom_up": build_bottom_up(cfg, node, input_shape),
            "in_features": list(fpn.IN_FEATURES),
            "out_channels": fpn.OUT_CHANNELS,
            "norm": fpn.NORM,
            "top_block": fpn.TOP_BLOCK,
            "fuse_type": fpn.FUSE_TYPE,
        }

    @property
    def size_divisibility(self) -> int:
        return self._size_divisibility

    def output_shape(self) -> dict[str, ShapeSpec]:
        """``{"p{k}": ShapeSpec(out_channels, stride=2^k)}``, finest first."""
        return {
            name: ShapeSpec(channels=self.out_channels, stride=stride)
            for name, stride in self._out_strides.items()
        }

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """``images: Tensor[B, C, H, W]`` -> ``{"p{k}": Tensor[B, out_channels, H_k, W_k]}``.

        ``H_k, W_k`` are the sizes of the bottom-up map of stride ``2^k``; for the extra
        level, ``ceil`` of half the top map's. For an input padded to ``size_divisibility``
        they are ``H / 2^k`` and ``W / 2^k`` exactly.
        """
        features = self.bottom_up(images)
        outputs = self.top_down([features[name] for name in self.in_features])
        if self.top_block == "maxpool":
            outputs.append(F.max_pool2d(outputs[-1], kernel_size=1, stride=2))
        return dict(zip(self._out_strides, outputs))

    def top_down(self, features: list[Tensor]) -> list[Tensor]:
        """The pyramid ``[P_1 .. P_n]`` of the bottom-up maps ``[C_1 .. C_n]`` (finest first),
        each ``Tensor[B, out_channels, H_i, W_i]`` with the size of its ``C_i``."""
        merged = self.lateral_convs[-1](features[-1])
        outputs = [self.output_convs[-1](merged)]
        for index in range(len(features) - 2, -1, -1):
            lateral = self.lateral_convs[index](features[index])
            merged = self.fuse(lateral, upsample_to(merged, lateral))
            outputs.insert(0, self.output_convs[index](merged))
        return outputs

    def fuse(self, lateral: Tensor, top_down: Tensor) -> Tensor:
        """Sum, or mean, of two ``Tensor[B, C, H, W]``."""
        fused = lateral + top_down
        return fused / 2 if self.fuse_type == "avg" else fused


def upsample_to(x: Tensor, reference: Tensor) -> Tensor:
    """Nearest-neighbour resize of ``x: Tensor[B, C, h, w]`` to ``reference``'s ``H x W``:
    output ``(r, c)`` is input ``(floor(r * h / H), floor(c * w / W))``, which for
    ``h = ceil(H / 2)`` is ``(r // 2, c // 2)``."""
    return F.interpolate(x, size=reference.shape[-2:], mode="nearest")


def build_bottom_up(cfg, node, input_shape: ShapeSpec | None = None) -> Backbone:
    """Build ``MODEL.FPN.BOTTOM_UP`` from a copy of ``node`` (``MODEL.BACKBONE``) with that
    ``NAME``, so the bottom-up reads ``FREEZE_AT`` and ``NORM`` as it would on its own.

    Raises:
        ComponentNotFoundError: no backbone of that name (the message names the key).
        ValueError: the name is ``FPN`` itself (or a subclass): a pyramid of a pyramid.
    """
    name = cfg.MODEL.FPN.BOTTOM_UP
    try:
        component = BACKBONE_REGISTRY.get(name)
    except ComponentNotFoundError as e:
        raise ComponentNotFoundError(f"MODEL.FPN.BOTTOM_UP: {e}") from None
    if isinstance(component, type) and issubclass(component, FPN):
        raise ValueError(
            f"MODEL.FPN.BOTTOM_UP is '{name}', a feature pyramid; it must name the backbone "
            "the pyramid is built on (e.g. TinyBackbone or ResNet)."
        )
    bottom_up_node = node.clone()
    bottom_up_node.defrost()
    bottom_up_node.NAME = name
    return build_backbone(cfg, node=bottom_up_node, input_shape=input_shape)


def _pyramid_levels(names: list[str], strides: list[int]) -> list[int]:
    """``log2`` of each stride; they must be increasing integers (powers of two)."""
    levels = [math.log2(s) if s > 0 else math.nan for s in strides]
    increasing = all(b > a for a, b in zip(levels, levels[1:]))
    if not all(level.is_integer() for level in levels) or not increasing:
        raise ValueError(
            f"MODEL.FPN.IN_FEATURES {names} have strides {strides}; an FPN needs strides "
            "that are powers of two, listed finest first (e.g. 4, 8, 16, 32)."
        )
    return [int(level) for level in levels]


def _check_choice(value: str, valid: tuple[str, ...], key: str) -> None:
    if value not in valid:
        raise ValueError(
            f"{key} must be one of {', '.join(repr(v) for v in valid)}; got {value!r}."
        )
