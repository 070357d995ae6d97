"""Proposals as data: one ``.npz`` file per dataset, read into the dataset dicts by image id.

The paper's alternating training (3.2) and its "Selective Search vs RPN" rows train and test
Fast R-CNN on proposals computed beforehand. A proposals file holds, for every image of a
dataset, its boxes in the original image's pixels and an objectness score. It is a plain NumPy
``.npz`` archive of numeric and string arrays, read with ``allow_pickle=False``: loading a
file never runs code from it.

Arrays of a file (format version 1):

* ``image_ids``: ``[N]`` int64 or unicode, the dataset's ``image_id`` of each image;
* ``counts``: ``[N]`` int64, the number of proposals of each image;
* ``boxes``: ``[sum(counts), 4]`` float32, XYXY in continuous original-image pixels (a box
  covering pixel columns 0..9 has ``x1 = 0, x2 = 10``, as dataset annotations), each
  image's proposals contiguous and in decreasing objectness;
* ``objectness_logits``: ``[sum(counts)]`` float32 (for a method without scores, any
  decreasing sequence that keeps its ranking);
* ``format_version`` (1) and ``source``: a short text saying what made the file.
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Sequence
from typing import Any

import numpy as np

from detkit.utils.io import atomic_write

__all__ = [
    "PROPOSAL_FILE_VERSION",
    "ProposalFile",
    "attach_precomputed_proposals",
    "load_proposals",
    "save_proposals",
]

logger = logging.getLogger(__name__)

PROPOSAL_FILE_VERSION = 1
_REQUIRED = ("image_ids", "counts", "boxes", "objectness_logits", "format_version")


class ProposalFile:
    """The contents of a proposals file, looked up by image id.

    Args:
        image_ids: ``[N]`` ids (int or str).
        counts: ``[N]`` proposals per image.
        boxes: ``[sum(counts), 4]`` XYXY, continuous original-image pixels.
        objectness_logits: ``[sum(counts)]``.
        source: what made the proposals (shown in messages).
        path: the file they came from ("" when built in memory).
    """

    def __init__(
        self,
        image_ids: np.ndarray,
        counts: np.ndarray,
        boxes: np.ndarray,
        objectness_logits: np.ndarray,
        source: str = "",
        path: str = "",
    ):
        self.path = path
        where = f"Proposals file {path}" if path else "Proposals"
        counts = np.asarray(counts, dtype=np.int64).reshape(-1)
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        objectness_logits = np.asarray(objectness_logits, dtype=np.float32).reshape(-1)
        if len(image_ids) != len(counts):
            raise ValueError(
                f"{where} has {len(image_ids)} image ids but {len(counts)} counts; the file is "
                "damaged: write it again."
            )
        if (counts < 0).any() or counts.sum() != len(boxes) or len(boxes) != len(objectness_logits):
            raise ValueError(
                f"{where} is inconsistent: counts sum to {int(counts.sum())}, with "
                f"{len(boxes)} boxes and {len(objectness_logits)} scores; write it again."
            )
        if not np.isfinite(boxes).all():
            raise ValueError(f"{where} has non-finite box coordinates; write it again.")
        self.image_ids = list(np.asarray(image_ids).tolist())
        self.counts = counts
        self.boxes = boxes
        self.objectness_logits = objectness_logits
        self.source = source
        ends = np.cumsum(counts)
        self._slices: dict[str, tuple[int, int]] = {}
        for image_id, end, count in zip(self.image_ids, ends, counts):
            key = str(image_id)
            if key in self._slices:
                raise ValueError(f"{where} lists image_id {image_id!r} twice.")
            self._slices[key] = (int(end - count), int(end))

    def __len__(self) -> int:
        return len(self.image_ids)

    def __contains__(self, image_id: Any) -> bool:
        return str(image_id) in self._slices

    def get(self, image_id: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(boxes [P, 4], objectness_logits [P])`` of one image (views, not copies).

        Raises:
            KeyError: naming the file and the image id when the image is not in the file.
        """
        span = self._slices.get(str(image_id))
        if span is None:
            raise KeyError(
                f"image_id {image_id!r} is not in the proposals file "
                f"{self.path or '(in memory)'} ({len(self)} images, source: "
                f"{self.source or 'unknown'}). Was it computed for another dataset? Compute "
                "proposals for every image of this dataset."
            )
        start, end = span
        return self.boxes[start:end], self.objectness_logits[start:end]


