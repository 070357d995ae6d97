"""DetectionCheckpointer: atomic saves, resume of model + optimizer + scheduler + iteration,
and the messages of resume_or_load and of unreadable or missing files.

Oracles: the files on disk after a save that crashes midway (last_checkpoint unchanged, no
partial file); the identity "save, resume, continue = uninterrupted training"; tensors
equal to the saved ones.
"""

import logging
import os

import pytest
import torch
from fvcore.common.checkpoint import PeriodicCheckpointer
from torch import nn

from detkit.checkpoint import DetectionCheckpointer, atomic_write
from detkit.config import get_cfg
from detkit.solver import build_lr_scheduler, build_optimizer
from detkit.utils import comm


@pytest.fixture
def log(caplog):
    """caplog, attached to detkit's logger itself: once ``setup_logger`` has run (another
    test may run it), that logger no longer propagates to the root logger caplog watches."""
    detkit_logger = logging.getLogger("detkit")
    propagate = detkit_logger.propagate
    detkit_logger.propagate = False  # each record reaches caplog once
    detkit_logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="detkit")
    yield caplog
    detkit_logger.removeHandler(caplog.handler)
    detkit_logger.propagate = propagate


def _solver_cfg():
    cfg = get_cfg()
    cfg.SOLVER.BASE_LR = 0.05
    cfg.SOLVER.MAX_ITER = 10
    cfg.SOLVER.STEPS = [4, 7]
    cfg.SOLVER.WARMUP_ITERS = 3
    return cfg


