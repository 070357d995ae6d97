"""``Boxes``: a list of axis-aligned boxes as one ``Tensor[N, 4]`` in XYXY absolute pixels."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor
from torchvision.ops import box_iou

__all__ = ["Boxes", "pairwise_iou"]


class Boxes:
    """N boxes, ``tensor: Tensor[N, 4]`` as (x1, y1, x2, y2) in absolute pixels.

    Args:
        tensor: float boxes of shape (N, 4); an empty input of any shape becomes (0, 4).
        legacy_plus_one: measure width as ``x2 - x1 + 1`` (the released code's convention,
            where a box covers whole pixels ``x1..x2``) instead of ``x2 - x1``.
    """

    def __init__(self, tensor: Tensor, legacy_plus_one: bool = False):
        if not isinstance(tensor, Tensor):
            tensor = torch.as_tensor(tensor, dtype=torch.float32)
        elif not tensor.is_floating_point():
            tensor = tensor.to(torch.float32)
        # The shape first: N may be a number known only at run time (torch.export).
        if tensor.dim() != 2 or tensor.shape[-1] != 4:
            if tensor.numel() != 0:
                raise ValueError(
                    f"Boxes expects a tensor of shape (N, 4); got {tuple(tensor.shape)}."
                )
            tensor = tensor.reshape(0, 4).to(dtype=torch.float32)
        self.tensor = tensor
        self.legacy_plus_one = legacy_plus_one

    @property
    def _one(self) -> float:
        return 1.0 if self.legacy_plus_one else 0.0

    def clone(self) -> Boxes:
        return Boxes(self.tensor.clone(), self.legacy_plus_one)

    def to(self, device: torch.device | str) -> Boxes:
        return Boxes(self.tensor.to(device), self.legacy_plus_one)

    @property
    def device(self) -> torch.device:
        return self.tensor.device

    def widths(self) -> Tensor:
        """Tensor[N]: x2 - x1 (+1 under the legacy convention)."""
        return self.tensor[:, 2] - self.tensor[:, 0] + self._one

    def heights(self) -> Tensor:
        """Tensor[N]: y2 - y1 (+1 under the legacy convention)."""
        return self.tensor[:, 3] - self.tensor[:, 1] + self._one

    def area(self) -> Tensor:
        """Tensor[N]: width * height of each box."""
        return self.widths() * self.heights()

    def clip(self, image_size: tuple[int, int]) -> None:
        """Clip in place to an image of ``(height, width)``.

        Coordinates end up in [0, width] x [0, height], or [0, width - 1] x [0, height - 1]
        under the legacy convention, where the last pixel index is the border.
        """
        h, w = image_size
        x_max, y_max = w - self._one, h - self._one
        # Float bounds: ONNX export cannot mix an int bound with a symbolic float one.
        self.tensor[:, 0].clamp_(min=0.0, max=x_max)
        self.tensor[:, 1].clamp_(min=0.0, max=y_max)
        self.tensor[:, 2].clamp_(min=0.0, max=x_max)
        self.tensor[:, 3].clamp_(min=0.0, max=y_max)

    def nonempty(self, threshold: float = 0.0) -> Tensor:
        """Tensor[N] bool: True where both width and height exceed ``threshold``."""
        return (self.widths() > threshold) & (self.heights() > threshold)

    def scale(self, scale_x: float, scale_y: float) -> None:
        """Multiply x coordinates by ``scale_x`` and y coordinates by ``scale_y``, in place."""
        self.tensor[:, 0::2] *= scale_x
        self.tensor[:, 1::2] *= scale_y

    def flip_horizontal(self, image_width: int) -> Boxes:
        """The boxes mirrored in an image of this width (x1 and x2 swap, so x1 <= x2 holds)."""
        t = self.tensor
        right = image_width - self._one
        flipped = torch.stack([right - t[:, 2], t[:, 1], right - t[:, 0], t[:, 3]], dim=1)
        return Boxes(flipped, self.legacy_plus_one)

    def centers(self) -> Tensor:
        """Tensor[N, 2]: (x, y) box centres."""
        return (self.tensor[:, :2] + self.tensor[:, 2:]) / 2

    def __getitem__(self, item: int | slice | Tensor) -> Boxes:
        if isinstance(item, int):
            return Boxes(self.tensor[item].view(1, -1), self.legacy_plus_one)
        selected = self.tensor[item]
        return Boxes(selected.reshape(-1, 4), self.legacy_plus_one)

    def __len__(self) -> int:
        return self.tensor.shape[0]

    def __iter__(self) -> Iterator[Tensor]:
        yield from self.tensor

    def __repr__(self) -> str:
        return f"Boxes({self.tensor})"

    @staticmethod
    def cat(boxes_list: list[Boxes]) -> Boxes:
        """Concatenate several ``Boxes`` (all with the same width convention)."""
        if not boxes_list:
            return Boxes(torch.empty(0, 4))
        conventions = {b.legacy_plus_one for b in boxes_list}
        if len(conventions) > 1:
            raise ValueError("Cannot concatenate Boxes with different width conventions.")
        return Boxes(torch.cat([b.tensor for b in boxes_list], dim=0), conventions.pop())


def pairwise_iou(boxes1: Boxes, boxes2: Boxes) -> Tensor:
    """IoU of every pair: ``Tensor[N, M]`` for N and M boxes (torchvision ``box_iou``).

    Under the legacy convention (either argument), each box is widened by one pixel on its
    far sides, which is exactly the ``+1`` width and height of the released code.
    """
    a, b = boxes1.tensor, boxes2.tensor
    if boxes1.legacy_plus_one or boxes2.legacy_plus_one:
        one = a.new_tensor([0.0, 0.0, 1.0, 1.0])
        a, b = a + one, b + one
    return box_iou(a, b)
