"""VGG16 conv1_1 .. conv5_3 (Simonyan & Zisserman), the shared backbone of the paper's detector."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torchvision.models import vgg as tv_vgg

from detkit.config import CfgNode
from detkit.layers import ShapeSpec, freeze_module
from detkit.modeling.backbone.build import BACKBONE_REGISTRY, Backbone

__all__ = ["VGG16", "VGG16_CLASSIFIER_TO_BOX_HEAD", "VGG16_STAGE_END_INDICES"]

# ImageNet classifier keys of torchvision's vgg16 -> keys of VGGFCHead: fc6 and fc7 initialize
# the detection head (PAPER.md "Backbone"); classifier.6 (the 1000-way layer) is dropped.
VGG16_CLASSIFIER_TO_BOX_HEAD = {"classifier.0.": "fc6.", "classifier.3.": "fc7."}

# One past the last index in torchvision's ``vgg16().features`` of each conv stage:
# conv1_x = [0, 5) (two convs, ReLUs, pool1), conv2_x = [5, 10), ..., conv5_x = [24, 30)
# (conv5_3's ReLU is index 29; pool5 at 30 is dropped because RoI pooling replaces it).
VGG16_STAGE_END_INDICES = (5, 10, 17, 24, 30)


@BACKBONE_REGISTRY.register()
class VGG16(Backbone):
    """VGG16 up to conv5_3 + ReLU: one feature map ``"conv5_3"``, 512 channels, stride 16.

    The layers are torchvision's ``vgg16().features[:30]`` under the same submodule name and
    indices (``features.0.weight`` is conv1_1, ``features.28.weight`` conv5_3), so an
    ImageNet state_dict's ``features.*`` keys load by name. The one change is that the four
    max pools round up (``ceil_mode=True``) as Caffe did: an ``H x W`` image gives a
    ``ceil(H / 16) x ceil(W / 16)`` map, 38 x 63 for 600 x 1000 (PAPER.md "Backbone");
    torchvision's floor rounding would give 37 x 62. Pools have no parameters, so weights
    are unaffected.

    Args:
        freeze_at: number of conv stages frozen from the input, 0 to 5 (stage 1 = conv1_x,
            2 = conv2_x, ...). The paper freezes conv1_x and conv2_x (2); ZF-style full
            training is 0.
    """

    def __init__(self, *, freeze_at: int = 2):
        super().__init__()
        num_stages = len(VGG16_STAGE_END_INDICES)
        if not 0 <= freeze_at <= num_stages:
            raise ValueError(
                f"VGG16 has {num_stages} conv stages; freeze_at must be in [0, {num_stages}], "
                f"got {freeze_at} (config key MODEL.BACKBONE.FREEZE_AT)."
            )
        self.freeze_at = freeze_at
        layers = tv_vgg.make_layers(tv_vgg.cfgs["D"], batch_norm=False)
        self.features = nn.Sequential(*list(layers)[: VGG16_STAGE_END_INDICES[-1]])
        for layer in self.features:
            if isinstance(layer, nn.MaxPool2d):
                layer.ceil_mode = True  # Caffe rounding: ceil(H / 16) cells (PAPER.md 38x63)
            elif isinstance(layer, nn.Conv2d):
                # torchvision's VGG initialization, for training without ImageNet weights.
                nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(layer.bias)
        # Whole stages from the input keep their ImageNet values (paper: conv1_x, conv2_x).
        num_frozen_layers = VGG16_STAGE_END_INDICES[freeze_at - 1] if freeze_at else 0
        for index in range(num_frozen_layers):
            self.features[index] = freeze_module(self.features[index])

    @classmethod
    def from_config(
        cls, cfg: CfgNode, node: CfgNode, input_shape: ShapeSpec | None = None
    ) -> dict[str, Any]:
        """``node``: ``MODEL.BACKBONE``, read for ``FREEZE_AT``; ``input_shape``: the image's
        ``ShapeSpec``, whose channels must be 3 (or unknown)."""
        if input_shape is not None and input_shape.channels not in (None, 3):
            raise ValueError(
                f"VGG16 takes 3-channel images; the input has {input_shape.channels} channels "
                "(MODEL.PIXEL_MEAN has one value per input channel)."
            )
        return {"freeze_at": node.FREEZE_AT}

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """``images: Tensor[B, 3, H, W]`` -> ``{"conv5_3": Tensor[B, 512, H', W']}``.

        ``H' = ceil(H / 16)``, ``W' = ceil(W / 16)``.
        """
        return {"conv5_3": self.features(images)}

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {"conv5_3": ShapeSpec(channels=512, stride=16)}
