"""``DatasetCatalog`` (name -> function returning the dataset dicts) and ``MetadataCatalog``.

Registering a dataset is one call::

    DatasetCatalog.register("my_train", lambda: load_my_dicts("/data/my"))
    MetadataCatalog.get("my_train").set(thing_classes=["cat", "dog"], evaluator_type="voc")

The function is called when the dataset is first needed, in the main process; data-loader
workers receive the resulting list of dicts, never the name, so a registration made in a
user's script also works with worker processes that are spawned rather than forked.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

__all__ = ["DatasetCatalog", "DatasetNotFoundError", "Metadata", "MetadataCatalog"]


class DatasetNotFoundError(KeyError):
    """A catalog look-up for a name nobody registered."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def _unknown_name_message(kind: str, name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return (
        f"No {kind} named '{name}'.{hint} Registered: {', '.join(known) if known else '(none)'}. "
        "Register yours with DatasetCatalog.register(name, function_returning_list_of_dicts) "
        "(see detkit.data.datasets.register_pascal_voc / register_coco_instances)."
    )


class _DatasetCatalog:
    """Maps dataset names to zero-argument functions that return ``list[dict]``.

    Each dict: ``file_name``, ``height``, ``width``, ``image_id``, ``annotations`` (list of
    ``{"bbox": [x1, y1, x2, y2], "category_id": int, "difficult" | "iscrowd"}``), boxes in
    absolute, 0-based continuous pixel coordinates.
    """

    def __init__(self) -> None:
        self._functions: dict[str, Callable[[], list[dict]]] = {}

    def register(self, name: str, func: Callable[[], list[dict]]) -> None:
        """Register ``func`` under ``name``; a name can be registered once (remove() it first)."""
        if not callable(func):
            raise TypeError(
                f"DatasetCatalog.register('{name}', ...) needs a function returning a list of "
                f"dicts; got {type(func).__name__}."
            )
        if name in self._functions:
            raise ValueError(
                f"Dataset '{name}' is already registered. Pick another name, or call "
                f"DatasetCatalog.remove('{name}') first to replace it."
            )
        self._functions[name] = func

    def get(self, name: str) -> list[dict]:
        """Call the function registered as ``name`` and return its list of dataset dicts."""
        if name not in self._functions:
            raise DatasetNotFoundError(_unknown_name_message("dataset", name, self.list()))
        dicts = self._functions[name]()
        if not isinstance(dicts, list):
            raise TypeError(
                f"The function registered as dataset '{name}' returned {type(dicts).__name__}; "
                "it must return a list of dicts."
            )
        return dicts

    def list(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._functions)

    def remove(self, name: str) -> None:
        """Forget ``name`` (KeyError if it is not registered)."""
        if name not in self._functions:
            raise DatasetNotFoundError(_unknown_name_message("dataset", name, self.list()))
        del self._functions[name]

    def __contains__(self, name: object) -> bool:
        return name in self._functions

    def __repr__(self) -> str:
        return f"DatasetCatalog(registered: {', '.join(self.list())})"


class Metadata:
    """Facts about one dataset, read as attributes (``meta.thing_classes``).

    Common keys: ``thing_classes`` (list[str], index = category_id), ``evaluator_type``
    ("voc" | "coco"); VOC: ``dirname``, ``split``, ``year``; COCO: ``json_file``,
    ``image_root``, ``thing_dataset_id_to_contiguous_id``.
    """

    def __init__(self, name: str = "") -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "_values", {})

    def __getattr__(self, key: str) -> Any:
        values = self.__dict__.get("_values", {})
        if key.startswith("__") or key not in values:
            raise AttributeError(
                f"Metadata of dataset '{self.__dict__.get('name', '')}' has no '{key}'. "
                f"It has: {', '.join(sorted(values)) if values else '(nothing yet)'}. "
                f"Set it with MetadataCatalog.get(name).set({key}=...)."
            )
        return values[key]

    def __setattr__(self, key: str, value: Any) -> None:
        self.set(**{key: value})

    def set(self, **kwargs: Any) -> Metadata:
        """Set keys; changing a key to a different value is an error (it is usually a mix-up
        between two datasets). Returns ``self`` so calls chain."""
        for key, value in kwargs.items():
            if key == "name":
                raise AttributeError("Metadata.name is the dataset name and cannot be changed.")
            old = self._values.get(key, value)
            if old != value:
                raise ValueError(
                    f"Metadata '{key}' of dataset '{self.name}' is already {old!r}; refusing to "
                    f"change it to {value!r}. Use MetadataCatalog.remove('{self.name}') first "
                    "to start over."
                )
            self._values[key] = value
        return self

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key``, or ``default`` if it is not set."""
        return self._values.get(key, default)

    def as_dict(self) -> dict[str, Any]:
        """A copy of all values, with ``name``."""
        return {"name": self.name, **self._values}

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def __repr__(self) -> str:
        return f"Metadata({self.as_dict()})"

    # Pickle the plain state: __getattr__ must not be consulted before _values exists.
    def __getstate__(self) -> dict[str, Any]:
        return {"name": self.name, "_values": self._values}

    def __setstate__(self, state: dict[str, Any]) -> None:
        object.__setattr__(self, "name", state["name"])
        object.__setattr__(self, "_values", dict(state["_values"]))


class _MetadataCatalog:
    """Maps dataset names to :class:`Metadata`; ``get`` creates an empty one on first use."""

    def __init__(self) -> None:
        self._metadata: dict[str, Metadata] = {}

    def get(self, name: str) -> Metadata:
        """The metadata of ``name``, created empty if absent (so it can be ``set`` at once)."""
        if name not in self._metadata:
            self._metadata[name] = Metadata(name)
        return self._metadata[name]

    def list(self) -> list[str]:
        """Names with metadata, sorted."""
        return sorted(self._metadata)

    def remove(self, name: str) -> None:
        """Forget the metadata of ``name`` (KeyError if there is none)."""
        if name not in self._metadata:
            raise DatasetNotFoundError(_unknown_name_message("metadata", name, self.list()))
        del self._metadata[name]

    def __contains__(self, name: object) -> bool:
        return name in self._metadata


DatasetCatalog = _DatasetCatalog()
MetadataCatalog = _MetadataCatalog()
