"""The train loop: hooks order, gradient accumulation, NaN detection, metric writers."""

import logging

import pytest
import torch
from torch import nn

from detkit.engine import HookBase, SimpleTrainer
from detkit.engine.hooks import EvalHook, IterationTimer, PeriodicWriter
from detkit.utils.curves import load_metrics
from detkit.utils.events import (
    CommonMetricPrinter,
    EventStorage,
    JSONWriter,
    get_event_storage,
    try_get_event_storage,
)


class LinearLossModel(nn.Module):
    """loss = mean((w x - y)^2) on a batch [(x, y), ...]: a closed-form gradient."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([1.0]))

    def forward(self, batch):
        x = torch.tensor([b[0] for b in batch])
        y = torch.tensor([b[1] for b in batch])
        return {"loss_mse": ((self.w * x - y) ** 2).mean()}


def infinite(batches):
    while True:
        yield from batches


def test_iter_size_two_equals_one_step_on_the_union():
    # Two half-batches accumulated (each loss / 2) equal one step on the whole batch.
    data = [[(1.0, 3.0)], [(2.0, 1.0)]]
    model = LinearLossModel()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = SimpleTrainer(model, infinite(data), opt, iter_size=2)
    trainer.train(0, 1)
    # Whole batch: d/dw mean((w x - y)^2) at w = 1 = mean(2 x (x - y)) = (2*1*(-2) + 2*2*1) / 2 = 0.
    assert model.w.item() == pytest.approx(1.0)
    data = [[(1.0, 3.0)], [(1.0, 2.0)]]
    model = LinearLossModel()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    SimpleTrainer(model, infinite(data), opt, iter_size=2).train(0, 1)
    # Gradient = (2*(1-3) + 2*(1-2)) / 2 = -3 -> w = 1 + 0.3.
    assert model.w.item() == pytest.approx(1.3)


def test_nan_loss_stops_with_iteration_and_values():
    class NaNAtThird(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.tensor(1.0))
            self.calls = 0

        def forward(self, batch):
            self.calls += 1
            bad = torch.tensor(float("nan")) if self.calls == 3 else torch.tensor(0.5)
            return {"loss_a": self.w * 0 + bad, "loss_b": self.w * 0 + 0.25}

    model = NaNAtThird()
    trainer = SimpleTrainer(model, infinite([[0]]), torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(FloatingPointError) as excinfo:
        trainer.train(5, 10)
    msg = str(excinfo.value)
    assert "iteration 7" in msg and "'loss_a': nan" in msg and "'loss_b': 0.25" in msg


def test_hooks_run_in_order_and_after_train_runs_on_error():
    calls = []

    class Recorder(HookBase):
        def before_train(self):
            calls.append("before_train")

        def before_step(self):
            calls.append(f"before_{self.trainer.iter}")

        def after_step(self):
            calls.append(f"after_{self.trainer.iter}")

        def after_train(self):
            calls.append("after_train")

    model = LinearLossModel()
    opt = torch.optim.SGD(model.parameters(), 0.1)
    trainer = SimpleTrainer(model, infinite([[(1.0, 1.0)]]), opt)
    trainer.register_hooks([Recorder()])
    trainer.train(3, 5)
    assert calls == ["before_train", "before_3", "after_3", "before_4", "after_4", "after_train"]
    calls.clear()
    trainer = SimpleTrainer(model, iter([]), torch.optim.SGD(model.parameters(), 0.1))
    trainer.register_hooks([Recorder()])
    with pytest.raises(StopIteration):
        trainer.train(0, 2)
    assert calls == ["before_train", "before_0", "after_train"]


def test_metrics_json_has_losses_lr_time_and_eval(tmp_path):
    model = LinearLossModel()
    opt = torch.optim.SGD(model.parameters(), 0.1)
    trainer = SimpleTrainer(model, infinite([[(1.0, 2.0)]]), opt)
    path = tmp_path / "metrics.json"
    # Fractions, as the evaluators return them, beside the evaluators' descriptions.
    described = {"bbox": {"name": "voc", "ap_metric": "area"}}
    evals = iter([{"bbox": {"AP50": 0.1}, "evaluators": described}, {"bbox": {"AP50": 0.2}}])
    writer = PeriodicWriter([JSONWriter(str(path))], 1)
    trainer.register_hooks([IterationTimer(), EvalHook(2, lambda: next(evals)), writer])
    trainer.train(0, 4)
    lines = load_metrics(str(path))  # merges the lines of one iteration
    assert [r["iteration"] for r in lines] == [0, 1, 2, 3]
    assert all("loss_mse" in r and "time" in r and "train_time" in r for r in lines)
    # Evaluation after iteration 1 (period 2) and after the last one.
    assert lines[1]["bbox/AP50"] == 0.1 and lines[3]["bbox/AP50"] == 0.2
    assert "bbox/AP50" not in lines[0] and "bbox/AP50" not in lines[2]
    assert not any(k.startswith("evaluators") for r in lines for k in r)  # no metric
    # train_time is cumulative.
    assert [r["train_time"] for r in lines] == sorted(r["train_time"] for r in lines)


def test_event_storage_median_and_history():
    storage = EventStorage(10)
    for value in [5.0, 1.0, 3.0]:
        storage.put_scalar("loss", value)
        storage.step()
    assert storage.history("loss") == [(10, 5.0), (11, 1.0), (12, 3.0)]
    assert storage.median("loss", 2) == 2.0
    with pytest.raises(KeyError, match="recorded: \\['loss'\\]"):
        storage.history("los")


def test_event_storage_keeps_a_bounded_history(tmp_path, monkeypatch):
    # A long run holds the newest history_length values per scalar, not all of them.
    storage = EventStorage(0, history_length=4)
    for value in range(10):
        storage.put_scalar("loss", float(value))
        storage.step()
    assert storage.history("loss") == [(6, 6.0), (7, 7.0), (8, 8.0), (9, 9.0)]
    assert storage.median("loss", 20) == 7.5  # over what is kept
    # TensorBoard gets every value once: written every 3 iterations, then at the end.
    from detkit.utils import events

    added = []

    class FakeSummaryWriter:
        def __init__(self, log_dir):
            pass

        def add_scalar(self, name, value, it):
            added.append((name, it, value))

        def flush(self):
            pass

        def close(self):
            pass

    import torch.utils.tensorboard

    monkeypatch.setattr(torch.utils.tensorboard, "SummaryWriter", FakeSummaryWriter)
    writer = events.TensorboardWriter(str(tmp_path))
    storage = EventStorage(0, history_length=4)
    for it in range(8):
        storage.put_scalar("loss", float(it))
        if it % 3 == 2:
            writer.write(storage)
        storage.step()
    writer.write(storage)
    writer.write(storage)  # nothing new: nothing added
    assert added == [("loss", it, float(it)) for it in range(8)]


def test_the_trainer_storage_is_current_only_while_training():
    with pytest.raises(RuntimeError, match="outside training"):
        get_event_storage()
    assert try_get_event_storage() is None

    class RecordingModel(LinearLossModel):
        def forward(self, batch):
            # Model code records a statistic of its own in the trainer's storage.
            get_event_storage().put_scalar("batch_size", len(batch))
            return super().forward(batch)

    seen = []

    class SeeStorage(HookBase):
        def before_train(self):
            seen.append(get_event_storage() is self.trainer.storage)

        def after_train(self):
            seen.append(get_event_storage() is self.trainer.storage)

    model = RecordingModel()
    trainer = SimpleTrainer(
        model, infinite([[(1.0, 2.0), (2.0, 3.0)]]), torch.optim.SGD(model.parameters(), 0.1)
    )
    trainer.register_hooks([SeeStorage()])
    trainer.train(0, 2)
    assert seen == [True, True]
    assert trainer.storage.history("batch_size") == [(0, 2.0), (1, 2.0)]
    assert try_get_event_storage() is None
    # Nested storages: the innermost is current, the outer one again after it.
    with EventStorage() as outer:
        with EventStorage() as inner:
            assert get_event_storage() is inner
        assert get_event_storage() is outer


def test_metrics_json_has_the_console_medians_of_smoothed_scalars(tmp_path):
    storage = EventStorage(0)
    path = tmp_path / "metrics.json"
    writer = JSONWriter(str(path), window_size=3)
    for it, loss in enumerate([9.0, 1.0, 5.0, 2.0]):
        storage.iter = it
        storage.put_scalar("loss_cls", loss)  # smoothed: median of the last 3
        storage.put_scalar("lr", 0.1 * (it + 1), smoothing_hint=False)  # raw
        writer.write(storage)
    writer.close()
    lines = load_metrics(str(path))
    # Medians of [9], [9, 1], [9, 1, 5], [1, 5, 2].
    assert [r["loss_cls"] for r in lines] == [9.0, 5.0, 5.0, 2.0]
    assert [r["lr"] for r in lines] == pytest.approx([0.1, 0.2, 0.3, 0.4])


@pytest.mark.parametrize("period", [1, 2, 20])
def test_each_console_line_is_printed_once(period, caplog):
    model = LinearLossModel()
    trainer = SimpleTrainer(
        model, infinite([[(1.0, 2.0)]]), torch.optim.SGD(model.parameters(), 0.1)
    )
    printer = CommonMetricPrinter(3, logging.getLogger("detkit.test_printer"))
    trainer.register_hooks([IterationTimer(), PeriodicWriter([printer], period)])
    with caplog.at_level(logging.INFO, logger="detkit.test_printer"):
        trainer.train(0, 3)
    lines = [r.getMessage() for r in caplog.records if r.name == "detkit.test_printer"]
    expected = {1: ["1/3", "2/3", "3/3"], 2: ["2/3", "3/3"], 20: ["3/3"]}[period]
    assert [line.split("iter: ")[1].split()[0] for line in lines] == expected


def test_console_line_shows_the_model_statistics_chosen():
    storage = EventStorage(0)
    for name in [
        "loss_cls",
        "fast_rcnn/cls_accuracy",
        "rpn/num_pos_anchors",
        "rpn/num_neg_anchors",
        "roi_head/num_bg_samples",
    ]:
        storage.put_scalar(name, 0.5)
    messages = []

    class ListLogger(logging.Logger):
        def info(self, msg, *args, **kwargs):
            messages.append(msg)

    CommonMetricPrinter(10, ListLogger("list")).write(storage)
    assert "fast_rcnn/cls_accuracy: 0.5" in messages[0]
    assert "rpn/num_pos_anchors: 0.5" in messages[0]
    # The complements of what is shown stay out of the console line (metrics.json has them).
    assert "num_neg_anchors" not in messages[0] and "num_bg_samples" not in messages[0]
