"""ImageNet ResNet weights for a detector whose backbone is ``FPN`` over ``ResNet``.

detkit renames a torchvision ResNet state_dict onto ``backbone.conv1 .. backbone.layer3``
(and ``layer4`` onto the C4 box head); inside an ``FPN`` the ResNet's modules are
``backbone.bottom_up.*``, so ``MODEL.WEIGHTS: torchvision://resnet50`` finds none of them.
This module writes the renamed weights as a detkit checkpoint, which ``MODEL.WEIGHTS`` then
loads by name::

    python -m projects.fpn.weights torchvision://resnet50 output/projects/fpn/r50_imagenet.pth
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from detkit.checkpoint.imagenet import (
    TORCHVISION_SCHEME,
    cached_torchvision_weights,
    detect_imagenet_format,
    resolve_torchvision_url,
)

__all__ = ["FPN_BOTTOM_UP_PREFIX", "imagenet_resnet_to_fpn", "main"]

#: Where the bottom-up ResNet sits in a GeneralizedRCNN whose backbone is ``FPN``.
FPN_BOTTOM_UP_PREFIX = "backbone.bottom_up."


def imagenet_resnet_to_fpn(
    state_dict: Mapping[str, Tensor], prefix: str = FPN_BOTTOM_UP_PREFIX
) -> dict[str, Tensor]:
    """Rename a torchvision ResNet classifier state_dict onto an FPN detector's modules.

    Every key gets ``prefix`` (``conv1.weight`` -> ``backbone.bottom_up.conv1.weight``);
    the 1000-class ``fc.*`` is dropped.

    Raises:
        ValueError: ``state_dict`` is not a torchvision ResNet's.
    """
    if detect_imagenet_format(state_dict) != "resnet":
        raise ValueError(
            "Expected a torchvision ResNet classifier state_dict (keys conv1.weight, "
            f"layer1.0.conv1.weight, fc.weight, ...); got keys like {sorted(state_dict)[:3]}."
        )
    return {prefix + k: v for k, v in state_dict.items() if not k.startswith("fc.")}


def load_classifier_weights(source: str) -> dict[str, Tensor]:
    """A ResNet state_dict from ``torchvision://<model>`` (torchvision's cache, else a
    download into it) or from a local ``.pth`` file."""
    if source.startswith(TORCHVISION_SCHEME):
        url = resolve_torchvision_url(source)
        cached = cached_torchvision_weights(url)
        if cached is None:
            return torch.hub.load_state_dict_from_url(url, map_location="cpu")
        source = cached
    return torch.load(source, map_location="cpu", weights_only=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "source",
        help="torchvision://resnet50, torchvision://resnet101 or a local torchvision ResNet .pth",
    )
    parser.add_argument("output", help="the detkit checkpoint to write (for MODEL.WEIGHTS)")
    args = parser.parse_args(argv)
    converted = imagenet_resnet_to_fpn(load_classifier_weights(args.source))
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    torch.save({"model": converted}, args.output)
    print(f"Wrote {len(converted)} tensors to {args.output}")


if __name__ == "__main__":
    main()
