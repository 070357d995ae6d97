"""Data loaders: dataset dicts from the catalog -> mapped batches (lists of model inputs).

The catalog is read in the main process; workers receive the (serialized) list of dicts and
the mapper, never a dataset name. So a dataset registered in a user's script works with
``DATALOADER.NUM_WORKERS > 0`` whether workers are forked or spawned.
"""

from __future__ import annotations

import logging
import pickle
import random
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset

from detkit.data.catalog import DatasetCatalog, MetadataCatalog
from detkit.data.mapper import DatasetMapper
from detkit.data.proposals import attach_precomputed_proposals
from detkit.data.samplers import (
    AspectRatioGroupedBatchSampler,
    InferenceSampler,
    SeededBatchSampler,
    TrainingSampler,
    aspect_ratio_group_ids,
    shared_random_seed,
)
from detkit.data.verify import (
    DatasetVerificationError,
    VerificationReport,
    check_verify_mode,
    dataset_num_classes,
    verify_dataset_dicts,
)
from detkit.utils import comm

__all__ = [
    "DatasetFromList",
    "MapDataset",
    "build_detection_test_loader",
    "build_detection_train_loader",
    "duplicate_with_flips",
    "get_detection_dataset_dicts",
    "proposal_files_of_test_set",
    "trivial_batch_collator",
    "worker_init_reset_seed",
]

logger = logging.getLogger(__name__)


def _usable(annotation: dict) -> bool:
    """An object training learns from (difficult and crowd ones are skipped)."""
    return not annotation.get("difficult", False) and not annotation.get("iscrowd", 0)


def _is_xyxy_abs(mode: Any) -> bool:
    """detectron2's ``BoxMode.XYXY_ABS`` (0) as an int, an enum or a name."""
    if isinstance(mode, str):
        return mode.rsplit(".", 1)[-1] == "XYXY_ABS"
    try:
        return int(mode) == 0
    except (TypeError, ValueError):
        return False


def check_box_modes(dicts: Sequence[dict], dataset_name: str) -> None:
    """Refuse annotations whose ``bbox_mode`` says they are not XYXY in absolute pixels.

    detkit's boxes are always ``[x1, y1, x2, y2]`` pixels; dicts ported from detectron2 may
    carry ``bbox_mode`` (e.g. ``BoxMode.XYWH_ABS``, 1), which would otherwise be read as
    corners and train on wrong boxes. A missing ``bbox_mode`` or XYXY_ABS (0) is accepted.
    """
    for record in dicts:
        for index, annotation in enumerate(record.get("annotations", ())):
            mode = annotation.get("bbox_mode")
            if mode is None or _is_xyxy_abs(mode):
                continue
            raise ValueError(
                f"Dataset '{dataset_name}', image {record.get('file_name')} (image_id "
                f"{record.get('image_id')!r}), annotation {index}: bbox_mode is {mode!r}, but "
                "detkit reads every bbox as [x1, y1, x2, y2] in absolute pixels (detectron2's "
                "XYXY_ABS, 0). Convert the boxes in the dataset's loader (for XYWH_ABS: "
                "[x, y, x + w, y + h]) and drop bbox_mode or set it to 0."
            )


def get_detection_dataset_dicts(
    names: str | Sequence[str],
    filter_empty: bool = True,
    proposal_files: Sequence[str] | None = None,
    *,
    verify: str = "off",
) -> list[dict]:
    """The dicts of one or several registered datasets, concatenated in order.

    Args:
        names: dataset names (e.g. ``DATASETS.TRAIN``); they must share ``thing_classes``.
        filter_empty: drop images with no object that training can use (none, or only
            difficult / crowd objects).
        proposal_files: one proposals file per name (``DATASETS.PROPOSAL_FILES_TRAIN``),
            attached to its dicts by image id (:func:`attach_precomputed_proposals`).
        verify: ``DATASETS.VERIFY``: check every image and annotation first
            (:mod:`detkit.data.verify`, cached); "stop" raises a
            :class:`~detkit.data.verify.DatasetVerificationError` listing every problem,
            "skip" leaves the bad images out with a warning, "off" checks nothing.
    """
    check_verify_mode(verify)
    names = [names] if isinstance(names, str) else list(names)
    if not names:
        raise ValueError("No dataset names given (is DATASETS.TRAIN / DATASETS.TEST empty?).")
    if proposal_files and len(proposal_files) != len(names):
        raise ValueError(
            f"{len(proposal_files)} proposal files for {len(names)} datasets {names}: "
            "DATASETS.PROPOSAL_FILES_TRAIN / _TEST need one file per dataset, in order."
        )
    classes = {
        n: MetadataCatalog.get(n).get("thing_classes") if n in MetadataCatalog else None
        for n in names
    }
    known = {n: c for n, c in classes.items() if c is not None}
    if len({tuple(c) for c in known.values()}) > 1:
        raise ValueError(
            "Datasets concatenated for one run must have the same classes in the same order; "
            + "; ".join(f"'{n}': {c}" for n, c in known.items())
        )
    dicts: list[dict] = []
    report = VerificationReport()
    for index, name in enumerate(names):
        part = DatasetCatalog.get(name)
        if not part:
            raise ValueError(f"Dataset '{name}' is empty (its registered function returned []).")
        check_box_modes(part, name)
        if proposal_files:
            part = attach_precomputed_proposals(part, proposal_files[index])
        if verify != "off":
            part_report = verify_dataset_dicts(
                part,
                dataset_name=name,
                num_classes=dataset_num_classes(name),
            )
            report.extend(part_report)
            bad = part_report.bad_indices(name)
            if verify == "skip" and bad:
                part = [d for i, d in enumerate(part) if i not in bad]
        dicts.extend(part)
    if verify != "off":
        _act_on_verification(report, verify, len(dicts))
    if filter_empty:
        before = len(dicts)
        dicts = [d for d in dicts if any(_usable(a) for a in d.get("annotations", []))]
        logger.info(
            "Removed %d images with no usable object; %d left.", before - len(dicts), len(dicts)
        )
        if not dicts:
            raise ValueError(f"No image of {names} has a usable object after filtering.")
    _log_summary(names, dicts, next(iter(known.values()), None))
    return dicts


