"""Fixtures for the data tests: throwaway dataset names and tiny VOC trees on disk."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable

import cv2
import numpy as np
import pytest

from detkit.data import DatasetCatalog, MetadataCatalog


@pytest.fixture
def dataset_name() -> Callable[[], str]:
    """``make() -> name``: a fresh dataset name, unregistered from both catalogs afterwards."""
    names: list[str] = []

    def make() -> str:
        names.append(f"test_{uuid.uuid4().hex[:8]}")
        return names[-1]

    yield make
    for name in names:
        if name in DatasetCatalog:
            DatasetCatalog.remove(name)
        if name in MetadataCatalog:
            MetadataCatalog.remove(name)


@pytest.fixture
def write_voc() -> Callable[..., str]:
    """``write_voc(root, split, images) -> root``: a tiny VOC tree on disk."""
    return _write_voc


def _write_voc(root: str, split: str, images: dict[str, tuple[int, int, list[tuple]]]) -> str:
    """A VOC tree: ``images[id] = (height, width, [(name, xmin, ymin, xmax, ymax, difficult)])``
    (coordinates written verbatim). JPEGs are plain grey. Returns ``root``."""
    for sub in ("Annotations", "JPEGImages", os.path.join("ImageSets", "Main")):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    for image_id, (height, width, objects) in images.items():
        cv2.imwrite(
            os.path.join(root, "JPEGImages", f"{image_id}.jpg"),
            np.full((height, width, 3), 128, np.uint8),
        )
        objs = "".join(
            f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox>"
            f"<xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax>"
            "</bndbox></object>"
            for name, x1, y1, x2, y2, difficult in objects
        )
        with open(os.path.join(root, "Annotations", f"{image_id}.xml"), "w") as f:
            f.write(
                f"<annotation><size><width>{width}</width><height>{height}</height>"
                f"<depth>3</depth></size>{objs}</annotation>"
            )
    with open(os.path.join(root, "ImageSets", "Main", f"{split}.txt"), "w") as f:
        f.write("".join(f"{i}\n" for i in images))
    return root
