"""ResNet-50/101 backbones (He et al. 2016) from torchvision's modules: ``ResNetC4`` (stem
and res2..res4, one map, for the C4 detector) and ``ResNet`` (any of res2..res5 by name)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torchvision
from torch import Tensor

from detkit.config import CfgNode
from detkit.layers import ShapeSpec, freeze_module, get_norm
from detkit.modeling.backbone.build import BACKBONE_REGISTRY, Backbone

__all__ = [
    "RESNET_DEPTHS",
    "RESNET_NORMS",
    "RESNET_STAGES",
    "ResNet",
    "ResNetC4",
    "build_torchvision_resnet",
]

RESNET_DEPTHS = {50: torchvision.models.resnet50, 101: torchvision.models.resnet101}
RESNET_NORMS = ("FrozenBN", "BN")  # MODEL.RESNETS.NORM values


def build_torchvision_resnet(depth: int, norm: str) -> torchvision.models.ResNet:
    """A randomly initialized torchvision ResNet (``weights=None``) with ``norm`` layers.

    Shared by :class:`ResNetC4` (stem, layer1..layer3) and ``Res5Head`` (layer4), which keep
    torchvision's submodule names so ImageNet state_dict keys map by name. The blocks are
    torchvision's "v1.5" bottlenecks (stride in the 3x3 conv).

    Args:
        depth: 50 or 101 (``MODEL.RESNETS.DEPTH``).
        norm: ``"FrozenBN"`` or ``"BN"`` (``MODEL.RESNETS.NORM``).

    Raises:
        ValueError: unsupported depth or norm, with the valid values.
    """
    if depth not in RESNET_DEPTHS:
        raise ValueError(
            f"Unsupported ResNet depth {depth} (config key MODEL.RESNETS.DEPTH); valid depths: "
            f"{', '.join(str(d) for d in RESNET_DEPTHS)}."
        )
    if norm not in RESNET_NORMS:
        raise ValueError(
            f"Unsupported ResNet normalization '{norm}' (config key MODEL.RESNETS.NORM); valid: "
            f"{', '.join(repr(n) for n in RESNET_NORMS)}."
        )
    return RESNET_DEPTHS[depth](weights=None, norm_layer=lambda channels: get_norm(norm, channels))


@BACKBONE_REGISTRY.register()
class ResNetC4(Backbone):
    """ResNet stem + res2..res4 (``conv1, bn1, layer1, layer2, layer3``): one map ``"res4"``.

    ``"res4"`` has 1024 channels at stride 16: an ``H x W`` image gives a
    ``ceil(H / 16) x ceil(W / 16)`` map. res5 (``layer4``) runs per RoI in ``Res5Head``
    (the C4 detector of He et al.). Submodule names are torchvision's, so the keys
    ``conv1.*, bn1.*, layer1.* .. layer3.*`` of an ImageNet state_dict load by name.

    Args:
        depth: 50 or 101.
        norm: ``"FrozenBN"`` (fixed ImageNet statistics and affine; the usual choice with
            1-2 images per batch) or ``"BN"``.
        freeze_at: stages frozen from the input: 0 none, 1 the stem, 2 stem + res2
            (``layer1``; detectron2's default), 3 + res3, 4 + res4. Frozen BN layers become
            FrozenBN, so their statistics do not move in training.
    """

    def __init__(self, *, depth: int = 50, norm: str = "FrozenBN", freeze_at: int = 2):
        super().__init__()
        if not 0 <= freeze_at <= 4:
            raise ValueError(
                "ResNetC4 has 4 stages (stem, res2, res3, res4); freeze_at must be in [0, 4], "
                f"got {freeze_at} (config key MODEL.BACKBONE.FREEZE_AT)."
            )
        self.depth, self.norm, self.freeze_at = depth, norm, freeze_at
        resnet = build_torchvision_resnet(depth, norm)
        self.conv1, self.bn1 = resnet.conv1, resnet.bn1
        self.relu, self.maxpool = resnet.relu, resnet.maxpool
        self.layer1, self.layer2, self.layer3 = resnet.layer1, resnet.layer2, resnet.layer3
        stages = [("conv1", "bn1"), ("layer1",), ("layer2",), ("layer3",)]
        for stage in stages[:freeze_at]:
            for name in stage:
                setattr(self, name, freeze_module(getattr(self, name)))

    @classmethod
    def from_config(
        cls, cfg: CfgNode, node: CfgNode, input_shape: ShapeSpec | None = None
    ) -> dict[str, Any]:
        """``node``: ``MODEL.BACKBONE``, read for ``FREEZE_AT``; ``DEPTH`` and ``NORM`` come
        from ``MODEL.RESNETS``. ``input_shape``: the image's ``ShapeSpec``, whose channels
        must be 3 (or unknown)."""
        if input_shape is not None and input_shape.channels not in (None, 3):
            raise ValueError(
                f"ResNetC4 takes 3-channel images; the input has {input_shape.channels} "
                "channels (MODEL.PIXEL_MEAN has one value per input channel)."
            )
        return {
            "depth": cfg.MODEL.RESNETS.DEPTH,
            "norm": cfg.MODEL.RESNETS.NORM,
            "freeze_at": node.FREEZE_AT,
        }

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """``images: Tensor[B, 3, H, W]`` -> ``{"res4": Tensor[B, 1024, H', W']}``.

        ``H' = ceil(H / 16)``, ``W' = ceil(W / 16)``.
        """
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        x = self.layer3(self.layer2(self.layer1(x)))
        return {"res4": x}

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {"res4": ShapeSpec(channels=1024, stride=16)}


#: Output name -> (torchvision submodule, channels, stride) of ResNet-50/101's stages.
RESNET_STAGES = {
    "res2": ("layer1", 256, 4),
    "res3": ("layer2", 512, 8),
    "res4": ("layer3", 1024, 16),
    "res5": ("layer4", 2048, 32),
}


@BACKBONE_REGISTRY.register()
class ResNet(Backbone):
    """ResNet stem + res2..res5 (``conv1, bn1, layer1 .. layer4``), returning the stages of
    ``out_features`` by name (``MODEL.RESNETS.OUT_FEATURES``), e.g. for a feature pyramid.

    An ``H x W`` image gives ``res{k}`` of shape ``[B, C_k, ceil(H / 2^k), ceil(W / 2^k)]``
    with C = 256, 512, 1024, 2048 for k = 2..5. Submodule names are torchvision's, so a
    torchvision ImageNet state_dict (minus ``fc.*``) loads into it by name.

    Args:
        depth: 50 or 101.
        norm: ``"FrozenBN"`` or ``"BN"``.
        freeze_at: stages frozen from the input: 0 none, 1 the stem, 2 stem + res2 (the
            usual choice), ..., 5 all of them.
        out_features: the stages returned, among ``res2 .. res5``.
    """

    def __init__(
        self,
        *,
        depth: int = 50,
        norm: str = "FrozenBN",
        freeze_at: int = 2,
        out_features: Sequence[str] = tuple(RESNET_STAGES),
    ):
        super().__init__()
        unknown = [f for f in out_features if f not in RESNET_STAGES]
        if unknown or not out_features:
            raise ValueError(
                f"ResNet outputs are among {list(RESNET_STAGES)}; got {list(out_features)}."
            )
        if not 0 <= freeze_at <= 5:
            raise ValueError(
                "ResNet has 5 stages (stem, res2 .. res5); freeze_at must be in [0, 5], got "
                f"{freeze_at} (config key MODEL.BACKBONE.FREEZE_AT)."
            )
        self.out_features = [name for name in RESNET_STAGES if name in out_features]
        resnet = build_torchvision_resnet(depth, norm)
        self.conv1, self.bn1 = resnet.conv1, resnet.bn1
        self.relu, self.maxpool = resnet.relu, resnet.maxpool
        self.layer1, self.layer2 = resnet.layer1, resnet.layer2
        self.layer3, self.layer4 = resnet.layer3, resnet.layer4
        stages = [("conv1", "bn1"), ("layer1",), ("layer2",), ("layer3",), ("layer4",)]
        for stage in stages[:freeze_at]:
            for name in stage:
                setattr(self, name, freeze_module(getattr(self, name)))
        # Stages after the last output feed nothing: not kept (no unused parameters).
        last = list(RESNET_STAGES).index(self.out_features[-1])
        for layer, _, _ in list(RESNET_STAGES.values())[last + 1 :]:
            setattr(self, layer, None)

    @classmethod
    def from_config(
        cls, cfg: CfgNode, node: CfgNode, input_shape: ShapeSpec | None = None
    ) -> dict[str, Any]:
        """``node``: the backbone node (its ``FREEZE_AT``); ``DEPTH``, ``NORM`` and
        ``OUT_FEATURES`` come from ``MODEL.RESNETS``. ``input_shape``: the image's
        ``ShapeSpec``, whose channels must be 3 (or unknown)."""
        if input_shape is not None and input_shape.channels not in (None, 3):
            raise ValueError(
                f"ResNet takes 3-channel images; the input has {input_shape.channels} "
                "channels (MODEL.PIXEL_MEAN has one value per input channel)."
            )
        return {
            "depth": cfg.MODEL.RESNETS.DEPTH,
            "norm": cfg.MODEL.RESNETS.NORM,
            "freeze_at": node.FREEZE_AT,
            "out_features": list(cfg.MODEL.RESNETS.OUT_FEATURES),
        }

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """``images: Tensor[B, 3, H, W]`` -> ``{"res{k}": Tensor[B, C_k, H_k, W_k]}`` for the
        stages of ``out_features``, ``H_k = ceil(H / 2^k)``, ``W_k = ceil(W / 2^k)``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        outputs = {}
        for name, (layer, _, _) in RESNET_STAGES.items():
            x = getattr(self, layer)(x)
            if name in self.out_features:
                outputs[name] = x
            if name == self.out_features[-1]:
                break  # later stages feed no output
        return outputs

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {
            name: ShapeSpec(channels=RESNET_STAGES[name][1], stride=RESNET_STAGES[name][2])
            for name in self.out_features
        }
