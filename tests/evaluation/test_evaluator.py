"""inference_on_dataset with a fake model and loader: mode and gradients, evaluator calls,
warm-up-excluded timing; DatasetEvaluators; the printed summary."""

import importlib
import logging
import time

import pytest
import torch
from torch import nn

from detkit.evaluation import (
    DatasetEvaluator,
    DatasetEvaluators,
    inference_on_dataset,
    print_results,
)


class FakeModel(nn.Module):
    """Returns ``{"value": image_id * 10}`` per image; records its mode and grad state;
    sleeps ``slow_s`` for each of the first ``num_slow`` images and ``fast_s`` after."""

    def __init__(self, num_slow=0, slow_s=0.0, fast_s=0.0, fail_at=None, sleep=time.sleep):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1))
        self.num_slow, self.slow_s, self.fast_s, self.fail_at = num_slow, slow_s, fast_s, fail_at
        self.sleep = sleep
        self.calls = []

    def forward(self, batch):
        if self.fail_at is not None and len(self.calls) == self.fail_at:
            raise RuntimeError("boom")
        seen = sum(len(b) for _, _, b in self.calls)
        self.calls.append((self.training, torch.is_grad_enabled(), batch))
        for i in range(len(batch)):
            self.sleep(self.slow_s if seen + i < self.num_slow else self.fast_s)
        out = self.weight * 0  # would carry a graph if gradients were on
        return [
            {"value": inp["image_id"] * 10, "requires_grad": out.requires_grad} for inp in batch
        ]


class RecordingEvaluator(DatasetEvaluator):
    def __init__(self, task="fake"):
        self.task, self.events, self.values = task, [], []

    def reset(self):
        self.events.append("reset")
        self.values = []

    def process(self, inputs, outputs):
        self.events.append("process")
        self.values += [
            (i["image_id"], o["value"], o["requires_grad"]) for i, o in zip(inputs, outputs)
        ]

    def evaluate(self):
        self.events.append("evaluate")
        return {self.task: {"sum": float(sum(v for _, v, _ in self.values))}}


def loader_of(num_images, batch_size=1):
    ids = list(range(num_images))
    starts = range(0, num_images, batch_size)
    return [[{"image_id": i} for i in ids[s : s + batch_size]] for s in starts]


@pytest.mark.parametrize("was_training", [True, False])
def test_runs_in_eval_mode_without_grad_and_restores_the_mode(was_training):
    model = FakeModel()
    model.train(was_training)
    evaluator = RecordingEvaluator()
    results = inference_on_dataset(model, loader_of(4), evaluator)
    assert [(training, grad) for training, grad, _ in model.calls] == [(False, False)] * 4
    assert model.training is was_training
    # reset once, one process per batch, evaluate last; outputs reach the evaluator in order.
    assert evaluator.events == ["reset"] + ["process"] * 4 + ["evaluate"]
    assert evaluator.values == [(i, 10 * i, False) for i in range(4)]
    assert results["fake"] == {"sum": 60.0}  # 10 * (0 + 1 + 2 + 3)
    assert results["timing"]["num_images"] == 4


def test_mode_is_restored_when_the_model_fails():
    model = FakeModel(fail_at=2)
    model.train()
    with pytest.raises(RuntimeError, match="boom"):
        inference_on_dataset(model, loader_of(4), None)
    assert model.training is True


