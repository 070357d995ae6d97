"""DetectionCheckpointer: atomic saves, resume of model + optimizer + scheduler + iteration,
and the messages of resume_or_load and of unreadable or missing files.

Oracles: the files on disk after a save that crashes midway (last_checkpoint unchanged, no
partial file); the identity "save, resume, continue = uninterrupted training"; tensors
equal to the saved ones.
"""

import os

import pytest
import torch
from fvcore.common.checkpoint import PeriodicCheckpointer
from torch import nn

from detkit.checkpoint import DetectionCheckpointer, atomic_write
from detkit.config import get_cfg
from detkit.solver import build_lr_scheduler, build_optimizer
from detkit.utils import comm


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


def test_last_checkpoint_naming_a_missing_file_and_no_other(tmp_path, log):
    (tmp_path / "last_checkpoint").write_text("model_0000999.pth")
    model, _, _ = _make(0)
    with pytest.raises(RuntimeError, match="no checkpoint of .* can be read .there are none"):
        DetectionCheckpointer(model, str(tmp_path)).resume_or_load("", resume=True)
    assert "names 'model_0000999.pth', which does not exist" in log.text


def _save_series(directory, iterations):
    """Checkpoints after each of ``iterations`` (last_checkpoint names the last one); the
    model's weights at each, by iteration."""
    model, optimizer, scheduler = _make(0)
    checkpointer = DetectionCheckpointer(
        model, str(directory), optimizer=optimizer, scheduler=scheduler
    )
    weights = {}
    for iteration in iterations:
        _train(model, optimizer, scheduler, [iteration])
        checkpointer.save(f"model_{iteration:07d}", iteration=iteration)
        weights[iteration] = {k: v.clone() for k, v in model.state_dict().items()}
    return weights


@pytest.mark.parametrize("damage", ["truncated", "missing", "empty"])
def test_resume_falls_back_to_the_newest_checkpoint_that_reads(tmp_path, log, damage):
    weights = _save_series(tmp_path, [1, 3, 5])
    newest = tmp_path / "model_0000005.pth"
    if damage == "truncated":  # a full disk or an interrupted copy
        newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    elif damage == "missing":
        newest.unlink()
    else:
        newest.write_bytes(b"")
    model, optimizer, scheduler = _make(7)
    extra = DetectionCheckpointer(
        model, str(tmp_path), optimizer=optimizer, scheduler=scheduler
    ).resume_or_load("", resume=True)
    assert extra == {"iteration": 3}  # model_0000003, not the older model_0000001
    for key, value in weights[3].items():
        assert torch.equal(model.state_dict()[key], value), key
    assert scheduler.last_epoch == 2  # two updates had run when model_0000003 was saved
    if damage != "missing":
        assert "Cannot resume from" in log.text and "model_0000005.pth" in log.text
        assert "Resumed from" in log.text and "skipped 1 broken" in log.text
        assert newest.exists()  # the broken file is left for the user to inspect


def test_resume_with_every_checkpoint_broken_names_them(tmp_path):
    _save_series(tmp_path, [1, 2])
    for name in ("model_0000001.pth", "model_0000002.pth"):
        (tmp_path / name).write_bytes(b"garbage")
    model, _, _ = _make(0)
    with pytest.raises(RuntimeError, match="model_0000002.pth: Could not read.*model_0000001"):
        DetectionCheckpointer(model, str(tmp_path)).resume_or_load("", resume=True)


def test_resume_order_ranks_final_then_iteration_not_name_order(tmp_path):
    _save_series(tmp_path, [9, 10])  # "model_0000009" < "model_0000010" as numbers too
    model, _, _ = _make(0)
    checkpointer = DetectionCheckpointer(model, str(tmp_path))
    (tmp_path / "last_checkpoint").write_text("model_0000009.pth")
    (tmp_path / "model_final.pth").write_bytes((tmp_path / "model_0000010.pth").read_bytes())
    names = [os.path.basename(p) for p in checkpointer._resume_candidates()]
    assert names == ["model_0000009.pth", "model_final.pth", "model_0000010.pth"]


def test_non_finite_weights_are_never_saved(tmp_path):
    weights = _save_series(tmp_path, [0])
    model, _, _ = _make(0)
    model.load_state_dict(weights[0])
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
        model[1].running_var[2] = float("inf")
    checkpointer = DetectionCheckpointer(model, str(tmp_path))
    with pytest.raises(
        FloatingPointError,
        match=r"2 model tensors.*0\.weight.*1\.running_var"
        r".*last_checkpoint still names model_0000000\.pth",
    ):
        checkpointer.save("model_0000001", iteration=1)
    assert _files(tmp_path) == ["last_checkpoint", "model_0000000.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000000.pth"


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
