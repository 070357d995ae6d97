"""tools/train_net.py and tools/demo.py as a user runs them: a short quickstart run on a
tiny shapes dataset, a resume, an evaluation-only run and the demo."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHORT = [
    "SOLVER.MAX_ITER", "4", "SOLVER.STEPS", "[3]", "SOLVER.WARMUP_ITERS", "2",
    "SOLVER.CHECKPOINT_PERIOD", "2", "SOLVER.IMS_PER_BATCH", "2", "TEST.EVAL_PERIOD", "2",
    "MODEL.TINY.CHANNELS", "[8, 16, 16, 32]", "DATALOADER.NUM_WORKERS", "1",
]


def run(args, datasets_root, check=True):
    env = {**os.environ, "DETKIT_DATASETS": datasets_root}
    proc = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    if check and proc.returncode != 0:
        pytest.fail(f"{args} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                    f"{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def quickstart_run(tiny_shapes_root, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("quickstart"))
    proc = run(
        ["tools/train_net.py", "--config-file", "configs/quickstart/shapes.yaml",
         *SHORT, "OUTPUT_DIR", out],
        tiny_shapes_root,
    )
    return out, proc


def test_quickstart_short_run_writes_everything(quickstart_run):
    out, proc = quickstart_run
    for name in ("config.yaml", "metrics.json", "curves.png", "model_final.pth",
                 "last_checkpoint", "summary.json", "log.txt"):
        assert os.path.isfile(os.path.join(out, name)), name
    summary = json.load(open(os.path.join(out, "summary.json")))
    assert summary["iterations"] == 4 and 0.0 <= summary["mAP@0.5"] <= 1.0
    assert "Final mAP@0.5 on shapes_test" in proc.stdout
    lines = [json.loads(line) for line in open(os.path.join(out, "metrics.json"))]
    evaluated = sorted({r["iteration"] for r in lines if "bbox/AP50" in r})
    assert evaluated == [1, 3]  # TEST.EVAL_PERIOD 2 and the end
    assert any("loss_rpn_cls" in r and "lr" in r and "time" in r for r in lines)
    # The merged config written at start loads back into the same values.
    from detkit.config import get_cfg

    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(out, "config.yaml"))
    assert cfg.SOLVER.MAX_ITER == 4 and cfg.OUTPUT_DIR == out


def test_resume_continues_from_last_checkpoint(quickstart_run, tiny_shapes_root):
    out, _ = quickstart_run
    args = ["tools/train_net.py", "--config-file", "configs/quickstart/shapes.yaml",
            "--resume", *SHORT, "OUTPUT_DIR", out, "SOLVER.MAX_ITER", "6",
            "TEST.EVAL_PERIOD", "0"]
    proc = run(args, tiny_shapes_root)
    assert "Resuming at iteration 4" in proc.stdout
    lines = [json.loads(line) for line in open(os.path.join(out, "metrics.json"))]
    # Writers run every 20 iterations and at the end: the resumed run ends at iteration 5.
    assert max(r["iteration"] for r in lines) == 5


def test_eval_only_and_demo(quickstart_run, tiny_shapes_root, tmp_path):
    out, _ = quickstart_run
    weights = os.path.join(out, "model_final.pth")
    proc = run(["tools/train_net.py", "--config-file", "configs/quickstart/shapes.yaml",
                "--eval-only", "MODEL.WEIGHTS", weights, "OUTPUT_DIR", str(tmp_path / "eval"),
                "MODEL.TINY.CHANNELS", "[8, 16, 16, 32]"], tiny_shapes_root)
    assert "copypaste: bbox: AP,AP50,AP75" in proc.stdout
    demo_out = tmp_path / "demo"
    run(["tools/demo.py", "--config-file", "configs/quickstart/shapes.yaml",
         "--dataset", "shapes_test", "--max-images", "2", "--score-thresh", "0.0",
         "--output", str(demo_out), "MODEL.WEIGHTS", weights,
         "MODEL.TINY.CHANNELS", "[8, 16, 16, 32]"], tiny_shapes_root)
    records = json.load(open(demo_out / "detections.json"))
    assert len(records) == 2
    assert sorted(p.name for p in demo_out.glob("*.png")) == ["test_000000.png", "test_000001.png"]
    for record in records:
        for det in record["detections"]:
            assert det["class_name"] in ("circle", "square", "triangle")


def test_unknown_key_on_the_command_line_fails_clearly(tiny_shapes_root):
    proc = run(["tools/train_net.py", "--config-file", "configs/quickstart/shapes.yaml",
                "SOLVER.MAX_ITR", "4"], tiny_shapes_root, check=False)
    assert proc.returncode != 0
    assert "Unknown config key 'SOLVER.MAX_ITR'" in proc.stderr
    assert "SOLVER.MAX_ITER" in proc.stderr


@pytest.mark.parametrize(
    "config_file",
    ["configs/quickstart/shapes.yaml", "projects/retinanet/configs/shapes_retinanet.yaml"],
)
def test_two_process_ddp_training_on_cpu(config_file, tiny_shapes_root, tmp_path):
    # --num-gpus 2 without a GPU: two processes with gloo, one image each per iteration.
    out = str(tmp_path)
    run(["tools/train_net.py", "--config-file", config_file, "--num-gpus", "2", *SHORT,
         "TEST.EVAL_PERIOD", "0", "OUTPUT_DIR", out], tiny_shapes_root)
    log = open(os.path.join(out, "log.txt")).read()
    assert "Rank 0 of 2" in log  # really distributed (rank 1 logs to the console only)
    with open(os.path.join(out, "last_checkpoint")) as f:
        assert f.read().strip() == "model_final.pth"
    assert "Training: 4 iterations" in log


def test_rpn_only_config_trains_evaluates_recall_and_writes_proposals(tiny_shapes_root, tmp_path):
    # A ProposalNetwork config gets the proposal evaluator, not the VOC one (which has no
    # detections to score), and its evaluation writes the test set's proposals file.
    out = str(tmp_path / "rpn")
    proc = run(["tools/train_net.py", "--config-file", "configs/quickstart/rpn_shapes.yaml",
                *SHORT, "TEST.EVAL_PERIOD", "0", "OUTPUT_DIR", out], tiny_shapes_root)
    assert "Final Proposal recall on shapes_test: AR@50" in proc.stdout
    summary = json.load(open(os.path.join(out, "summary.json")))
    metrics = json.load(open(os.path.join(out, "inference", "shapes_test",
                                          "proposal_metrics.json")))
    ar100 = metrics["average_recall"]["all"]["100"]  # percent in the evaluator's file
    assert summary["AR@100"] == pytest.approx(round(ar100 / 100, 4))
    for name in ("proposals.npz", "recall_vs_iou.png", "recall_vs_proposals.png"):
        assert os.path.isfile(os.path.join(out, "inference", "shapes_test", name)), name
    # --eval-only of the trained RPN: summary and proposals again, without training.
    evaluated = str(tmp_path / "eval")
    run(["tools/train_net.py", "--config-file", "configs/quickstart/rpn_shapes.yaml",
         "--eval-only", "MODEL.WEIGHTS", os.path.join(out, "model_final.pth"),
         "MODEL.TINY.CHANNELS", "[8, 16, 16, 32]", "OUTPUT_DIR", evaluated], tiny_shapes_root)
    again = json.load(open(os.path.join(evaluated, "summary.json")))
    assert again["eval_only"] and again["AR@100"] == summary["AR@100"]
    from detkit.data import load_proposals

    first = load_proposals(os.path.join(out, "inference", "shapes_test", "proposals.npz"))
    second = load_proposals(os.path.join(evaluated, "inference", "shapes_test", "proposals.npz"))
    assert first.image_ids == second.image_ids
    assert first.boxes.tolist() == second.boxes.tolist()


def test_a_new_run_into_a_finished_folder_is_refused(quickstart_run, tiny_shapes_root):
    out, _ = quickstart_run
    before = {n: os.path.getmtime(os.path.join(out, n)) for n in os.listdir(out)}
    proc = run(["tools/train_net.py", "--config-file", "configs/quickstart/shapes.yaml",
                *SHORT, "OUTPUT_DIR", out], tiny_shapes_root, check=False)
    assert proc.returncode == 1
    assert "holds a finished run (model_final.pth)" in proc.stderr
    assert "--resume" in proc.stderr and "--overwrite" in proc.stderr
    assert "Traceback" not in proc.stderr  # the message, not the frames
    after = {n: os.path.getmtime(os.path.join(out, n)) for n in os.listdir(out)}
    assert after == before  # not a file written, not even the log or config.yaml


def test_divergence_stops_with_a_message_and_finite_checkpoints(tiny_shapes_root, tmp_path):
    # lr 1e4 makes the weights non-finite within a step; a checkpoint every iteration.
    out = str(tmp_path / "diverged")
    args = ["tools/train_net.py", "--config-file", "configs/quickstart/shapes.yaml", *SHORT,
            "SOLVER.BASE_LR", "1e4", "SOLVER.WARMUP_ITERS", "0", "SOLVER.CHECKPOINT_PERIOD",
            "1", "SOLVER.MAX_ITER", "6", "TEST.EVAL_PERIOD", "0", "OUTPUT_DIR", out]
    proc = run(args, tiny_shapes_root, check=False)
    assert proc.returncode == 1, proc.stderr
    assert "Error (FloatingPointError)" in proc.stderr
    assert "Traceback" not in proc.stderr  # the message and what to do, not the frames
    assert "Traceback" in open(os.path.join(out, "log.txt")).read()  # kept in the log
    import torch

    from detkit.checkpoint import non_finite_tensors

    saved = [n for n in os.listdir(out) if n.endswith(".pth")]
    for name in saved:  # every checkpoint written holds finite weights
        state = torch.load(os.path.join(out, name), weights_only=True)["model"]
        assert non_finite_tensors(state) == [], name
    if saved:
        assert open(os.path.join(out, "last_checkpoint")).read().strip() in saved
    assert not os.path.exists(os.path.join(out, "model_final.pth"))
    assert "Evaluation" not in proc.stdout + proc.stderr  # nothing evaluated after a crash
