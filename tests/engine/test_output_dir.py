"""One run per OUTPUT_DIR: the lock file (live, stale, foreign and re-entered owners), the
refusal to train over a previous run without --resume / --overwrite, and the removal of
temporary files of interrupted writes.

Oracles: the files in the folder before and after; a real second process holding the lock,
then killed (kill -9), for the live and the stale case."""

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from detkit.engine import output_dir as output_dir_module
from detkit.engine.output_dir import (
    LOCK_NAME,
    OutputDirError,
    OutputDirLock,
    claim_output_dir,
)
from detkit.utils.io import atomic_write_text

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The module alone, not the detkit.engine package (which imports torch): a fast start.
HOLD_LOCK = (
    "import importlib.util, sys, time\n"
    "spec = importlib.util.spec_from_file_location('output_dir', sys.argv[2])\n"
    "module = importlib.util.module_from_spec(spec)\n"
    "spec.loader.exec_module(module)\n"
    "module.OutputDirLock(sys.argv[1]).acquire()\n"
    "print('locked', flush=True)\n"
    "time.sleep(60)\n"
)


@pytest.fixture
def other_process_lock(tmp_path):
    """A second Python process that holds the lock of ``tmp_path / "run"``."""
    directory = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(directory), output_dir_module.__file__],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout.readline().strip() == "locked"
    yield directory, proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_lock_records_its_owner_and_is_removed_on_release(tmp_path):
    lock = OutputDirLock(str(tmp_path))
    lock.acquire()
    owner = json.loads((tmp_path / LOCK_NAME).read_text())
    assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
    lock.acquire()  # the same process re-enters its own lock
    lock.release()
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_live_run_keeps_its_folder(other_process_lock):
    directory, proc = other_process_lock
    with pytest.raises(OutputDirError, match=rf"in use by another run \(pid {proc.pid} on host"):
        claim_output_dir(str(directory))
    # The refused run changed nothing: the lock is still the other process's.
    assert json.loads((directory / LOCK_NAME).read_text())["pid"] == proc.pid


def test_a_killed_runs_lock_is_stale_and_taken_over(other_process_lock, log):
    directory, proc = other_process_lock
    proc.send_signal(signal.SIGKILL)  # no chance to clean up
    proc.wait()
    assert (directory / LOCK_NAME).exists()
    lock = claim_output_dir(str(directory))
    assert json.loads((directory / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert f"pid {proc.pid}" in log.text and "no longer runs" in log.text
    lock.release()


def test_a_lock_of_another_host_is_respected(tmp_path):
    record = {"pid": 1, "host": "another-machine", "started": "yesterday", "command": "x"}
    (tmp_path / LOCK_NAME).write_text(json.dumps(record))
    with pytest.raises(OutputDirError, match=f"another-machine.*delete {tmp_path / LOCK_NAME}"):
        claim_output_dir(str(tmp_path))


def _previous_run(directory, finished):
    directory.mkdir(exist_ok=True)
    names = ["model_0000009.pth", "metrics.json", "log.txt", "config.yaml"]
    names += ["model_final.pth", "summary.json"] if finished else []
    for name in names:
        (directory / name).write_text(name)
    last = "model_final.pth" if finished else "model_0000009.pth"
    (directory / "last_checkpoint").write_text(last)
    return sorted(os.listdir(directory))


@pytest.mark.parametrize("finished", [True, False])
def test_training_over_a_previous_run_needs_resume_or_overwrite(tmp_path, finished):
    directory = tmp_path / "run"
    before = _previous_run(directory, finished)
    state = "a finished run" if finished else "an interrupted run"
    with pytest.raises(OutputDirError, match=f"holds {state}.*--resume.*--overwrite"):
        claim_output_dir(str(directory))
    assert sorted(os.listdir(directory)) == before  # nothing touched, no lock left
    claim_output_dir(str(directory), resume=True).release()
    claim_output_dir(str(directory), training=False).release()  # evaluation only
    assert sorted(os.listdir(directory)) == before


def test_overwrite_deletes_the_previous_runs_checkpoints_and_metrics(tmp_path, log):
    directory = tmp_path / "run"
    _previous_run(directory, finished=True)
    lock = claim_output_dir(str(directory), overwrite=True)
    # The log and config are rewritten by the new run; checkpoints, metrics, summary go.
    assert sorted(os.listdir(directory)) == [LOCK_NAME, "config.yaml", "log.txt"]
    assert "--overwrite: deleted 5 files" in log.text
    lock.release()


def test_a_folder_without_checkpoints_is_free(tmp_path):
    (tmp_path / "log.txt").write_text("a run that died before its first checkpoint")
    claim_output_dir(str(tmp_path)).release()
    assert os.listdir(tmp_path) == ["log.txt"]


def test_orphaned_temporary_files_are_removed(tmp_path):
    atomic_write_text(str(tmp_path / "last_checkpoint"), "model_final.pth")
    orphan = tmp_path / ".model_0000004.pth.0123456789ab.tmp"  # atomic_write's pattern
    orphan.write_bytes(b"half a checkpoint")
    keep = tmp_path / ".notes.tmp"  # not atomic_write's: left alone
    keep.write_text("mine")
    claim_output_dir(str(tmp_path), resume=True).release()
    assert not orphan.exists() and keep.exists()


def test_a_run_of_steps_in_subfolders_counts_as_a_previous_run(tmp_path, log):
    # SOLVER.SCHEME alternating interrupted in step 2: checkpoints only in step folders.
    step = tmp_path / "step1_rpn"
    step.mkdir()
    (step / "model_final.pth").write_text("x")
    (step / "last_checkpoint").write_text("model_final.pth")
    with pytest.raises(OutputDirError, match="holds an interrupted run"):
        claim_output_dir(str(tmp_path))
    claim_output_dir(str(tmp_path), overwrite=True).release()
    assert os.listdir(step) == []
    assert "step1_rpn/last_checkpoint, step1_rpn/model_final.pth" in log.text