class FakeClock:
    """``perf_counter`` that only moves when something ``sleep``s: exact timings."""

    def __init__(self):
        self.now = 1000.0

    def perf_counter(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_timing_leaves_out_the_warm_up_images(monkeypatch):
    # 2 slow warm-up images (0.25 s) then 6 fast ones (0.0625 s), and 0.015625 s to load
    # each batch (powers of two: the clock's sums are exact). Excluding the warm-up the model
    # time is 0.0625 s/img and the total 0.078125; with the warm-up the model time would be
    # (0.5 + 0.375) / 8 = 0.109375.
    clock = FakeClock()
    monkeypatch.setattr(importlib.import_module("detkit.evaluation.evaluator"), "time", clock)

    def loader():
        for batch in loader_of(8):
            clock.sleep(0.015625)
            yield batch

    model = FakeModel(num_slow=2, slow_s=0.25, fast_s=0.0625, sleep=clock.sleep)
    timing = inference_on_dataset(model, loader(), None, num_warmup=2)["timing"]
    assert timing["s_per_img"] == 0.0625
    assert timing["total_s_per_img"] == 0.078125
    assert timing["num_images"] == 8 and timing["num_warmup_images"] == 2


def test_warm_up_counts_images_in_whole_batches():
    # Batches of 2 start at images 0, 2, 4, 6; with 3 warm-up images the batches starting at
    # 0 and 2 are left out: 4 warm-up images, 4 timed.
    timing = inference_on_dataset(FakeModel(), loader_of(8, batch_size=2), None, num_warmup=3)[
        "timing"
    ]
    assert timing["num_warmup_images"] == 4
    # Fewer images than the warm-up: all of them are timed rather than none.
    timing = inference_on_dataset(FakeModel(), loader_of(2), None, num_warmup=5)["timing"]
    assert timing["num_warmup_images"] == 0 and timing["num_images"] == 2


def test_without_evaluator_only_runs_the_model():
    model = FakeModel()
    results = inference_on_dataset(model, iter(loader_of(3)), None)  # no len(): no total
    assert len(model.calls) == 3
    assert list(results) == ["timing"]


def test_several_evaluators_are_combined_and_task_clashes_rejected():
    first, second = RecordingEvaluator("a"), RecordingEvaluator("b")
    results = inference_on_dataset(FakeModel(), loader_of(3), [first, second])
    assert results["a"] == results["b"] == {"sum": 30.0}
    assert first.events == second.events == ["reset", "process", "process", "process", "evaluate"]
    clash = DatasetEvaluators([RecordingEvaluator("a"), RecordingEvaluator("a")])
    with pytest.raises(KeyError, match="task 'a'"):
        inference_on_dataset(FakeModel(), loader_of(1), clash)


def test_print_results_shows_summary_metrics_and_timing(caplog):
    results = {
        "bbox": {"AP": 0.40123, "AP50": 0.712, "AP75": 0.38, "AP50-cat": 0.12},
        "evaluators": {"bbox": {"name": "voc", "ap_metric": "area"}},
        "timing": {"s_per_img": 0.25, "total_s_per_img": 0.3, "num_images": 10},
    }
    with caplog.at_level(logging.INFO, logger="detkit"):
        text = print_results("voc_2007_test", results)
    assert text in caplog.text
    assert text.splitlines()[0] == (
        "Evaluation results on voc_2007_test, voc evaluator (AP and recall as fractions in [0, 1]):"
    )
    # Fractions with 3 decimals, in the table and the copypaste line.
    assert "| 0.401 | 0.712 | 0.380 |" in text
    assert "copypaste: bbox: 0.401,0.712,0.380" in text
    assert "AP50-cat" not in text  # per-class values belong to the evaluator's own table
    assert "ap_metric" not in text  # the evaluators entry is no task
    assert "0.2500 s/img" in text


class NamedEvaluator(RecordingEvaluator):
    name = "named"

    def describe(self):
        return {**super().describe(), "detail": "x"}


def test_evaluators_that_have_a_name_are_described_beside_their_tasks():
    # An evaluator with a name describes its tasks; one without (and a nested combination)
    # adds nothing for its own tasks.
    combined = DatasetEvaluators(
        [NamedEvaluator("a"), RecordingEvaluator("b"), DatasetEvaluators([NamedEvaluator("c")])]
    )
    results = inference_on_dataset(FakeModel(), loader_of(2), combined)
    assert results["evaluators"] == {
        "a": {"name": "named", "detail": "x"},
        "c": {"name": "named", "detail": "x"},
    }
    assert list(results) == ["a", "b", "c", "evaluators", "timing"]
    single = inference_on_dataset(FakeModel(), loader_of(2), NamedEvaluator("a"))
    assert single["evaluators"] == {"a": {"name": "named", "detail": "x"}}
    unnamed = inference_on_dataset(FakeModel(), loader_of(2), RecordingEvaluator("a"))
    assert "evaluators" not in unnamed
    with pytest.raises(KeyError, match="'evaluators', which is reserved"):
        inference_on_dataset(FakeModel(), loader_of(1), RecordingEvaluator("evaluators"))