def save_proposals(
    path: str,
    image_ids: Sequence[Any],
    boxes: Sequence[np.ndarray],
    objectness_logits: Sequence[np.ndarray],
    *,
    source: str = "",
) -> None:
    """Write a proposals file (see the module docstring for the format).

    Each image's proposals are stored in decreasing objectness. The file is written
    atomically (:func:`detkit.utils.io.atomic_write`): ``path`` is never left half-written.

    Args:
        path: the ``.npz`` file to write (its folder is created).
        image_ids: one id per image; all ints or all strings.
        boxes: per image ``[P_i, 4]`` XYXY, continuous original-image pixels.
        objectness_logits: per image ``[P_i]``.
        source: what made the proposals, e.g. ``"RPN (output/rpn)"``.
    """
    if not (len(image_ids) == len(boxes) == len(objectness_logits)):
        raise ValueError(
            f"save_proposals got {len(image_ids)} image ids, {len(boxes)} box arrays and "
            f"{len(objectness_logits)} score arrays; give one of each per image."
        )
    kinds = {type(i) for i in image_ids}
    if kinds and all(issubclass(k, (int, np.integer)) for k in kinds):
        ids = np.asarray(image_ids, dtype=np.int64)
    else:
        ids = np.asarray([str(i) for i in image_ids], dtype=np.str_)
    ordered_boxes, ordered_scores = [], []
    for b, s in zip(boxes, objectness_logits):
        b = np.asarray(b, dtype=np.float32).reshape(-1, 4)
        s = np.asarray(s, dtype=np.float32).reshape(-1)
        if len(b) != len(s):
            raise ValueError(f"save_proposals: {len(b)} boxes but {len(s)} scores for an image.")
        order = np.argsort(-s, kind="stable")
        ordered_boxes.append(b[order])
        ordered_scores.append(s[order])
    arrays = {
        "image_ids": ids,
        "counts": np.asarray([len(s) for s in ordered_scores], dtype=np.int64),
        "boxes": np.concatenate(ordered_boxes) if ordered_boxes else np.zeros((0, 4), np.float32),
        "objectness_logits": (
            np.concatenate(ordered_scores) if ordered_scores else np.zeros(0, np.float32)
        ),
        "format_version": np.asarray(PROPOSAL_FILE_VERSION, dtype=np.int64),
        "source": np.asarray(source, dtype=np.str_),
    }
    ProposalFile(
        arrays["image_ids"],
        arrays["counts"],
        arrays["boxes"],
        arrays["objectness_logits"],
        source,
        path,
    )  # validates before writing
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path, lambda f: np.savez(f, **arrays))
    logger.info("Wrote %d proposals of %d images to %s", len(arrays["boxes"]), len(ids), path)


def load_proposals(path: str) -> ProposalFile:
    """Read a proposals file written by :func:`save_proposals` (no unpickling).

    Raises:
        FileNotFoundError / ValueError: naming ``path`` and what is wrong with it.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Proposals file not found: {path}. Write it with an RPN's --eval-only run "
            "(inference/<dataset>/proposals.npz) or tools/selective_search.py."
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in _REQUIRED if k not in data.files]
            if missing:
                raise ValueError(
                    f"{path} is not a detkit proposals file: it lacks {missing} (has "
                    f"{sorted(data.files)})."
                )
            version = int(data["format_version"])
            if version != PROPOSAL_FILE_VERSION:
                raise ValueError(
                    f"Proposals file {path} has format version {version}; this detkit reads "
                    f"version {PROPOSAL_FILE_VERSION}. Write the file again."
                )
            source = str(data["source"]) if "source" in data.files else ""
            return ProposalFile(
                data["image_ids"],
                data["counts"],
                data["boxes"],
                data["objectness_logits"],
                source,
                path,
            )
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise ValueError(f"Cannot read the proposals file {path}: {e}. Write it again.") from e
    except ValueError as e:
        if "allow_pickle" in str(e) or "Object arrays" in str(e):
            raise ValueError(
                f"Proposals file {path} holds Python objects, which detkit does not unpickle; "
                "write it with detkit.data.save_proposals."
            ) from e
        raise


def attach_precomputed_proposals(dataset_dicts: list[dict], proposal_file: str) -> list[dict]:
    """New dicts with ``"proposal_boxes"`` (float32 ``[P, 4]``) and
    ``"proposal_objectness_logits"`` (float32 ``[P]``) from ``proposal_file``, by image id.

    The dataset mapper transforms them with the image (resize, flip) into the model input's
    ``"proposals"``.

    Raises:
        KeyError: an image of the dataset is missing from the file (naming both).
    """
    proposals = load_proposals(proposal_file)
    attached = []
    for record in dataset_dicts:
        boxes, logits = proposals.get(record["image_id"])
        attached.append(
            {**record, "proposal_boxes": boxes.copy(), "proposal_objectness_logits": logits.copy()}
        )
    extra = len(proposals) - len(attached)
    logger.info(
        "Attached proposals from %s (%s) to %d images%s.",
        proposal_file,
        proposals.source or "unknown source",
        len(attached),
        f"; {extra} other images of the file unused" if extra > 0 else "",
    )
    return attached
