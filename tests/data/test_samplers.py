"""Samplers: seeded infinite stream, rank sharding, aspect-ratio grouping, exact resume."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from detkit.data import AspectRatioGroupedBatchSampler, InferenceSampler, TrainingSampler


def _take(iterable, n):
    return list(itertools.islice(iterable, n))


def test_training_stream_is_seeded_permutations():
    stream = _take(TrainingSampler(7, seed=3, rank=0, world_size=1), 21)
    assert stream == _take(TrainingSampler(7, seed=3, rank=0, world_size=1), 21)
    assert stream != _take(TrainingSampler(7, seed=4, rank=0, world_size=1), 21)
    for epoch in range(3):  # each epoch is a permutation of the dataset
        assert sorted(stream[7 * epoch : 7 * epoch + 7]) == list(range(7))
    assert stream[:7] != stream[7:14]  # reshuffled every epoch
    plain = _take(TrainingSampler(3, shuffle=False, seed=0, rank=0, world_size=1), 7)
    assert plain == [0, 1, 2, 0, 1, 2, 0]


def test_ranks_interleave_into_the_single_process_stream():
    single = _take(TrainingSampler(10, seed=5, rank=0, world_size=1), 40)
    shards = [_take(TrainingSampler(10, seed=5, rank=r, world_size=2), 20) for r in (0, 1)]
    assert [x for pair in zip(*shards) for x in pair] == single
    # Within one epoch the ranks see disjoint images that cover the dataset.
    assert sorted(shards[0][:5] + shards[1][:5]) == list(range(10))
    with pytest.raises(ValueError, match="rank must be in"):
        TrainingSampler(10, seed=0, rank=2, world_size=2)


def test_grouping_by_hand():
    group_ids = [0, 1, 0, 1, 1, 0]  # 0 = landscape, 1 = portrait
    stream = [0, 1, 2, 3, 4, 5, 0, 1, 2, 3]
    batches = list(AspectRatioGroupedBatchSampler(stream, group_ids, batch_size=2))
    # 0,2 fill group 0 first; 1,3 group 1; then 4 (g1) and 5 (g0) wait for 0 and 1; 2 and 3
    # are left waiting when the stream ends.
    assert batches == [[0, 2], [1, 3], [5, 0], [4, 1]]
    assert list(AspectRatioGroupedBatchSampler(stream, [0] * 6, 3)) == [
        [0, 1, 2],
        [3, 4, 5],
        [0, 1, 2],
    ]  # one group: consecutive batches


def test_resume_yields_exactly_the_remaining_batches():
    rng = np.random.default_rng(0)
    group_ids = (rng.random(50) < 0.3).astype(int).tolist()

    def batches(start_iter, n):
        sampler = TrainingSampler(50, seed=11, rank=0, world_size=1)
        return _take(AspectRatioGroupedBatchSampler(sampler, group_ids, 4, start_iter), n)

    uninterrupted = batches(0, 40)
    for batch in uninterrupted:
        assert len(batch) == 4 and len({group_ids[i] for i in batch}) == 1
    assert {group_ids[b[0]] for b in uninterrupted} == {0, 1}
    for k in (1, 13, 39):
        assert batches(k, 40 - k) == uninterrupted[k:]


def test_inference_shards_are_contiguous():
    shards = [list(InferenceSampler(10, rank=r, world_size=3)) for r in range(3)]
    assert shards == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert [len(InferenceSampler(2, rank=r, world_size=3)) for r in range(3)] == [1, 1, 0]
    assert list(InferenceSampler(4)) == [0, 1, 2, 3]  # no process group: everything
