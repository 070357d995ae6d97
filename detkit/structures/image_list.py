"""``ImageList``: images of different sizes padded into one batch tensor."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.fx.experimental.symbolic_shapes import statically_known_true

__all__ = ["ImageList"]


class ImageList:
    """A batch ``Tensor[B, C, H, W]`` plus the (height, width) of each image before padding.

    Images are zero-padded at the bottom and right (paper input convention), so pixel
    coordinates are the same in the padded batch as in each image.

    Args:
        tensor: the padded batch.
        image_sizes: (height, width) of each image inside the batch (after any resize).
        original_sizes: (height, width) of each image as read from disk, before the resize,
            when known; components that work at the original scale (the RPN's minimum
            proposal size) use it.
    """

    def __init__(
        self,
        tensor: Tensor,
        image_sizes: list[tuple[int, int]],
        original_sizes: list[tuple[int, int]] | None = None,
    ):
        self.tensor = tensor
        self.image_sizes = image_sizes
        self.original_sizes = original_sizes if original_sizes is not None else list(image_sizes)

    def scale_factors(self) -> list[float]:
        """Per image, resized height / original height (the resize factor of both axes)."""
        return [s[0] / o[0] for s, o in zip(self.image_sizes, self.original_sizes)]

    def __len__(self) -> int:
        return len(self.image_sizes)

    def __getitem__(self, idx: int) -> Tensor:
        """The ``idx``-th image without its padding, ``Tensor[C, h, w]``."""
        h, w = self.image_sizes[idx]
        return self.tensor[idx, ..., :h, :w]

    def to(self, device: torch.device | str) -> ImageList:
        return ImageList(self.tensor.to(device), self.image_sizes, self.original_sizes)

    @property
    def device(self) -> torch.device:
        return self.tensor.device

    @staticmethod
    def from_tensors(
        tensors: list[Tensor], size_divisibility: int = 0, pad_value: float = 0.0
    ) -> ImageList:
        """Pad ``Tensor[C, H_i, W_i]`` images to a common size.

        Args:
            tensors: images with the same number of channels (and dtype, device).
            size_divisibility: when > 0, the padded height and width are rounded up to a
                multiple of it (for backbones that need sizes divisible by their stride).
            pad_value: value of the padding.

        Returns:
            An ImageList whose tensor is ``[B, C, H, W]``, H and W the largest sizes
            (rounded up), and whose ``image_sizes`` are the original ``(H_i, W_i)``.
        """
        if not tensors:
            raise ValueError("ImageList.from_tensors needs at least one image.")
        channels = {t.shape[:-2] for t in tensors}
        if len(channels) > 1:
            raise ValueError(
                f"ImageList.from_tensors: images have different leading shapes {sorted(channels)}; "
                "all must have the same number of channels."
            )
        # Sizes stay symbolic while exporting (torch.export with dynamic H and W).
        image_sizes = [(torch.sym_int(t.shape[-2]), torch.sym_int(t.shape[-1])) for t in tensors]
        max_h = max(h for h, _ in image_sizes)
        max_w = max(w for _, w in image_sizes)
        if size_divisibility > 1:
            max_h = -(-max_h // size_divisibility) * size_divisibility
            max_w = -(-max_w // size_divisibility) * size_divisibility
        unpadded = statically_known_true(image_sizes[0][0] == max_h) and statically_known_true(
            image_sizes[0][1] == max_w
        )
        if len(tensors) == 1 and unpadded:
            return ImageList(tensors[0].unsqueeze(0), image_sizes)
        batch = tensors[0].new_full((len(tensors), *tensors[0].shape[:-2], max_h, max_w), pad_value)
        for pad_img, img in zip(batch, tensors):
            pad_img[..., : img.shape[-2], : img.shape[-1]].copy_(img)
        return ImageList(batch, image_sizes)