def _make(seed):
    """A small model with a BN (buffers too), its optimizer and scheduler."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
    cfg = _solver_cfg()
    optimizer = build_optimizer(cfg, model)
    return model, optimizer, build_lr_scheduler(cfg, optimizer)


def _train(model, optimizer, scheduler, iterations, hook=None):
    for iteration in iterations:
        gen = torch.Generator().manual_seed(iteration)  # the batch of each iteration is fixed
        inputs, targets = torch.randn(6, 3, generator=gen), torch.randn(6, 2, generator=gen)
        optimizer.zero_grad()
        nn.functional.mse_loss(model(inputs), targets).backward()
        optimizer.step()
        scheduler.step()
        if hook is not None:
            hook(iteration)


def _files(directory):
    return sorted(os.listdir(directory))


def test_crash_during_save_keeps_last_checkpoint_good(tmp_path, monkeypatch):
    model, optimizer, _ = _make(0)
    checkpointer = DetectionCheckpointer(model, str(tmp_path), optimizer=optimizer)
    checkpointer.save("model_0000000", iteration=0)
    good = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model[0].weight.add_(1.0)

    def crash_midway(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")  # some bytes reach the disk, then it fails
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", crash_midway)
    with pytest.raises(OSError, match="No space left"):
        checkpointer.save("model_0000001", iteration=1)
    monkeypatch.undo()

    # No partial file under the final name, no temporary left, last_checkpoint unchanged.
    assert _files(tmp_path) == ["last_checkpoint", "model_0000000.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000000.pth"
    fresh, _, _ = _make(1)
    loaded = DetectionCheckpointer(fresh, str(tmp_path)).resume_or_load("", resume=True)
    assert loaded["iteration"] == 0
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, good[key]), key


def test_atomic_write_failure_leaves_the_old_file(tmp_path):
    path = tmp_path / "last_checkpoint"
    path.write_text("model_0000004.pth")

    def fail(f):
        f.write(b"model_00")
        raise KeyboardInterrupt  # even an interrupt (Ctrl-C) midway

    with pytest.raises(KeyboardInterrupt):
        atomic_write(str(path), fail)
    assert path.read_text() == "model_0000004.pth"
    assert _files(tmp_path) == ["last_checkpoint"]
    atomic_write(str(path), lambda f: f.write(b"model_0000009.pth"))
    assert path.read_text() == "model_0000009.pth"


def test_only_the_main_process_saves(tmp_path, monkeypatch):
    model, _, _ = _make(0)
    monkeypatch.setattr(comm, "is_main_process", lambda: False)
    DetectionCheckpointer(model, str(tmp_path), save_to_disk=True).save("model_final")
    DetectionCheckpointer(model, str(tmp_path)).save("model_final")
    assert _files(tmp_path) == []


def test_resume_round_trip(tmp_path):
    # Reference: 8 uninterrupted updates.
    reference, ref_optimizer, ref_scheduler = _make(0)
    _train(reference, ref_optimizer, ref_scheduler, range(8))

    # Interrupted run: fvcore's periodic checkpointer (as the train loop's hook) saves after
    # iterations 1, 3, 5 (period 2); the run "dies" after iteration 5.
    model, optimizer, scheduler = _make(0)
    checkpointer = DetectionCheckpointer(
        model, str(tmp_path), optimizer=optimizer, scheduler=scheduler
    )
    periodic = PeriodicCheckpointer(checkpointer, period=2)
    _train(model, optimizer, scheduler, range(6), hook=periodic.step)
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000005.pth"

    # New process: other initial weights, fresh optimizer and scheduler.
    resumed, resumed_optimizer, resumed_scheduler = _make(123)
    extra = DetectionCheckpointer(
        resumed, str(tmp_path), optimizer=resumed_optimizer, scheduler=resumed_scheduler
    ).resume_or_load("ignored/when/resuming.pth", resume=True)
    assert extra == {"iteration": 5}
    start_iter = extra["iteration"] + 1
    for key, value in model.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key
    assert resumed_scheduler.last_epoch == scheduler.last_epoch == 6
    for group, saved_group in zip(resumed_optimizer.param_groups, optimizer.param_groups):
        assert group["lr"] == saved_group["lr"]
        for p, saved_p in zip(group["params"], saved_group["params"]):
            momentum = resumed_optimizer.state[p]["momentum_buffer"]
            assert torch.equal(momentum, optimizer.state[saved_p]["momentum_buffer"])

    _train(resumed, resumed_optimizer, resumed_scheduler, range(start_iter, 8))
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value, rtol=0, atol=1e-6)


def test_no_checkpoint_starts_fresh_with_a_message(tmp_path, log):
    model, optimizer, _ = _make(0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    checkpointer = DetectionCheckpointer(model, str(tmp_path), optimizer=optimizer)
    assert checkpointer.resume_or_load("", resume=True) == {}
    assert "No checkpoint found to resume from" in log.text
    assert "starting from scratch" in log.text
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_without_resume_weights_initialize_the_model_only(tmp_path, log):
    source, source_optimizer, source_scheduler = _make(0)
    _train(source, source_optimizer, source_scheduler, range(2))
    DetectionCheckpointer(source, str(tmp_path / "a"), optimizer=source_optimizer).save(
        "model_final", iteration=1
    )
    model, optimizer, scheduler = _make(1)
    checkpointer = DetectionCheckpointer(
        model, str(tmp_path / "b"), optimizer=optimizer, scheduler=scheduler
    )
    extra = checkpointer.resume_or_load(str(tmp_path / "a" / "model_final.pth"))
    assert "Initializing the model from" in log.text
    assert extra["iteration"] == 1  # returned, but the caller starts at 0
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in model.state_dict().items())
    assert len(optimizer.state) == 0 and scheduler.last_epoch == 0  # not restored


def test_empty_save_dir_never_has_a_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "last_checkpoint").write_text("model_final.pth")  # a stray file in the cwd
    model, _, _ = _make(0)
    assert not DetectionCheckpointer(model, "").has_checkpoint()


def test_last_checkpoint_naming_a_missing_file(tmp_path):
    (tmp_path / "last_checkpoint").write_text("model_0000999.pth")
    model, _, _ = _make(0)
    with pytest.raises(FileNotFoundError, match="model_0000999.pth.*does not exist"):
        DetectionCheckpointer(model, str(tmp_path)).resume_or_load("", resume=True)


def test_missing_local_file_says_what_weights_accepts(tmp_path):
    model, _, _ = _make(0)
    missing = str(tmp_path / "nowhere" / "vgg16.pth")
    with pytest.raises(FileNotFoundError, match="Weights file not found.*torchvision://"):
        DetectionCheckpointer(model).load(missing)


def test_unreadable_file(tmp_path):
    path = tmp_path / "broken.pth"
    path.write_bytes(b"this is not a checkpoint")
    model, _, _ = _make(0)
    with pytest.raises(RuntimeError, match="Could not read the checkpoint .*broken.pth"):
        DetectionCheckpointer(model).load(str(path))


class NotATensor:
    """A Python object a safe (weights_only) load refuses to unpickle."""


def test_checkpoint_with_python_objects_is_refused(tmp_path):
    path = tmp_path / "pickled.pth"
    torch.save({"model": {}, "extra": NotATensor()}, path)
    model, _, _ = _make(0)
    with pytest.raises(RuntimeError, match="does not unpickle"):
        DetectionCheckpointer(model).load(str(path))
