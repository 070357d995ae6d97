"""tools/visualize_data.py on the tiny shapes dataset: one picture per image, boxes drawn in
their class colour where the annotation puts them, and the mapper's size for the dataloader
source."""

from __future__ import annotations

import importlib.util
import os

import cv2
import numpy as np

from detkit.data import DatasetCatalog
from detkit.data.transforms import resize_shortest_edge_shape
from detkit.utils.visualizer import class_color

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = "configs/quickstart/shapes.yaml"


def _tool():
    path = os.path.join(ROOT, "tools", "visualize_data.py")
    spec = importlib.util.spec_from_file_location("visualize_data_tool", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _edge_fraction(picture: np.ndarray, box, color) -> float:
    """Largest share of pixels of ``color`` along the box's bottom, left or right edge, each
    taken one pixel either side (rounding may move a scaled edge by a pixel). A label, drawn
    over the box's own edge when there is no room outside, hides part of one edge only."""
    height, width = picture.shape[:2]
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    x1, x2 = min(max(x1, 0), width - 1), min(max(x2, 0), width - 1)
    y1, y2 = min(max(y1, 0), height - 1), min(max(y2, 0), height - 1)
    is_color = (picture == np.array(color)).all(axis=-1)
    shares = []
    for d in (-1, 0, 1):
        if 0 <= y2 + d < height:
            shares.append(is_color[y2 + d, x1 : x2 + 1].mean())
        for x in (x1 + d, x2 + d):
            if 0 <= x < width:
                shares.append(is_color[y1 : y2 + 1, x].mean())
    return max(shares)


def test_annotation_source_draws_each_box_where_it_is(tiny_shapes, tmp_path):
    train, _ = tiny_shapes
    out = tmp_path / "annotation"
    argv = ["--config-file", CONFIG, "--dataset", train, "--output", str(out), "--max-images", "3"]
    assert _tool().main(argv) == 0
    pictures = sorted(out.glob("*.png"))
    assert len(pictures) == 3
    for dataset_dict in DatasetCatalog.get(train)[:3]:
        stem = os.path.splitext(os.path.basename(dataset_dict["file_name"]))[0]
        picture = cv2.imread(str(out / f"{stem}.png"))
        assert picture.shape[:2] == (dataset_dict["height"], dataset_dict["width"])
        for annotation in dataset_dict["annotations"]:
            color = class_color(annotation["category_id"])
            assert _edge_fraction(picture, annotation["bbox"], color) > 0.5


def test_dataloader_source_draws_the_mapper_output_at_its_size(tiny_shapes, tmp_path):
    train, _ = tiny_shapes
    out = tmp_path / "dataloader"
    argv = [
        "--config-file", CONFIG, "--source", "dataloader", "INPUT.MIN_SIZE_TRAIN", "[128]",
        f"DATASETS.TRAIN=['{train}']", "INPUT.RANDOM_FLIP=none", "--output", str(out),
        "--max-images", "2",
    ]  # fmt: skip
    assert _tool().main(argv) == 0
    assert len(list(out.glob("*.png"))) == 2
    for dataset_dict in DatasetCatalog.get(train)[:2]:
        stem = os.path.splitext(os.path.basename(dataset_dict["file_name"]))[0]
        picture = cv2.imread(str(out / f"{stem}.png"))
        height, width = dataset_dict["height"], dataset_dict["width"]
        new_h, new_w = resize_shortest_edge_shape(height, width, 128, 512)
        assert picture.shape[:2] == (new_h, new_w) != (height, width)
        for annotation in dataset_dict["annotations"]:
            if annotation.get("difficult"):
                continue  # training drops them
            x1, y1, x2, y2 = annotation["bbox"]
            sx, sy = new_w / width, new_h / height
            color = class_color(annotation["category_id"])
            box = (x1 * sx, y1 * sy, x2 * sx, y2 * sy)
            assert _edge_fraction(picture, box, color) > 0.5
