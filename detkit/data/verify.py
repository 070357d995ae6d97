"""Checking every image of a dataset before training, so that a bad file stops the run at
its start (or is left out) instead of hours in, when the sampler first reaches it.

Each image is read as the mapper reads it (:func:`detkit.data.read_image`: present, not
empty, not truncated, decodable, a supported pixel type) and its decoded size compared with
the dict's ``height`` / ``width``. Each object's box must be finite, of non-negative size and
not farther outside the image than the image's own size; its ``category_id`` must be one of
the dataset's classes when they are known. ``DATASETS.VERIFY`` says what a run does about
problems: "stop" (the default) before the first iteration with the full report, "skip" the
bad images, or "off".

Decoding is the slow part (measured: 0.5 ms per 256 x 320 shapes JPEG on one core), so
images are decoded on a thread pool (OpenCV releases the GIL while it decodes) and what each
file gave is cached, keyed by (path, size, mtime_ns), in ``$DETKIT_CACHE/verify`` (default
``~/.cache/detkit/verify``; :mod:`detkit.data.verify_cache`): a second run decodes nothing,
and a replaced or edited file is checked again. What the check found is a
:class:`~detkit.data.verify_report.VerificationReport` (:mod:`detkit.data.verify_report`).
"""

from __future__ import annotations

import logging
import math
import numbers
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from detkit.data.catalog import DatasetCatalog, MetadataCatalog
from detkit.data.image_file import ImageFileError
from detkit.data.mapper import read_image
from detkit.data.verify_cache import ImageFacts, ResultCache, default_cache_dir
from detkit.data.verify_report import (
    DatasetVerificationError,
    VerificationProblem,
    VerificationReport,
)
from detkit.utils import comm
from detkit.utils.progress import track

__all__ = [
    "VERIFY_MODES",
    "DatasetVerificationError",
    "VerificationProblem",
    "VerificationReport",
    "check_verify_mode",
    "dataset_num_classes",
    "default_cache_dir",
    "verify_dataset_dicts",
    "verify_datasets",
    "verify_registered_datasets",
]

logger = logging.getLogger(__name__)

VERIFY_MODES = ("stop", "skip", "off")


def check_verify_mode(mode: str) -> str:
    """``mode`` if it is one of :data:`VERIFY_MODES`, else a ValueError naming the key."""
    if mode not in VERIFY_MODES:
        raise ValueError(f"DATASETS.VERIFY must be one of {VERIFY_MODES}; got {mode!r}.")
    return mode


def _decode(path: str) -> ImageFacts:
    """Read ``path`` as the mapper does; its size, or what is wrong with it."""
    try:
        image = read_image(path, "BGR")
    except FileNotFoundError:
        return ImageFacts(0, 0, "missing", "is missing (no such file)")
    except ImageFileError as e:
        return ImageFacts(0, 0, e.kind, e.reason)
    return ImageFacts(int(image.shape[0]), int(image.shape[1]), None, None)


def _default_num_workers() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(8, cores or 1))


def _image_facts(
    paths: list[str], cache: ResultCache, num_workers: int, progress: bool
) -> tuple[dict[str, ImageFacts], int, int]:
    """Facts of every path (cached ones looked up, the others decoded); how many files were
    decoded, and how many came from the cache."""
    facts: dict[str, ImageFacts] = {}
    to_decode: list[tuple[str, os.stat_result]] = []
    num_cached = 0
    for path in paths:
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            facts[path] = ImageFacts(0, 0, "missing", "is missing (no such file)")
            continue
        except OSError as e:
            facts[path] = ImageFacts(0, 0, "unreadable", f"cannot be read ({e.strerror or e})")
            continue
        cached = cache.get(path, stat.st_size, stat.st_mtime_ns)
        if cached is None:
            to_decode.append((path, stat))
        else:
            facts[path] = cached
            num_cached += 1
    if to_decode:
        workers = min(num_workers if num_workers > 0 else _default_num_workers(), len(to_decode))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="verify") as pool:
            decoded = track(
                pool.map(_decode, [path for path, _ in to_decode]),
                len(to_decode),
                "Checking images",
                "image",
                logger,
                enabled=progress,
            )
            for (path, stat), result in zip(to_decode, decoded):
                facts[path] = result
                # A missing file is not cached: it may appear before the next run.
                if result.kind != "missing":
                    cache.put(path, stat.st_size, stat.st_mtime_ns, result)
        cache.save()
    return facts, len(to_decode), num_cached


def _box_problem(bbox: Any, height: int | None, width: int | None) -> str | None:
    """What is wrong with one XYXY box of an image of the given size, or None."""
    try:
        x1, y1, x2, y2 = (float(v) for v in bbox)
    except (TypeError, ValueError):
        return f"is not 4 numbers: {bbox!r}"
    values = (x1, y1, x2, y2)
    if not all(math.isfinite(v) for v in values):
        return f"is not finite: {list(values)}"
    if x2 < x1 or y2 < y1:
        return f"has a negative width or height: {list(values)} (XYXY)"
    # Loaders clip boxes to the image; one farther out than the image's own size is garbage
    # (e.g. 1e30), not an object at the border, and clipping it would make a whole-image box.
    if height and width and (x1 < -width or y1 < -height or x2 > 2 * width or y2 > 2 * height):
        return (
            f"lies more than the image size outside the image (width {width}, height "
            f"{height}): {list(values)}"
        )
    return None