def _act_on_verification(report: VerificationReport, mode: str, num_left: int) -> None:
    """Raise ("stop") or warn ("skip") about a report's problems; log a clean one."""
    if report.ok:
        # All from the cache and clean (the run's start already said so): debug only.
        logger.log(logging.INFO if report.num_decoded else logging.DEBUG, report.summary())
        return
    if mode == "stop":
        raise DatasetVerificationError(report)
    logger.warning(
        "%s\nDATASETS.VERIFY 'skip': left out these %d image(s); %d remain. (In a test set, "
        "the evaluator counts the images left out as images without detections.)",
        report.format(),
        report.num_bad_images,
        num_left,
    )
    if not num_left:
        raise ValueError(
            f"Every image of {report.datasets} failed the check (DATASETS.VERIFY 'skip' left "
            "none); fix the files listed above."
        )


def _log_summary(names: list[str], dicts: list[dict], classes: list[str] | None) -> None:
    counts = Counter(a["category_id"] for d in dicts for a in d.get("annotations", []))
    names_of = classes or []
    per_class = ", ".join(
        f"{names_of[k] if k < len(names_of) else k}: {v}" for k, v in sorted(counts.items())
    )
    empty = sum(1 for d in dicts if not d.get("annotations"))
    logger.info(
        "Dataset %s: %d images (%d without objects), %d objects (%s).",
        "+".join(names),
        len(dicts),
        empty,
        sum(counts.values()),
        per_class or "none",
    )


def duplicate_with_flips(dataset_dicts: list[dict]) -> list[dict]:
    """Every dict, then a copy of every dict marked ``"flip": True`` (PAPER.md, Input: the
    released code trains on VOC07 trainval 5,011 -> 10,022 images this way)."""
    return list(dataset_dicts) + [{**d, "flip": True} for d in dataset_dicts]


class DatasetFromList(Dataset):
    """A list of dicts kept as one pickled byte buffer.

    Workers forked from the main process would otherwise touch (and so copy) every dict's
    memory through Python's reference counts; one flat buffer stays shared.
    """

    def __init__(self, items: list[Any]):
        blobs = [
            np.frombuffer(pickle.dumps(x, protocol=pickle.HIGHEST_PROTOCOL), np.uint8)
            for x in items
        ]
        self._ends = np.cumsum([len(b) for b in blobs], dtype=np.int64)
        self._buffer = np.concatenate(blobs) if blobs else np.zeros(0, np.uint8)

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, index: int) -> Any:
        start = int(self._ends[index - 1]) if index > 0 else 0
        return pickle.loads(memoryview(self._buffer[start : int(self._ends[index])]))


class MapDataset(Dataset):
    """``dataset[i]`` passed through ``mapper`` (a picklable callable: it runs in workers)."""

    def __init__(self, dataset: Dataset, mapper: Callable[[dict], dict]):
        self.dataset, self.mapper = dataset, mapper

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int | tuple[int, int]) -> dict:
        if isinstance(index, tuple):
            # (index, augmentation seed) from a SeededBatchSampler: the random choices of
            # this sample follow from its position in the stream, so a resume replays them.
            index, aug_seed = index
            return self.mapper({**self.dataset[index], "aug_seed": aug_seed})
        return self.mapper(self.dataset[index])


def trivial_batch_collator(batch: list[dict]) -> list[dict]:
    """A batch is the list of mapped dicts (images of different sizes are padded later)."""
    return batch


