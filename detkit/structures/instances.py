"""``Instances``: per-image fields (boxes, classes, scores, ...) of one common length."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["Instances", "check_gt_classes"]


def _num_items(value: Any) -> int | torch.SymInt:
    """``len(value)``; for a tensor (or ``Boxes``) its first dimension, which stays
    symbolic while exporting where ``len()`` would have to make it a plain int."""
    tensor = getattr(value, "tensor", value)
    return torch.sym_int(tensor.shape[0]) if isinstance(tensor, torch.Tensor) else len(value)


class Instances:
    """A set of N objects in one image, each field holding one entry per object.

    Fields are set as attributes (``inst.gt_boxes = Boxes(...)``) and must all have the same
    length; a field of another length is an error naming both lengths. Indexing with an int,
    slice, index tensor or bool mask selects objects in every field at once.

    Args:
        image_size: (height, width) of the image the objects live in.
        **fields: initial fields.
    """

    def __init__(self, image_size: tuple[int, int], **fields: Any):
        # torch.sym_int: an int, but a symbolic size stays symbolic (torch.export).
        self._image_size = (torch.sym_int(image_size[0]), torch.sym_int(image_size[1]))
        self._fields: dict[str, Any] = {}
        for name, value in fields.items():
            self.set(name, value)

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width)."""
        return self._image_size

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            super().__setattr__(name, value)
        else:
            self.set(name, value)

    def __getattr__(self, name: str) -> Any:
        if name == "_fields" or name not in self._fields:
            raise AttributeError(
                f"Instances has no field '{name}'. Fields: {list(self.__dict__.get('_fields', {}))}"
            )
        return self._fields[name]

    def set(self, name: str, value: Any) -> None:
        """Set a field; its length must equal that of the fields already present."""
        n = _num_items(value)
        if self._fields and n != self.num_instances():
            raise ValueError(
                f"Instances field '{name}' has length {n}, but the other fields "
                f"({', '.join(self._fields)}) have length {len(self)}; all fields of one "
                "Instances must describe the same objects."
            )
        self._fields[name] = value

    def has(self, name: str) -> bool:
        return name in self._fields

    def remove(self, name: str) -> None:
        del self._fields[name]

    def get(self, name: str) -> Any:
        return self._fields[name]

    def get_fields(self) -> dict[str, Any]:
        """The fields, by name (the dict itself, not a copy)."""
        return self._fields

    def to(self, device: torch.device | str) -> Instances:
        """A copy with every tensor-like field moved to ``device``."""
        out = Instances(self._image_size)
        for name, value in self._fields.items():
            out.set(name, value.to(device) if hasattr(value, "to") else value)
        return out

    def __getitem__(self, item: int | slice | torch.Tensor) -> Instances:
        if isinstance(item, int):
            if item >= len(self) or item < -len(self):
                raise IndexError(f"Instances index {item} out of range for length {len(self)}.")
            item = item % len(self)
            item = slice(item, item + 1)
        out = Instances(self._image_size)
        for name, value in self._fields.items():
            out.set(name, value[item])
        return out

    def __len__(self) -> int:
        return int(self.num_instances())

    def num_instances(self) -> int | torch.SymInt:
        """``len(self)``, symbolic while exporting (``len()`` must return a plain int)."""
        for value in self._fields.values():
            return _num_items(value)
        return 0

    def __iter__(self):
        raise TypeError("Instances cannot be iterated; index it or read a field.")

    @staticmethod
    def cat(instance_lists: list[Instances]) -> Instances:
        """Concatenate Instances of one image size with the same fields."""
        if not instance_lists:
            raise ValueError("Instances.cat needs at least one Instances.")
        first = instance_lists[0]
        for other in instance_lists[1:]:
            if other.image_size != first.image_size:
                raise ValueError(
                    f"Instances.cat: image sizes differ ({first.image_size} vs {other.image_size})."
                )
            if set(other._fields) != set(first._fields):
                raise ValueError(
                    f"Instances.cat: fields differ ({sorted(first._fields)} vs "
                    f"{sorted(other._fields)})."
                )
        out = Instances(first.image_size)
        for name, value in first._fields.items():
            values = [inst._fields[name] for inst in instance_lists]
            if isinstance(value, torch.Tensor):
                merged = torch.cat(values, dim=0)
            elif isinstance(value, list):
                merged = [v for vs in values for v in vs]
            elif hasattr(type(value), "cat"):
                merged = type(value).cat(values)
            else:
                raise TypeError(f"Instances.cat cannot concatenate field '{name}' ({type(value)}).")
            out.set(name, merged)
        return out

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}: {v!r}" for k, v in self._fields.items())
        return (
            f"Instances(num_instances={len(self)}, image_height={self._image_size[0]}, "
            f"image_width={self._image_size[1]}, fields=[{fields}])"
        )


def check_gt_classes(gt_classes: torch.Tensor, num_classes: int, key: str) -> None:
    """Refuse ground-truth class indices outside ``0 .. num_classes - 1`` before they reach a
    loss (where torch would fail with an index error, or worse, silently learn them as
    background).

    Args:
        gt_classes: ``[M]`` class indices of one image's objects.
        num_classes: the number of foreground classes the head predicts.
        key: the config key holding ``num_classes``, named in the error.

    Raises:
        ValueError: naming the offending index, ``key`` and its value.
    """
    if gt_classes.numel() == 0:
        return
    extremes = torch.aminmax(gt_classes)  # one host transfer for both (a device sync)
    low, high = torch.stack([extremes.min, extremes.max]).tolist()
    if low < 0 or high >= num_classes:
        bad = high if high >= num_classes else low
        raise ValueError(
            f"A ground-truth object has class index {bad}, outside 0 .. {num_classes - 1} "
            f"({key} = {num_classes}). Set {key} to the number of classes of the training "
            "datasets (len of their thing_classes), or fix the category ids of the data."
        )
