"""Index samplers: an infinite seeded training stream, aspect-ratio batches, inference shards.

Every sampler takes ``rank`` and ``world_size`` (default: torch.distributed's, or 0 and 1), so
distributed training shards the data with no change elsewhere.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from detkit.utils import comm

__all__ = [
    "AspectRatioGroupedBatchSampler",
    "InferenceSampler",
    "SeededBatchSampler",
    "TrainingSampler",
    "aspect_ratio_group_ids",
    "shared_random_seed",
]


def shared_random_seed() -> int:
    """A random seed, the same on every process (rank 0's)."""
    seed = int(np.random.SeedSequence().generate_state(1)[0] % 2**31)
    return int(comm.all_gather(seed)[0])


def _rank_and_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    rank = comm.get_rank() if rank is None else rank
    world_size = comm.get_world_size() if world_size is None else world_size
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}); got {rank}.")
    return rank, world_size


class TrainingSampler(Sampler[int]):
    """An endless stream of dataset indices: one seeded permutation per epoch, back to back.

    The global stream depends only on ``(size, shuffle, seed)``; rank r of W processes takes
    elements r, r + W, r + 2W, ... of it, so the ranks together see each epoch once.

    Args:
        size: dataset length.
        shuffle: permute each epoch (otherwise 0, 1, ..., size - 1 repeatedly).
        seed: the permutations' seed; None draws one shared by all ranks.
        rank, world_size: this process's shard (default from torch.distributed).
    """

    def __init__(
        self,
        size: int,
        *,
        shuffle: bool = True,
        seed: int | None = None,
        rank: int | None = None,
        world_size: int | None = None,
    ):
        if size <= 0:
            raise ValueError(f"TrainingSampler needs a non-empty dataset; got size {size}.")
        self.size = size
        self.shuffle = shuffle
        self.seed = shared_random_seed() if seed is None else int(seed)
        self.rank, self.world_size = _rank_and_world(rank, world_size)

    def __iter__(self) -> Iterator[int]:
        yield from itertools.islice(self._global_stream(), self.rank, None, self.world_size)

    def _global_stream(self) -> Iterator[int]:
        generator = torch.Generator()
        generator.manual_seed(self.seed)
        while True:
            if self.shuffle:
                yield from torch.randperm(self.size, generator=generator).tolist()
            else:
                yield from range(self.size)


def aspect_ratio_group_ids(dataset_dicts: Sequence[dict]) -> list[int]:
    """Group of each image: 0 for landscape (width >= height), 1 for portrait."""
    return [0 if d["width"] >= d["height"] else 1 for d in dataset_dicts]


class AspectRatioGroupedBatchSampler(Sampler[list[int]]):
    """Batches of ``batch_size`` indices that share a group (e.g. landscape / portrait).

    Indices from ``sampler`` wait in their group's bucket; a full bucket is yielded as a
    batch. Batches of like aspect ratio pad less when stacked. The batch stream is a
    function of the index stream, the group ids and ``batch_size`` alone, so resuming at
    ``start_iter = k`` replays the bucketing on indices only (no image is read) and yields
    exactly batches k, k + 1, ... of the uninterrupted stream. With a single group this is
    plain consecutive batching.

    Args:
        sampler: an (infinite) iterable of dataset indices, e.g. a TrainingSampler.
        group_ids: the group of each dataset index.
        batch_size: indices per batch (per process).
        start_iter: number of batches to skip.
    """

    def __init__(
        self,
        sampler: Iterable[int],
        group_ids: Sequence[int],
        batch_size: int,
        start_iter: int = 0,
    ):
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive; got {batch_size}.")
        if start_iter < 0:
            raise ValueError(f"start_iter must be >= 0; got {start_iter}.")
        self.sampler = sampler
        self.group_ids = np.asarray(group_ids, dtype=np.int64)
        self.batch_size = batch_size
        self.start_iter = start_iter

    def __iter__(self) -> Iterator[list[int]]:
        buckets: dict[int, list[int]] = {}
        num_batches = 0
        for index in self.sampler:
            bucket = buckets.setdefault(int(self.group_ids[index]), [])
            bucket.append(index)
            if len(bucket) == self.batch_size:
                if num_batches >= self.start_iter:
                    yield list(bucket)
                num_batches += 1
                bucket.clear()


class InferenceSampler(Sampler[int]):
    """Each rank gets one contiguous shard of ``range(size)`` (sizes differ by at most 1).

    Contiguous shards keep the order of results when the ranks' outputs are gathered.
    """

    def __init__(self, size: int, *, rank: int | None = None, world_size: int | None = None):
        self.size = size
        self.rank, self.world_size = _rank_and_world(rank, world_size)
        base, extra = divmod(size, self.world_size)
        self.begin = self.rank * base + min(self.rank, extra)
        self.end = self.begin + base + (1 if self.rank < extra else 0)

    def __iter__(self) -> Iterator[int]:
        yield from range(self.begin, self.end)

    def __len__(self) -> int:
        return self.end - self.begin


class SeededBatchSampler(Sampler[list[tuple[int, int]]]):
    """Pairs each index of a batch sampler with a seed for its random augmentation.

    The seed of slot j of batch b is derived from (seed, rank, b, j) alone, so the
    augmentation of every sample, like the batch itself, is a function of its position in
    the stream: a run resumed at batch k sees exactly what the uninterrupted run saw,
    whichever worker process maps it.

    Args:
        batch_sampler: yields lists of indices, starting at batch ``start_iter``.
        seed: the run's data seed.
        start_iter: the number of the first batch ``batch_sampler`` yields.
        rank: this process's rank (ranks augment differently).
    """

    def __init__(self, batch_sampler: Sampler, seed: int, start_iter: int = 0, rank: int = 0):
        self.batch_sampler = batch_sampler
        self.seed, self.start_iter, self.rank = seed, start_iter, rank

    def __iter__(self):
        for number, batch in enumerate(self.batch_sampler, start=self.start_iter):
            seeds = np.random.SeedSequence([self.seed, self.rank, number]).generate_state(
                len(batch)
            )
            yield [(index, int(s)) for index, s in zip(batch, seeds)]
