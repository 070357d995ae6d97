"""PASCAL VOC: read ``Annotations/*.xml`` of one ``ImageSets/Main/<split>.txt`` into dataset dicts.

VOC boxes are 1-based, inclusive pixel indices (``xmin = 1`` is the first column). detkit's
dicts use 0-based continuous coordinates, so a box covers ``[xmin - 1, xmax]`` (its width is
``xmax - xmin + 1``). Coordinates are parsed as floats and never stored unsigned: the released
code's ``uint16`` boxes turn an ``xmin`` of 0 into 65535 (PAPER.md, Input), a classic source
of NaN losses. Boxes are clipped to the image; a box that is then empty, or one that is not
finite or lies farther outside the image than the image's own size (e.g. ``xmax = 1e30``,
which clipping would turn into a whole-image box), is dropped with a warning that names the
file and the object.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence

from detkit.data.catalog import DatasetCatalog, MetadataCatalog
from detkit.data.image_file import load_image_file

__all__ = ["VOC_CLASSES", "VOC_DOWNLOAD_HINT", "load_voc_instances", "register_pascal_voc"]

logger = logging.getLogger(__name__)

# The 20 classes in the devkit's order (category_id = index).
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)

VOC_DOWNLOAD_HINT = (
    "Get PASCAL VOC from http://host.robots.ox.ac.uk/pascal/VOC/ :\n"
    "  2007 trainval: http://host.robots.ox.ac.uk/pascal/VOC/voc2007/VOCtrainval_06-Nov-2007.tar\n"
    "  2007 test:     http://host.robots.ox.ac.uk/pascal/VOC/voc2007/VOCtest_06-Nov-2007.tar\n"
    "  2012 trainval: http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar\n"
    "Extract them (each creates VOCdevkit/VOC<year>/) and move or symlink VOCdevkit/VOC<year> "
    "to $DETKIT_DATASETS/VOC<year> (DETKIT_DATASETS defaults to ./datasets). Without a "
    "download, the built-in 'shapes_train' / 'shapes_test' datasets work anywhere."
)


def _text(node: ET.Element, tag: str, xml_file: str) -> str:
    child = node.find(tag)
    if child is None or child.text is None:
        raise ValueError(f"{xml_file}: missing <{tag}> inside <{node.tag}>.")
    return child.text.strip()


def _image_size(root: ET.Element, xml_file: str, image_file: str) -> tuple[int, int]:
    """(height, width) from ``<size>``; read from the image if the XML lacks it (rare)."""
    size = root.find("size")
    if size is not None:
        try:
            height = int(float(_text(size, "height", xml_file)))
            width = int(float(_text(size, "width", xml_file)))
        except ValueError:
            height = width = 0
        if height > 0 and width > 0:
            return height, width
    try:
        image = load_image_file(image_file)
    except (OSError, ValueError) as e:
        raise ValueError(f"{xml_file}: no valid <size>, and its image cannot be read: {e}") from e
    logger.warning("%s: no valid <size>; took %dx%d from the image.", xml_file, *image.shape[:2])
    return int(image.shape[0]), int(image.shape[1])


def _parse_object(
    obj: ET.Element, index: int, xml_file: str, height: int, width: int, class_to_id: dict
) -> dict | None:
    """One ``<object>`` -> annotation dict, or None (with a warning) if its box is broken."""
    name = _text(obj, "name", xml_file)
    if name not in class_to_id:
        raise ValueError(
            f"{xml_file}: object {index} has class '{name}', which is not in this dataset's "
            f"class names ({', '.join(class_to_id)}). Pass the right class_names to "
            "register_pascal_voc, or fix the annotation."
        )
    difficult_node = obj.find("difficult")
    difficult = (
        difficult_node is not None
        and difficult_node.text is not None
        and int(float(difficult_node.text)) == 1
    )
    bndbox = obj.find("bndbox")
    where = f"{xml_file}: object {index} ('{name}')"
    if bndbox is None:
        logger.warning("%s has no <bndbox>; dropped.", where)
        return None
    try:
        xmin, ymin, xmax, ymax = (
            float(_text(bndbox, tag, xml_file)) for tag in ("xmin", "ymin", "xmax", "ymax")
        )
    except ValueError as e:
        logger.warning("%s has an unreadable box (%s); dropped.", where, e)
        return None
    # 1-based inclusive indices -> 0-based continuous: [xmin - 1, xmax]. Floats, so xmin = 0
    # gives -1 (then clipped to 0) rather than wrapping around.
    box = [xmin - 1.0, ymin - 1.0, xmax, ymax]
    if not all(math.isfinite(v) for v in box):
        logger.warning("%s has a non-finite box %s; dropped.", where, box)
        return None
    if box[0] < -width or box[2] > 2 * width or box[1] < -height or box[3] > 2 * height:
        logger.warning(
            "%s has a box farther outside the %dx%d image than its size (xmin=%g, ymin=%g, "
            "xmax=%g, ymax=%g); dropped, not clipped to the image. Fix the annotation.",
            where, width, height, xmin, ymin, xmax, ymax,
        )
        return None
    x1, y1, x2, y2 = (
        min(max(box[0], 0.0), width), min(max(box[1], 0.0), height),
        min(max(box[2], 0.0), width), min(max(box[3], 0.0), height),
    )
    if not (x2 > x1 and y2 > y1):
        logger.warning(
            "%s has an empty box after clipping to the %dx%d image (xmin=%g, ymin=%g, xmax=%g, "
            "ymax=%g); dropped.", where, width, height, xmin, ymin, xmax, ymax,
        )
        return None
    return {"bbox": [x1, y1, x2, y2], "category_id": class_to_id[name], "difficult": difficult}


def load_voc_instances(dirname: str, split: str, class_names: Sequence[str]) -> list[dict]:
    """Read one VOC split into dataset dicts.

    Args:
        dirname: the dataset root holding ``Annotations/``, ``ImageSets/Main/`` and
            ``JPEGImages/`` (e.g. ``datasets/VOC2007``).
        split: the image-set name, e.g. "trainval" or "test".
        class_names: category names; ``category_id`` is the index in this list.

    Returns:
        One dict per image: ``file_name``, ``height``, ``width``, ``image_id`` (file stem),
        ``annotations``: ``[{"bbox": [x1, y1, x2, y2], "category_id", "difficult"}]``.
    """
    split_file = os.path.join(dirname, "ImageSets", "Main", f"{split}.txt")
    if not os.path.isdir(dirname):
        raise FileNotFoundError(
            f"PASCAL VOC-style dataset not found: expected the directory {os.path.abspath(dirname)}"
            f" (with Annotations/, ImageSets/Main/{split}.txt, JPEGImages/).\n{VOC_DOWNLOAD_HINT}"
        )
    if not os.path.isfile(split_file):
        raise FileNotFoundError(
            f"Split file {os.path.abspath(split_file)} not found: {dirname} exists but has no "
            f"'{split}' image set. Check the split name, or that the download is complete.\n"
            f"{VOC_DOWNLOAD_HINT}"
        )
    with open(split_file, encoding="utf-8") as f:
        image_ids = [line.split()[0] for line in f if line.strip()]
    class_to_id = {name: i for i, name in enumerate(class_names)}

    dicts = []
    for image_id in image_ids:
        xml_file = os.path.join(dirname, "Annotations", f"{image_id}.xml")
        image_file = os.path.abspath(os.path.join(dirname, "JPEGImages", f"{image_id}.jpg"))
        try:
            root = ET.parse(xml_file).getroot()
        except FileNotFoundError as e:
            raise FileNotFoundError(
                f"{split_file} lists image '{image_id}', but its annotation {xml_file} is missing."
            ) from e
        except ET.ParseError as e:
            raise ValueError(
                f"{xml_file} is not valid XML ({e}). Fix or re-create this annotation of image "
                f"'{image_id}', or remove '{image_id}' from {split_file}."
            ) from e
        height, width = _image_size(root, xml_file, image_file)
        annotations = [
            ann
            for index, obj in enumerate(root.findall("object"))
            if (ann := _parse_object(obj, index, xml_file, height, width, class_to_id))
        ]
        dicts.append({
            "file_name": image_file, "height": height, "width": width, "image_id": image_id,
            "annotations": annotations,
        })
    return dicts


def _prepare_then_load(
    prepare: Callable[[], None] | None, dirname: str, split: str, class_names: tuple[str, ...]
) -> list[dict]:
    if prepare is not None:
        prepare()
    return load_voc_instances(dirname, split, class_names)


def register_pascal_voc(
    name: str,
    dirname: str,
    split: str,
    year: int,
    class_names: Sequence[str] = VOC_CLASSES,
    *,
    prepare: Callable[[], None] | None = None,
) -> None:
    """Register a VOC-layout dataset under ``name`` (read lazily, on first ``get``).

    Args:
        name: the dataset name, e.g. "voc_2007_trainval".
        dirname: root with ``Annotations/``, ``ImageSets/Main/``, ``JPEGImages/``.
        split: image set, e.g. "trainval".
        year: 2007 selects the 11-point AP in the VOC evaluator (area AP otherwise).
        class_names: category names in ``category_id`` order (default: the 20 VOC classes).
        prepare: called before each read, e.g. to generate a synthetic dataset on first use.
    """
    class_names = tuple(class_names)
    DatasetCatalog.register(
        name, functools.partial(_prepare_then_load, prepare, dirname, split, class_names)
    )
    MetadataCatalog.get(name).set(
        thing_classes=list(class_names), dirname=dirname, split=split, year=year,
        evaluator_type="voc",
    )