def worker_init_reset_seed(worker_id: int) -> None:
    """Seed Python's and NumPy's global generators from torch's per-worker seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def _loader_seed(cfg: Any) -> int:
    return int(cfg.SEED) if cfg.SEED >= 0 else shared_random_seed()


def build_detection_train_loader(
    cfg: Any,
    mapper: Callable[[dict], dict] | None = None,
    start_iter: int = 0,
    *,
    multiprocessing_context: str | None = None,
) -> DataLoader:
    """An infinite loader of training batches: each a list of ``SOLVER.IMS_PER_BATCH /
    world_size`` mapped dicts.

    Args:
        cfg: reads DATASETS.TRAIN, DATASETS.VERIFY, DATALOADER.*, SOLVER.IMS_PER_BATCH,
            INPUT.*, SEED.
        mapper: default ``DatasetMapper(cfg, is_train=True)``.
        start_iter: batches already consumed (resume): the loader continues with batch
            ``start_iter`` of the seeded stream.
        multiprocessing_context: "fork", "spawn" or "forkserver" for the workers
            (default: the platform's).
    """
    world_size = comm.get_world_size()
    total = cfg.SOLVER.IMS_PER_BATCH
    if total % world_size:
        raise ValueError(
            f"SOLVER.IMS_PER_BATCH ({total}) must be divisible by the number of processes "
            f"({world_size})."
        )
    dicts = get_detection_dataset_dicts(
        cfg.DATASETS.TRAIN,
        filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
        proposal_files=list(cfg.DATASETS.PROPOSAL_FILES_TRAIN),
        verify=cfg.DATASETS.VERIFY,
    )
    if cfg.INPUT.FLIP_BY_DUPLICATION:
        dicts = duplicate_with_flips(dicts)
    if cfg.DATALOADER.ASPECT_RATIO_GROUPING:
        group_ids = aspect_ratio_group_ids(dicts)
    else:
        group_ids = [0] * len(dicts)
    seed = _loader_seed(cfg)
    batch_sampler = SeededBatchSampler(
        AspectRatioGroupedBatchSampler(
            TrainingSampler(len(dicts), seed=seed), group_ids, total // world_size, start_iter
        ),
        seed,
        start_iter,
        comm.get_rank(),
    )
    dataset = MapDataset(DatasetFromList(dicts), mapper or DatasetMapper(cfg, is_train=True))
    return _data_loader(cfg, dataset, batch_sampler, seed, multiprocessing_context)


def build_detection_test_loader(
    cfg: Any,
    dataset_name: str,
    mapper: Callable[[dict], dict] | None = None,
    *,
    multiprocessing_context: str | None = None,
) -> DataLoader:
    """A finite loader over one dataset (this rank's contiguous shard), one image per batch.

    Args:
        cfg: reads DATALOADER.NUM_WORKERS, DATASETS.VERIFY, INPUT.*.
        dataset_name: a registered dataset.
        mapper: default ``DatasetMapper(cfg, is_train=False)``.
        multiprocessing_context: as in :func:`build_detection_train_loader`.
    """
    proposal_files = proposal_files_of_test_set(cfg, dataset_name)
    dicts = get_detection_dataset_dicts(
        [dataset_name], False, proposal_files, verify=cfg.DATASETS.VERIFY
    )
    dataset = MapDataset(DatasetFromList(dicts), mapper or DatasetMapper(cfg, is_train=False))
    batch_sampler = BatchSampler(InferenceSampler(len(dicts)), 1, drop_last=False)
    return _data_loader(cfg, dataset, batch_sampler, 0, multiprocessing_context)


def proposal_files_of_test_set(cfg: Any, dataset_name: str) -> list[str]:
    """``[file]`` of ``dataset_name`` from ``DATASETS.PROPOSAL_FILES_TEST`` (matched by its
    position in ``DATASETS.TEST``), or ``[]`` when none is configured for it."""
    files, names = list(cfg.DATASETS.PROPOSAL_FILES_TEST), list(cfg.DATASETS.TEST)
    if not files:
        return []
    if len(files) != len(names):
        raise ValueError(
            f"DATASETS.PROPOSAL_FILES_TEST has {len(files)} files for {len(names)} test "
            f"datasets {names}; give one file per DATASETS.TEST name, in order."
        )
    return [files[names.index(dataset_name)]] if dataset_name in names else []


def _data_loader(
    cfg: Any, dataset: Dataset, batch_sampler: Any, seed: int, context: str | None
) -> DataLoader:
    num_workers = cfg.DATALOADER.NUM_WORKERS
    return DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        num_workers=num_workers,
        collate_fn=trivial_batch_collator,
        worker_init_fn=worker_init_reset_seed,
        # Workers' torch seeds (base + worker id) come from this generator: reproducible,
        # and different on each rank so that ranks do not flip in lockstep.
        generator=torch.Generator().manual_seed(seed + comm.get_rank()),
        persistent_workers=num_workers > 0,
        multiprocessing_context=context if num_workers > 0 else None,
    )
