"""ImageNet classifier weights: ``torchvision://<model>`` names and renaming onto detkit modules.

PAPER.md "Backbone": the detector starts from an ImageNet classifier; for VGG16 its conv
layers become the backbone and fc6/fc7 the box head. detkit's backbones and box heads keep
torchvision's submodule names, so a torchvision state_dict loads after a prefix change:

- VGG16: ``features.*`` -> ``backbone.features.*``; ``classifier.0.*`` (fc6) and
  ``classifier.3.*`` (fc7) -> ``roi_heads.box_head.fc6.* / fc7.*``; ``classifier.6.*``
  (the 1000-way layer) is dropped.
- ResNet: ``conv1, bn1, layer1..layer3`` -> ``backbone.*``; ``layer4`` -> the C4 box head
  ``roi_heads.box_head.layer4.*``; ``fc.*`` is dropped. BatchNorm weight, bias and running
  statistics load into FrozenBatchNorm2d's buffers of the same names.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Collection, Mapping

import torch
import torchvision

from detkit.modeling.backbone.vgg import VGG16_CLASSIFIER_TO_BOX_HEAD

__all__ = [
    "TORCHVISION_SCHEME",
    "cached_torchvision_weights",
    "convert_imagenet_state_dict",
    "detect_imagenet_format",
    "resolve_torchvision_url",
]

logger = logging.getLogger(__name__)

TORCHVISION_SCHEME = "torchvision://"

# Where the ImageNet modules sit in a detkit detector (GeneralizedRCNN's attribute names).
_BACKBONE = "backbone."
_BOX_HEAD = "roi_heads.box_head."

# (source prefix, candidate target prefixes): the first candidate the model has is used.
_VGG16_RULES = [("features.", [_BACKBONE + "features."])] + [
    (source, [_BOX_HEAD + target]) for source, target in VGG16_CLASSIFIER_TO_BOX_HEAD.items()
]
_RESNET_RULES = [
    (stage, [_BACKBONE + stage]) for stage in ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.")
] + [("layer4.", [_BOX_HEAD + "layer4.", _BACKBONE + "layer4."])]
_RULES = {"vgg16": _VGG16_RULES, "resnet": _RESNET_RULES}
_DROPPED = {"vgg16": ("classifier.6.",), "resnet": ("fc.",)}  # the ImageNet classifiers


def resolve_torchvision_url(name: str) -> str:
    """The download URL of torchvision's ImageNet weights for ``torchvision://<model>``.

    ``name`` is ``torchvision://<model>`` or ``torchvision://<model>/<weights>``, e.g.
    ``torchvision://vgg16``, ``torchvision://resnet50``,
    ``torchvision://resnet50/IMAGENET1K_V2``. Without ``<weights>`` the entry
    ``IMAGENET1K_V1`` is used when it exists (the classic ImageNet recipe, which
    torchvision's own detection models start from), else the model's DEFAULT.

    Raises:
        ValueError: unknown model or weights name, with the valid ones.
    """
    spec = name[len(TORCHVISION_SCHEME) :] if name.startswith(TORCHVISION_SCHEME) else name
    model_name, _, weights_name = spec.partition("/")
    try:
        weights_enum = torchvision.models.get_model_weights(model_name)
    except ValueError:
        raise ValueError(
            f"'{name}': torchvision has no model '{model_name}'. Use e.g. "
            "torchvision://vgg16, torchvision://resnet50 or torchvision://resnet101."
        ) from None
    valid = [entry.name for entry in weights_enum]
    if not weights_name:
        weights_name = "IMAGENET1K_V1" if "IMAGENET1K_V1" in valid else weights_enum.DEFAULT.name
    if weights_name not in valid:
        raise ValueError(
            f"'{name}': torchvision's {model_name} has no weights '{weights_name}'; valid: "
            f"{', '.join(valid)} (write torchvision://{model_name}/<weights>)."
        )
    return weights_enum[weights_name].url


def cached_torchvision_weights(url: str) -> str | None:
    """The file torchvision itself would have downloaded ``url`` to, if it is there.

    torchvision caches weights in ``<torch.hub.get_dir()>/checkpoints/<file name>``; a
    machine that already used them then needs no download.
    """
    path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))
    return path if os.path.isfile(path) else None


def detect_imagenet_format(state_dict: Mapping[str, object]) -> str | None:
    """``"vgg16"`` or ``"resnet"`` for a torchvision ImageNet classifier state_dict, else None.

    Raises:
        ValueError: a VGG with BatchNorm (``vgg16_bn``), which detkit's VGG16 cannot take.
    """
    keys = set(state_dict)
    if "features.0.weight" in keys and "classifier.0.weight" in keys:
        if "features.1.running_mean" in keys:
            raise ValueError(
                "These are weights of a VGG with BatchNorm (torchvision's vgg16_bn); detkit's "
                "VGG16 backbone has no BatchNorm. Use torchvision://vgg16."
            )
        return "vgg16"
    if {"conv1.weight", "bn1.weight", "layer1.0.conv1.weight", "fc.weight"} <= keys:
        return "resnet"
    return None


def _select_prefix(candidates: list[str], model_keys: Collection[str]) -> str:
    for prefix in candidates:
        if any(key.startswith(prefix) for key in model_keys):
            return prefix
    return candidates[0]  # the model has none: reported as unused keys when loading


def _nested_resnet_rules(
    rules: list[tuple[str, str]], model_keys: Collection[str]
) -> list[tuple[str, str]]:
    """The ResNet rules retargeted when the backbone holds the ResNet one level down (e.g.
    a feature pyramid's ``backbone.bottom_up.``): the prefix is found from the model's own
    ``...layer1.0.conv1.weight`` key under ``backbone.``."""
    suffix = "layer1.0.conv1.weight"
    found = {
        k[: -len(suffix)] for k in model_keys if k.startswith(_BACKBONE) and k.endswith(suffix)
    }
    if len(found) != 1 or _BACKBONE in found:
        return rules
    prefix = found.pop()

    def retarget(source: str, target: str) -> str:
        if target.startswith(_BACKBONE):
            return prefix + target[len(_BACKBONE) :]
        nested = prefix + source  # e.g. layer4 in the nested ResNet, not in the box head
        if not any(k.startswith(target) for k in model_keys) and any(
            k.startswith(nested) for k in model_keys
        ):
            return nested
        return target

    return [(source, retarget(source, target)) for source, target in rules]


def convert_imagenet_state_dict(
    state_dict: Mapping[str, torch.Tensor], fmt: str, model_keys: Collection[str]
) -> dict[str, torch.Tensor]:
    """Rename a torchvision ImageNet state_dict to detkit's module names.

    Args:
        state_dict: torchvision classifier weights (``vgg16().state_dict()`` or
            ``resnet50().state_dict()`` layout).
        fmt: :func:`detect_imagenet_format` of ``state_dict``.
        model_keys: the detector's state_dict keys; they pick the target of modules that
            can live in two places (ResNet ``layer4``: C4 box head or backbone).

    Returns:
        The renamed weights. The ImageNet classifier layer is dropped; tensors that are not
        all finite (e.g. the NaN classifier of torchvision's ``IMAGENET1K_FEATURES``) are
        dropped with a warning; keys matching no rule are kept as they are.
    """
    rules = [(source, _select_prefix(targets, model_keys)) for source, targets in _RULES[fmt]]
    if fmt == "resnet":
        rules = _nested_resnet_rules(rules, model_keys)
    converted: dict[str, torch.Tensor] = {}
    dropped, non_finite = [], []
    for key, value in state_dict.items():
        if key.startswith(_DROPPED[fmt]):
            dropped.append(key)
            continue
        # NaN or inf anywhere makes the sum non-finite; one sum is far cheaper than an
        # elementwise isfinite over VGG16's 138M weights (real weights never overflow it).
        if value.is_floating_point() and not math.isfinite(value.sum()):
            non_finite.append(key)
            continue
        for source, target in rules:
            if key.startswith(source):
                key = target + key[len(source) :]
                break
        converted[key] = value
    logger.info(
        f"ImageNet {fmt} weights mapped onto detkit modules: {len(converted)} tensors; "
        f"the 1000-class classifier ({', '.join(dropped)}) is not used."
    )
    if non_finite:
        logger.warning(
            f"Skipped {len(non_finite)} tensors holding NaN or infinite values (not loaded): "
            f"{', '.join(non_finite)}."
        )
    return converted