def _dict_problems(
    record: dict, facts: ImageFacts | None, num_classes: int | None
) -> list[tuple[str, str]]:
    """(kind, reason) of every problem of one dataset dict, its image's facts given."""
    if facts is None:
        return [("no_file_name", "has no 'file_name'")]
    if facts.kind is not None:
        return [(facts.kind, facts.reason)]
    found = []
    # As in the mapper: a dict without a size takes the image's.
    expected = (record.get("height", facts.height), record.get("width", facts.width))
    if expected != (facts.height, facts.width):
        found.append(
            (
                "size_mismatch",
                f"is {facts.height}x{facts.width} pixels (height x width), but its annotation "
                f"says {expected[0]}x{expected[1]}",
            )
        )
    for k, ann in enumerate(record.get("annotations", [])):
        # The decoded size bounds the box: the annotation's may be the thing that is wrong.
        problem = _box_problem(ann.get("bbox"), facts.height, facts.width)
        if problem:
            found.append(("bad_box", f"has object {k} whose box {problem}"))
        category = ann.get("category_id")
        if num_classes is not None and not (
            isinstance(category, numbers.Integral)
            and not isinstance(category, bool)
            and 0 <= category < num_classes
        ):
            found.append(
                (
                    "bad_category",
                    f"has object {k} with category_id {category!r}; the dataset has "
                    f"{num_classes} classes (ids 0..{num_classes - 1})",
                )
            )
    return found


def verify_dataset_dicts(
    dataset_dicts: Sequence[dict],
    *,
    dataset_name: str = "",
    num_classes: int | None = None,
    num_workers: int = 0,
    cache_dir: str | None = None,
    use_cache: bool = True,
    progress: bool = False,
) -> VerificationReport:
    """Check every image and annotation of ``dataset_dicts`` (see the module docstring).

    Args:
        dataset_dicts: dicts as a registered dataset returns them (``file_name``, ``height``,
            ``width``, ``image_id``, ``annotations`` with XYXY ``bbox`` and ``category_id``).
        dataset_name: named in the report.
        num_classes: category ids must lie in ``[0, num_classes)``; None: not checked.
        num_workers: decoding threads; 0: one per available core, at most 8.
        cache_dir: where results are cached; None: :func:`default_cache_dir`.
        use_cache: False: decode every file, and keep nothing.
        progress: show a progress bar (stderr) while decoding.

    Returns:
        A :class:`VerificationReport` with one problem per bad file or annotation.
    """
    start = time.perf_counter()
    cache = ResultCache((cache_dir or default_cache_dir()) if use_cache else None)
    paths = sorted({d["file_name"] for d in dataset_dicts if d.get("file_name")})
    facts, num_decoded, num_cached = _image_facts(paths, cache, num_workers, progress)
    report = VerificationReport(
        datasets=[dataset_name] if dataset_name else [],
        num_images=len(dataset_dicts),
        num_decoded=num_decoded,
        num_cached=num_cached,
    )
    for index, record in enumerate(dataset_dicts):
        file_name = record.get("file_name") or ""
        for kind, reason in _dict_problems(record, facts.get(file_name), num_classes):
            report.problems.append(
                VerificationProblem(
                    dataset_name, index, file_name, record.get("image_id"), kind, reason
                )
            )
    report.seconds = time.perf_counter() - start
    return report


def verify_registered_datasets(
    names: Sequence[str],
    *,
    num_workers: int = 0,
    cache_dir: str | None = None,
    use_cache: bool = True,
    progress: bool = False,
) -> VerificationReport:
    """:func:`verify_dataset_dicts` of each registered dataset in ``names``, in one report;
    category ids are checked against the metadata's ``thing_classes`` when it has them."""
    report = VerificationReport()
    for name in names:
        dicts = DatasetCatalog.get(name)  # first: a loader may set the metadata's classes
        report.extend(
            verify_dataset_dicts(
                dicts,
                dataset_name=name,
                num_classes=dataset_num_classes(name),
                num_workers=num_workers,
                cache_dir=cache_dir,
                use_cache=use_cache,
                progress=progress,
            )
        )
    return report


def dataset_num_classes(dataset_name: str) -> int | None:
    """Length of the registered dataset's ``thing_classes``; None if it has none (yet)."""
    if dataset_name not in MetadataCatalog:
        return None
    classes = MetadataCatalog.get(dataset_name).get("thing_classes")
    return len(classes) if classes is not None else None


def verify_datasets(cfg: Any, dataset_names: Sequence[str] | None = None) -> VerificationReport:
    """Check the datasets of a run up front, as ``DATASETS.VERIFY`` says.

    Call it before training starts: it checks ``DATASETS.TRAIN`` and ``DATASETS.TEST`` (or
    ``dataset_names``) now, instead of when their loaders are built (the test loader only at
    the first evaluation). The loaders check again, from the cache, and in "skip" mode leave
    the bad images out. With several processes, rank 0 decodes and the others then read the
    cache.

    Returns:
        The report (empty with "off").

    Raises:
        DatasetVerificationError: with "stop" and any problem; the message lists them all.
    """
    mode = check_verify_mode(cfg.DATASETS.VERIFY)
    if dataset_names is None:
        dataset_names = list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)
    names = list(dict.fromkeys(dataset_names))  # unique, in order
    if mode == "off" or not names:
        return VerificationReport()
    distributed = comm.get_world_size() > 1
    if distributed and not comm.is_main_process():
        comm.synchronize()  # wait for rank 0 to fill the cache
    try:
        report = verify_registered_datasets(names)
    finally:
        if distributed and comm.is_main_process():
            comm.synchronize()
    if report.ok:
        logger.info(report.summary())
    elif mode == "stop":
        raise DatasetVerificationError(report)
    else:
        logger.warning(
            "%s\nDATASETS.VERIFY 'skip': these %d image(s) are left out of the loaders.",
            report.format(),
            report.num_bad_images,
        )
    return report
