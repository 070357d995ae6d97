"""``ResNet``: torchvision's ResNet-50/101 as a bottom-up backbone with all four stages,
``res2 .. res5`` (a feature pyramid needs them; detkit's ``ResNetC4`` stops at res4)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from detkit.layers import ShapeSpec, freeze_module
from detkit.modeling import BACKBONE_REGISTRY, Backbone
from detkit.modeling.backbone.resnet import build_torchvision_resnet

__all__ = ["RESNET_STAGES", "ResNet"]

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
    ``out_features``.

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

    @classmethod
    def from_config(cls, cfg, node, input_shape: ShapeSpec | None = None) -> dict:
        """``node``: the backbone node (its ``FREEZE_AT``); depth and normalization come from
        ``MODEL.RESNETS``. Every stage is returned: a consumer picks its maps by name."""
        if input_shape is not None and input_shape.channels not in (None, 3):
            raise ValueError(
                f"ResNet takes 3-channel images; the input has {input_shape.channels} "
                "channels (MODEL.PIXEL_MEAN has one value per input channel)."
            )
        return {
            "depth": cfg.MODEL.RESNETS.DEPTH,
            "norm": cfg.MODEL.RESNETS.NORM,
            "freeze_at": node.FREEZE_AT,
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
