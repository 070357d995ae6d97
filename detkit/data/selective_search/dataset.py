"""Selective Search over a dataset in worker processes, written as one proposals file,
checkpointed and resumable."""

from __future__ import annotations

import functools
import json
import logging
import math
import multiprocessing
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from detkit.data.mapper import read_image
from detkit.data.proposals import load_proposals, save_proposals
from detkit.data.selective_search.search import (
    DEFAULT_MIN_SIZE,
    check_options,
    require_selective_search,
    selective_search,
)
from detkit.utils.progress import Progress

__all__ = [
    "SelectiveSearchRun",
    "compute_selective_search_proposals",
    "partial_proposals_path",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Options:
    mode: str
    max_proposals: int
    min_size: float
    resize_to: int | None
    seed: int | None

    def describe(self) -> str:
        """The settings as JSON text, stored in a partial file to check a resumed run's."""
        return json.dumps(
            {
                "mode": self.mode,
                "max_proposals": self.max_proposals,
                "min_size": self.min_size,
                "resize_to": self.resize_to,
                "seed": self.seed,
                "opencv": cv2.__version__,
            },
            sort_keys=True,
        )


def _init_worker() -> None:
    # One OpenCV thread per process: the pool supplies the parallelism. Ctrl-C is left to the
    # main process, which saves the partial results and stops the pool.
    cv2.setNumThreads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _propose_one(options: _Options, task: tuple[str, Any]) -> tuple[np.ndarray, float, float]:
    """``(file_name, image_id)`` -> (boxes [P, 4], wall seconds of SS, CPU seconds of SS)."""
    file_name, image_id = task
    image = read_image(file_name, "BGR", image_id)
    start, start_cpu = time.perf_counter(), time.process_time()
    boxes = selective_search(
        image,
        mode=options.mode,
        max_proposals=options.max_proposals,
        min_size=options.min_size,
        resize_to=options.resize_to,
        seed=options.seed,
    )
    return boxes, time.perf_counter() - start, time.process_time() - start_cpu


def _objectness(num_boxes: int) -> np.ndarray:
    # SS has no scores: -i keeps its ranking through save_proposals' sort by decreasing score.
    return -np.arange(num_boxes, dtype=np.float32)


def partial_proposals_path(output_path: str) -> str:
    """Where :func:`compute_selective_search_proposals` checkpoints a run writing
    ``output_path`` (``out/x.npz`` -> ``out/x.partial.npz``)."""
    root, ext = os.path.splitext(output_path)
    return f"{root}.partial{ext or '.npz'}"


_PARTIAL_SOURCE_PREFIX = "selective search, partial: "


def _load_partial(
    path: str, options: _Options, dataset_ids: dict[str, int]
) -> dict[str, np.ndarray]:
    """Boxes by ``str(image_id)`` from a partial file written with the same options."""
    partial = load_proposals(path)
    found = partial.source.removeprefix(_PARTIAL_SOURCE_PREFIX)
    if found != options.describe():
        raise ValueError(
            f"The partial results {path} were made with other settings ({found or 'unknown'}) "
            f"than this run ({options.describe()}). Run again with the same settings to "
            "continue it, or delete the file to start over."
        )
    unknown = [i for i in partial.image_ids if str(i) not in dataset_ids]
    if unknown:
        raise ValueError(
            f"The partial results {path} hold {len(unknown)} images that are not in this "
            f"dataset (e.g. image_id {unknown[0]!r}): they belong to another dataset. Delete "
            "the file, or write to another output."
        )
    return {str(i): partial.get(i)[0].copy() for i in partial.image_ids}


def _save(path: str, ids: list[Any], boxes: list[np.ndarray], source: str) -> None:
    save_proposals(path, ids, boxes, [_objectness(len(b)) for b in boxes], source=source)


@dataclass(frozen=True)
class SelectiveSearchRun:
    """What :func:`compute_selective_search_proposals` did.

    Attributes:
        output_path: the proposals file written.
        num_images: images in the file.
        num_resumed: of which taken from an earlier run's partial results.
        num_proposals: boxes in the file.
        seconds_per_image: mean Selective Search time of one image in one process (this run's
            images; reading the image not included); nan when every image was resumed.
        cpu_seconds_per_image: the same in CPU time (what it would take on an idle core).
        wall_seconds: this run's wall-clock time, workers and writing included.
    """

    output_path: str
    num_images: int
    num_resumed: int
    num_proposals: int
    seconds_per_image: float
    cpu_seconds_per_image: float
    wall_seconds: float


def compute_selective_search_proposals(
    dataset_dicts: Sequence[dict],
    output_path: str,
    *,
    mode: str = "fast",
    max_proposals: int = 2000,
    min_size: float = DEFAULT_MIN_SIZE,
    resize_to: int | None = None,
    seed: int | None = 0,
    num_workers: int = 1,
    chunksize: int = 4,
    checkpoint_every: int = 200,
    progress: bool = True,
) -> SelectiveSearchRun:
    """Selective Search proposals of every image of a dataset, written as one proposals file.

    Images are read with :func:`detkit.data.read_image` (BGR) and searched with
    :func:`selective_search` in ``num_workers`` spawned processes (one OpenCV thread each),
    handed out in order by ``imap``. Each image's boxes get objectness ``0, -1, -2, ...`` (SS
    has no scores; the sequence keeps SS's order through :func:`save_proposals`' sort). The
    file's ``source`` is ``"selective search (<mode>, OpenCV <version>)"`` (plus ``", shorter
    side resized to S"`` with ``resize_to``).

    Resumable: every ``checkpoint_every`` images, and when the run stops on an error or
    Ctrl-C, the results so far are written to :func:`partial_proposals_path` (``<output>
    .partial.npz``, same format); a later call with the same output and settings computes only
    the images missing from it, and the partial file is removed once ``output_path`` is
    written.

    Args:
        dataset_dicts: dicts with ``file_name`` and ``image_id`` (unique).
        output_path: the ``.npz`` file to write (its folder is created).
        mode, max_proposals, min_size, resize_to, seed: see :func:`selective_search`.
        num_workers: worker processes; 0 or 1 runs in this process.
        chunksize: images handed to a worker at a time.
        checkpoint_every: images between two writes of the partial file.
        progress: show the progress (a bar on a terminal) and log it with an ETA.

    Returns:
        A :class:`SelectiveSearchRun` with counts and timings.

    Raises:
        ImportError: OpenCV's contrib modules are not installed (the message says how).
        FileNotFoundError / ValueError: an image cannot be read (naming its file and image id;
            the results so far are kept in the partial file), a dict lacks a key, image ids
            repeat, a bad argument, or a partial file made with other settings.
    """
    check_options(mode, max_proposals, min_size, resize_to)
    for name, value, least in (
        ("num_workers", num_workers, 0),
        ("chunksize", chunksize, 1),
        ("checkpoint_every", checkpoint_every, 1),
    ):
        if int(value) < least:
            raise ValueError(f"{name} must be at least {least}; got {value}.")
    require_selective_search()  # fail before reading anything
    if not dataset_dicts:
        raise ValueError(f"No images to compute Selective Search proposals for ({output_path}).")
    dataset_ids: dict[str, int] = {}
    for index, record in enumerate(dataset_dicts):
        missing = [k for k in ("file_name", "image_id") if k not in record]
        if missing:
            raise ValueError(
                f"Dataset dict #{index} lacks {missing}; each needs 'file_name' and 'image_id'."
            )
        key = str(record["image_id"])
        if key in dataset_ids:
            raise ValueError(
                f"image_id {record['image_id']!r} appears twice in the dataset (dicts "
                f"#{dataset_ids[key]} and #{index}); proposals are stored by image id."
            )
        dataset_ids[key] = index

    start = time.perf_counter()
    options = _Options(
        mode,
        int(max_proposals),
        float(min_size),
        None if resize_to is None else int(resize_to),
        seed,
    )
    partial_path = partial_proposals_path(output_path)
    done: dict[str, np.ndarray] = {}
    if os.path.exists(partial_path):
        done = _load_partial(partial_path, options, dataset_ids)
        logger.info(
            "Resuming from %s: %d of %d images done.", partial_path, len(done), len(dataset_dicts)
        )
    num_resumed = len(done)
    todo = [
        (r["file_name"], r["image_id"]) for r in dataset_dicts if str(r["image_id"]) not in done
    ]
    partial_source = _PARTIAL_SOURCE_PREFIX + options.describe()
    ss_seconds: list[tuple[float, float]] = []
    unsaved = 0

    def checkpoint() -> None:
        nonlocal unsaved
        if unsaved:
            ids = [r["image_id"] for r in dataset_dicts if str(r["image_id"]) in done]
            _save(partial_path, ids, [done[str(i)] for i in ids], partial_source)
            unsaved = 0

    worker = functools.partial(_propose_one, options)
    pool = None
    if num_workers > 1 and todo:
        # Spawned, not forked: forked workers hung now and then in tests here, most likely
        # on OpenCV's thread pool, which a fork copies in a locked state.
        pool = multiprocessing.get_context("spawn").Pool(num_workers, _init_worker)
    bar = Progress(
        len(dataset_dicts),
        f"Selective search ({mode})",
        "img",
        logger,
        enabled=progress,
        initial=num_resumed,
    )
    try:
        results = (
            pool.imap(worker, todo, chunksize=int(chunksize))
            if pool is not None
            else map(worker, todo)
        )
        for (_, image_id), (boxes, seconds, cpu_seconds) in zip(todo, results):
            done[str(image_id)] = boxes
            ss_seconds.append((seconds, cpu_seconds))
            unsaved += 1
            bar.update(1)
            if unsaved >= checkpoint_every:
                checkpoint()
    except BaseException:
        if pool is not None:
            pool.terminate()
        try:
            checkpoint()
        except Exception as e:  # keep the error that stopped the run
            logger.error("Could not save the partial results to %s: %s", partial_path, e)
        if os.path.exists(partial_path):
            logger.error(
                "Selective search stopped; %d of %d images are saved in %s (run again "
                "to continue).",
                len(done),
                len(dataset_dicts),
                partial_path,
            )
        raise
    finally:
        bar.close()
        if pool is not None:
            pool.close()
            pool.join()

    source = f"selective search ({mode}, OpenCV {cv2.__version__})"
    if options.resize_to is not None:
        source = source[:-1] + f", shorter side resized to {options.resize_to})"
    ids = [r["image_id"] for r in dataset_dicts]
    boxes = [done[str(i)] for i in ids]
    _save(output_path, ids, boxes, source)
    if os.path.exists(partial_path):
        os.remove(partial_path)
    return SelectiveSearchRun(
        output_path=output_path,
        num_images=len(ids),
        num_resumed=num_resumed,
        num_proposals=int(sum(len(b) for b in boxes)),
        seconds_per_image=float(np.mean([t for t, _ in ss_seconds])) if todo else math.nan,
        cpu_seconds_per_image=float(np.mean([c for _, c in ss_seconds])) if todo else math.nan,
        wall_seconds=time.perf_counter() - start,
    )
