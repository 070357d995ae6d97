"""COCO instances JSON (via pycocotools) into dataset dicts.

COCO boxes are ``[x, y, width, height]`` in 0-based continuous pixels; detkit stores
``[x1, y1, x2, y2]``. Category ids (1..90 with gaps in COCO) become contiguous 0-based ids in
sorted id order; the mapping is kept in the metadata for the COCO evaluator. Boxes are
clipped to the image; boxes that are then empty, malformed, or lie farther outside the image
than the image's own size (e.g. a width of 1e30, which clipping would turn into a whole-image
box) are dropped and counted in a warning.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import math
import os

from detkit.data.catalog import DatasetCatalog, MetadataCatalog

__all__ = [
    "COCO_CATEGORIES", "COCO_DOWNLOAD_HINT", "load_coco_json", "register_coco_instances",
]

logger = logging.getLogger(__name__)

COCO_DOWNLOAD_HINT = (
    "Get COCO 2017 from https://cocodataset.org/#download :\n"
    "  http://images.cocodataset.org/zips/train2017.zip\n"
    "  http://images.cocodataset.org/zips/val2017.zip\n"
    "  http://images.cocodataset.org/annotations/annotations_trainval2017.zip\n"
    "Unzip them into $DETKIT_DATASETS/coco/ (DETKIT_DATASETS defaults to ./datasets) so that "
    "coco/train2017/, coco/val2017/ and coco/annotations/instances_{train,val}2017.json exist."
)

# Names of COCO 2017 dataset ids 1..90; "_" marks the 10 unused ids, "_" inside a name a space.
_COCO_NAMES_BY_ID = (
    "person bicycle car motorcycle airplane bus train truck boat traffic_light fire_hydrant _ "
    "stop_sign parking_meter bench bird cat dog horse sheep cow elephant bear zebra giraffe _ "
    "backpack umbrella _ _ handbag tie suitcase frisbee skis snowboard sports_ball kite "
    "baseball_bat baseball_glove skateboard surfboard tennis_racket bottle _ wine_glass cup "
    "fork knife spoon bowl banana apple sandwich orange broccoli carrot hot_dog pizza donut "
    "cake chair couch potted_plant bed _ dining_table _ _ toilet _ tv laptop mouse remote "
    "keyboard cell_phone microwave oven toaster sink refrigerator _ book clock vase scissors "
    "teddy_bear hair_drier toothbrush"
).split()
# (dataset id, name) of the 80 detection categories, in id order.
COCO_CATEGORIES = tuple(
    (i, name.replace("_", " ")) for i, name in enumerate(_COCO_NAMES_BY_ID, start=1) if name != "_"
)


def _xywh_to_xyxy(bbox: object, height: int, width: int) -> tuple[list[float] | None, str]:
    """``(box clipped to the image, "")``, or ``(None, why)`` with why "malformed" (not 4
    finite numbers), "outside" (farther outside the image than its size) or "empty"."""
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not all(
        isinstance(v, (int, float)) and math.isfinite(v) for v in bbox
    ):
        return None, "malformed"
    x, y, w, h = (float(v) for v in bbox)
    if x < -width or y < -height or x + w > 2 * width or y + h > 2 * height:
        return None, "outside"
    x1, y1 = min(max(x, 0.0), width), min(max(y, 0.0), height)
    x2, y2 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
    return ([x1, y1, x2, y2], "") if (x2 > x1 and y2 > y1) else (None, "empty")


def _read_json(json_file: str) -> dict:
    """The parsed file; a ValueError naming the file and the position of a syntax error."""
    try:
        with open(json_file, encoding="utf-8") as f:
            content = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(
            f"{json_file} is not valid JSON: {e.msg} (line {e.lineno}, column {e.colno}, "
            f"character {e.pos:,}). Fix the file, or download it again if it is cut short."
        ) from e
    except UnicodeDecodeError as e:
        raise ValueError(
            f"{json_file} is not UTF-8 text (byte {e.start:,}): is it the COCO annotation "
            "file? Download it again."
        ) from e
    if not isinstance(content, dict) or not isinstance(content.get("images"), list):
        raise ValueError(
            f"{json_file} is JSON but not a COCO instances file: it needs an object with an "
            "'images' list (and 'annotations', 'categories')."
        )
    return content


def load_coco_json(json_file: str, image_root: str, dataset_name: str | None = None) -> list[dict]:
    """Read a COCO instances JSON into dataset dicts.

    Args:
        json_file: path to e.g. ``instances_val2017.json``.
        image_root: directory the JSON's ``file_name`` entries are relative to.
        dataset_name: if given, its metadata receives ``thing_classes`` and
            ``thing_dataset_id_to_contiguous_id``.

    Returns:
        One dict per image (sorted by image id): ``file_name``, ``height``, ``width``,
        ``image_id`` (int), ``annotations``: ``[{"bbox": [x1, y1, x2, y2], "category_id"
        (contiguous, 0-based), "iscrowd": 0 | 1}]``.
    """
    if not os.path.isfile(json_file):
        raise FileNotFoundError(
            f"COCO annotation file not found: expected {os.path.abspath(json_file)}.\n"
            f"{COCO_DOWNLOAD_HINT}"
        )
    from pycocotools.coco import COCO

    content = _read_json(json_file)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco = COCO()
        coco.dataset = content
        coco.createIndex()
    category_ids = sorted(coco.getCatIds())
    thing_classes = [c["name"] for c in coco.loadCats(category_ids)]
    id_map = {cat_id: i for i, cat_id in enumerate(category_ids)}
    if dataset_name is not None:
        meta = MetadataCatalog.get(dataset_name)
        if meta.get("thing_classes", thing_classes) != thing_classes:
            raise ValueError(
                f"{json_file} has categories {thing_classes}, but the metadata of dataset "
                f"'{dataset_name}' says {meta.thing_classes}. Register it with the right "
                "metadata (or none)."
            )
        meta.set(thing_classes=thing_classes, thing_dataset_id_to_contiguous_id=id_map)

    dicts, dropped = [], {"malformed": [], "outside": [], "empty": []}
    for image_id in sorted(coco.imgs):
        image = coco.imgs[image_id]
        height, width = int(image["height"]), int(image["width"])
        annotations = []
        for ann in coco.imgToAnns.get(image_id, []):
            if ann["category_id"] not in id_map:
                raise ValueError(
                    f"{json_file}: annotation {ann.get('id')} of image {image_id} has "
                    f"category_id {ann['category_id']}, which is not among the file's "
                    f"categories {category_ids}."
                )
            box, why = _xywh_to_xyxy(ann.get("bbox"), height, width)
            if box is None:
                dropped[why].append(ann.get("id"))
                logger.debug("%s: annotation %s of image %s has a box %s (%s); dropped.",
                             json_file, ann.get("id"), image_id, ann.get("bbox"), why)
                continue
            annotations.append({
                "bbox": box, "category_id": id_map[ann["category_id"]],
                "iscrowd": int(ann.get("iscrowd", 0)),
            })
        dicts.append({
            "file_name": os.path.join(image_root, image["file_name"]), "height": height,
            "width": width, "image_id": image_id, "annotations": annotations,
        })
    if dropped["outside"]:
        logger.warning(
            "%s: dropped %d annotations whose box lies farther outside its image than the "
            "image's size (not clipped to a whole-image box), e.g. annotation ids %s. Fix them.",
            json_file, len(dropped["outside"]), dropped["outside"][:5],
        )
    num_other = len(dropped["malformed"]) + len(dropped["empty"])
    if num_other:
        logger.warning("%s: dropped %d annotations with empty or malformed boxes.",
                       json_file, num_other)
    return dicts


def register_coco_instances(
    name: str, json_file: str, image_root: str, metadata: dict | None = None
) -> None:
    """Register a COCO instances JSON under ``name`` (read lazily, on first ``get``).

    Args:
        name: the dataset name, e.g. "coco_2017_val".
        json_file: instances JSON.
        image_root: directory of the images.
        metadata: extra metadata (e.g. known ``thing_classes``), checked against the JSON.
    """
    DatasetCatalog.register(name, functools.partial(load_coco_json, json_file, image_root, name))
    MetadataCatalog.get(name).set(
        json_file=json_file, image_root=image_root, evaluator_type="coco", **(metadata or {})
    )
