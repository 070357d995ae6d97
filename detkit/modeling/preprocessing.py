"""``ImagePreprocessor``: the batched inputs of a detector -> one normalized, padded image batch.

Meta-architectures own one (``self.preprocessor``) and call it first in ``forward``. Its
settings are fixed when the model is built: per-channel normalization, the multiple the
batch is padded to, and the memory format of the batch (``build_model`` gives it the one the
model's weights were converted to, so the first convolution need not convert its input).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from detkit.structures import ImageList, Instances

__all__ = ["ImagePreprocessor", "padding_multiple"]


def padding_multiple(*size_divisibilities: int) -> int:
    """The least common multiple of the positive values (0 when none is: no constraint),
    e.g. a backbone's ``size_divisibility`` and ``INPUT.SIZE_DIVISIBILITY``."""
    for value in size_divisibilities:
        if value < 0:
            raise ValueError(
                "INPUT.SIZE_DIVISIBILITY (and a backbone's size_divisibility) must be >= 0 "
                f"(0 = no extra padding); got {value}."
            )
    positive = [int(v) for v in size_divisibilities if v > 0]
    return math.lcm(*positive) if positive else 0


class ImagePreprocessor(nn.Module):
    """Normalizes each input's ``"image"`` (``(x - mean) / std`` per channel), pads the batch
    bottom/right to a multiple of ``size_divisibility`` and lays it out in ``memory_format``;
    also gathers the inputs' ground truth and precomputed proposals on the same device.

    Args:
        pixel_mean, pixel_std: one value per input channel (``MODEL.PIXEL_MEAN`` /
            ``MODEL.PIXEL_STD``, in ``INPUT.FORMAT`` order).
        size_divisibility: the padded batch's height and width are multiples of this
            (0: no constraint beyond the largest image).
        memory_format: layout of the batch; ``build_model`` sets it to the weights' layout.

    The mean and std are buffers (they follow ``.to(device)`` and ``.double()``) that are not
    saved in checkpoints: they come from the config.
    """

    def __init__(
        self,
        pixel_mean: list[float],
        pixel_std: list[float],
        size_divisibility: int = 0,
        memory_format: torch.memory_format = torch.contiguous_format,
    ):
        super().__init__()
        if len(pixel_mean) != len(pixel_std):
            raise ValueError(
                f"MODEL.PIXEL_MEAN has {len(pixel_mean)} values but MODEL.PIXEL_STD has "
                f"{len(pixel_std)}; give one of each per input channel."
            )
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        self.size_divisibility = padding_multiple(size_divisibility)
        self.memory_format = memory_format

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def extra_repr(self) -> str:
        return (
            f"channels={self.pixel_mean.shape[0]}, size_divisibility="
            f"{self.size_divisibility}, memory_format={self.memory_format}"
        )

    def forward(self, batched_inputs: list[dict[str, Any]]) -> ImageList:
        """``[{"image": Tensor[C, H, W], "height"?, "width"?, ...}]`` -> an ``ImageList`` whose
        ``tensor`` is ``[N, C, H_pad, W_pad]`` (normalized, then padded with zeros) and whose
        ``original_sizes`` are each input's ``(height, width)`` (default: the image's)."""
        images = [self._normalized(i, x) for i, x in enumerate(batched_inputs)]
        batch = ImageList.from_tensors(images, self.size_divisibility)
        batch.tensor = batch.tensor.contiguous(memory_format=self.memory_format)
        batch.original_sizes = [
            (
                torch.sym_int(x.get("height", im.shape[-2])),
                torch.sym_int(x.get("width", im.shape[-1])),
            )
            for x, im in zip(batched_inputs, images)
        ]
        return batch

    def _normalized(self, index: int, item: dict[str, Any]) -> Tensor:
        image = item.get("image")
        where = f"Input {index} (image_id {item.get('image_id', '?')})"
        if not isinstance(image, Tensor) or image.dim() != 3:
            shape = tuple(image.shape) if isinstance(image, Tensor) else ""
            raise ValueError(
                f"{where} needs 'image': a Tensor[C, H, W]; got {type(image).__name__}{shape}."
            )
        if image.shape[0] != self.pixel_mean.shape[0]:
            raise ValueError(
                f"{where} has {image.shape[0]} channels; MODEL.PIXEL_MEAN has "
                f"{self.pixel_mean.shape[0]}."
            )
        return (image.to(self.device, self.pixel_mean.dtype) - self.pixel_mean) / self.pixel_std

    def ground_truth(self, batched_inputs: list[dict[str, Any]]) -> list[Instances]:
        """Each training input's ``"instances"`` on the device; a missing one is an error
        (an image without objects has an empty ``Instances``)."""
        gt = []
        for i, x in enumerate(batched_inputs):
            if "instances" not in x:
                raise ValueError(
                    f"Training input {i} (image_id {x.get('image_id', '?')}) has no 'instances' "
                    "with gt_boxes and gt_classes; an image without objects needs an empty "
                    "Instances, not a missing one."
                )
            gt.append(x["instances"].to(self.device))
        return gt

    def proposals(self, batched_inputs: list[dict[str, Any]]) -> list[Instances] | None:
        """The ``"proposals"`` that came with the inputs (precomputed proposal files), on the
        device, or None when no input has any; all or none must have them."""
        if not any("proposals" in x for x in batched_inputs):
            return None
        missing = [
            x.get("image_id", i) for i, x in enumerate(batched_inputs) if "proposals" not in x
        ]
        if missing:
            raise ValueError(
                f"Inputs with image_id {missing} have no 'proposals' while others of the batch "
                "do; every image needs its precomputed proposals."
            )
        return [x["proposals"].to(self.device) for x in batched_inputs]
