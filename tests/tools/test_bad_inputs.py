"""Bad configs, checkpoints and output folders through ``tools/train_net.py`` as a user
meets them: each kind is generated here, run through the tool's own entry (its ``main``
under :func:`~detkit.utils.cli.run_cli`, in this process to keep the corpus fast), and
must end with exit code 1 and a message naming what and where, without a traceback, and
without touching what a previous run left. (Images, annotations and COCO json are the
corpus of ``tests/data/test_verify.py``.)"""

from __future__ import annotations

import importlib.util
import json
import os
import socket

import pytest
import torch

from detkit.engine.output_dir import LOCK_NAME
from detkit.utils.cli import run_cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs/quickstart/shapes.yaml")
FAST = [
    "MODEL.TINY.CHANNELS",
    "[8, 16, 16, 32]",
    "DATALOADER.NUM_WORKERS",
    "0",
    "SOLVER.MAX_ITER",
    "1",
    "TEST.EVAL_PERIOD",
    "0",
    "DATASETS.TEST",
    "[]",
]


def _train_net():
    spec = importlib.util.spec_from_file_location(
        "train_net", os.path.join(ROOT, "tools", "train_net.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TRAIN_NET = _train_net()


def _run(argv, capsys):
    try:
        args = TRAIN_NET.argument_parser().parse_args(argv)
    except SystemExit as usage_error:  # argparse: usage, the error, exit code 2
        return usage_error.code, capsys.readouterr().err
    code = run_cli(lambda: TRAIN_NET.main(args), debug=False)
    return code, capsys.readouterr().err


# Each case: (what it makes in tmp_path -> extra argv, fragments the message must contain).
def _yaml(tmp_path, text):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return ["--config-file", str(path)]


def _weights(tmp_path, make):
    path = tmp_path / "weights.pth"
    make(path)
    return ["--config-file", CONFIG, "MODEL.WEIGHTS", str(path)]


class Pickled:  # a Python object inside a checkpoint: never unpickled
    pass


def _previous_run(tmp_path, finished):
    out = tmp_path / "out"
    out.mkdir()
    (out / "model_0000009.pth").write_bytes(b"x")
    if finished:
        (out / "model_final.pth").write_bytes(b"x")
    (out / "last_checkpoint").write_text("model_final.pth" if finished else "model_0000009.pth")
    return []


def _locked(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    record = {
        "pid": 1,
        "host": f"not-{socket.gethostname()}",
        "started": "today",
        "command": "tools/train_net.py ...",
    }
    (out / LOCK_NAME).write_text(json.dumps(record))
    return []


CASES = {
    # configs
    "missing config file": (lambda t: ["--config-file", str(t / "nowhere.yaml")], ["nowhere.yaml"]),
    "malformed yaml": (lambda t: _yaml(t, "MODEL: [unclosed\n"), ["bad.yaml"]),
    "unknown key in a file": (
        lambda t: _yaml(t, "SOLVER:\n  MAX_ITR: 3\n"),
        ["SOLVER.MAX_ITR", "MAX_ITER"],
    ),
    "unknown key on the command line": (
        lambda t: ["--config-file", CONFIG, "SOLVER.BASE_LRR", "0.1"],
        ["SOLVER.BASE_LRR"],
    ),
    "value of the wrong type": (
        lambda t: ["--config-file", CONFIG, "SOLVER.BASE_LR", "fast"],
        ["SOLVER.BASE_LR"],
    ),
    "odd number of overrides": (  # a usage error of the command line (exit code 2)
        lambda t: ["--config-file", CONFIG, "SOLVER.BASE_LR"],
        ["usage:", "'SOLVER.BASE_LR' has no value: write KEY VALUE or KEY=VALUE"],
    ),
    "unknown meta-architecture": (
        lambda t: ["--config-file", CONFIG, "MODEL.META_ARCHITECTURE", "FasterRCNNN"],
        ["FasterRCNNN", "META_ARCH"],
    ),
    "unknown training scheme": (
        lambda t: ["--config-file", CONFIG, "SOLVER.SCHEME", "cyclic"],
        ["SOLVER.SCHEME"],
    ),
    "unknown dataset": (
        lambda t: ["--config-file", CONFIG, "DATASETS.TRAIN", "['voc_2077_trainval']"],
        ["voc_2077_trainval"],
    ),
    "plugin that does not exist": (
        lambda t: ["--config-file", CONFIG, "IMPORTS", "['projects.no_such_plugin']"],
        ["projects.no_such_plugin"],
    ),
    "NUM_CLASSES other than the data's": (
        lambda t: ["--config-file", CONFIG, "MODEL.ROI_HEADS.NUM_CLASSES", "1"],
        [
            "MODEL.ROI_HEADS.NUM_CLASSES is 1",
            "'shapes_train'",
            "has 3 classes",
            "Set MODEL.ROI_HEADS.NUM_CLASSES 3",
        ],
    ),
    "evaluation without weights": (
        lambda t: ["--config-file", CONFIG, "--eval-only"],
        ["MODEL.WEIGHTS is empty", "--allow-random-weights"],
    ),
    # checkpoints given as MODEL.WEIGHTS
    "weights file missing": (
        lambda t: ["--config-file", CONFIG, "MODEL.WEIGHTS", str(t / "none.pth")],
        ["Weights file not found", "none.pth"],
    ),
    "weights file empty": (
        lambda t: _weights(t, lambda p: p.write_bytes(b"")),
        ["Could not read the checkpoint", "weights.pth", "not a PyTorch file"],
    ),
    "weights file truncated": (
        lambda t: _weights(
            t,
            lambda p: (
                torch.save({"model": {"w": torch.ones(64)}}, p),
                p.write_bytes(p.read_bytes()[:100]),
            ),
        ),
        ["Could not read the checkpoint", "truncated"],
    ),
    "weights file of text": (
        lambda t: _weights(t, lambda p: p.write_text("not weights")),
        [
            "Could not read the checkpoint",
            "weights.pth",
            "not a PyTorch file (it starts with b'not '",
        ],
    ),
    "weights with pickled code": (
        lambda t: _weights(t, lambda p: torch.save({"model": {}, "x": Pickled()}, p)),
        ["weights.pth", "does not unpickle"],
    ),
    "weights of another architecture": (
        lambda t: _weights(t, lambda p: torch.save({"model": {"fc.w": torch.ones(2)}}, p)),
        ["None of the 1 tensors of the checkpoint fits the model", "MODEL.WEIGHTS"],
    ),
    "weights holding a list": (
        lambda t: _weights(t, lambda p: torch.save([1, 2], p)),
        ["neither a detkit checkpoint", "list"],
    ),
    # output folders
    "folder of a finished run": (
        lambda t: _previous_run(t, True),
        ["holds a finished run", "--resume", "--overwrite"],
    ),
    "folder of an interrupted run": (
        lambda t: _previous_run(t, False),
        ["holds an interrupted run", "--resume"],
    ),
    "folder locked by a run on another host": (
        lambda t: _locked(t),
        ["in use by another run", "not-", LOCK_NAME],
    ),
    "OUTPUT_DIR is a file": (
        lambda t: (t / "out").write_text("a file") and [],
        ["is a file, not a folder"],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_ends_with_a_message_not_a_traceback(
    case, tmp_path, capsys, tiny_shapes_root, monkeypatch
):
    monkeypatch.setenv("DETKIT_DATASETS", tiny_shapes_root)
    monkeypatch.delenv("DETKIT_DEBUG", raising=False)
    make, fragments = CASES[case]
    extra = make(tmp_path)
    out = tmp_path / "out"
    before = sorted(os.listdir(out)) if out.is_dir() else None
    if extra[:1] == ["--config-file"]:
        config_args, overrides = extra[:2], extra[2:]
    else:
        config_args, overrides = ["--config-file", CONFIG], extra
    argv = config_args + FAST + ["OUTPUT_DIR", str(out)] + overrides
    code, err = _run(argv, capsys)
    usage = "usage:" in fragments
    assert code == (2 if usage else 1), f"{case}: exit code {code}\n{err}"
    assert "Traceback" not in err
    assert usage or "--debug" in err  # how to see the frames
    for fragment in fragments:
        assert fragment in err, f"{case}: '{fragment}' not in:\n{err}"
    if before is not None:  # a previous run's folder is left exactly as it was
        assert sorted(os.listdir(out)) == before
