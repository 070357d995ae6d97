"""tools/train_net.py and tools/demo.py as a user runs them: a short quickstart run on a
tiny shapes dataset, a resume, an evaluation-only run and the demo."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# MODEL.MEMORY_FORMAT measure may pick different layouts for training and for inference
# (each the faster for its mode). Their float rounding differs, and after a few iterations
# an RPN's scores are close enough for that to reorder its proposals: a test that compares
# two runs' outputs exactly fixes the layout.
ONE_LAYOUT = ["MODEL.MEMORY_FORMAT", "contiguous"]

SHORT = [
    "SOLVER.MAX_ITER",
    "4",
    "SOLVER.STEPS",
    "[3]",
    "SOLVER.WARMUP_ITERS",
    "2",
    "SOLVER.CHECKPOINT_PERIOD",
    "2",
    "SOLVER.IMS_PER_BATCH",
    "2",
    "TEST.EVAL_PERIOD",
    "2",
    "MODEL.TINY.CHANNELS",
    "[8, 16, 16, 32]",
    "DATALOADER.NUM_WORKERS",
    "1",
]


def run(args, datasets_root, check=True, pythonpath=None):
    env = {**os.environ, "DETKIT_DATASETS": datasets_root}
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [pythonpath, env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    if check and proc.returncode != 0:
        pytest.fail(
            f"{args} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


@pytest.fixture(scope="module")
def quickstart_run(tiny_shapes_root, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("quickstart"))
    proc = run(
        [
            "tools/train_net.py",
            "--config-file",
            "configs/quickstart/shapes.yaml",
            *SHORT,
            "OUTPUT_DIR",
            out,
        ],
        tiny_shapes_root,
    )
    return out, proc


def test_quickstart_short_run_writes_everything(quickstart_run):
    out, proc = quickstart_run
    for name in (
        "config.yaml",
        "metrics.json",
        "curves.png",
        "model_final.pth",
        "last_checkpoint",
        "summary.json",
        "log.txt",
    ):
        assert os.path.isfile(os.path.join(out, name)), name
    summary = json.load(open(os.path.join(out, "summary.json")))
    assert summary["iterations"] == 4 and 0.0 <= summary["mAP@0.5"] <= 1.0
    # shapes is evaluated with the VOC 2007 metric; the summary says so.
    assert (summary["evaluator"], summary["metric"], summary["voc_metric"], summary["unit"]) == (
        "voc",
        "mAP@0.5",
        "11-point",
        "fraction",
    )
    assert f"Final VOC mAP@0.5 (11-point) on shapes_test: {summary['mAP@0.5']:.3f}" in proc.stdout
    lines = [json.loads(line) for line in open(os.path.join(out, "metrics.json"))]
    evaluated = sorted({r["iteration"] for r in lines if "bbox/AP50" in r})
    assert evaluated == [1, 3]  # TEST.EVAL_PERIOD 2 and the end
    # metrics.json (the EvalHook) and summary.json hold the final mAP@0.5 (the summary
    # rounded to 4 decimals), as does the evaluator's own file. After 4 iterations it is
    # about 0, the same in any unit: test_metrics_json_and_summary_hold_the_same_map_as_
    # fractions checks the unit with a known mAP.
    final = [r["bbox/AP50"] for r in lines if "bbox/AP50" in r][-1]
    assert summary["mAP@0.5"] == pytest.approx(final, abs=5e-5)
    voc = json.load(open(os.path.join(out, "inference", "shapes_test", "voc_metrics.json")))
    assert voc["unit"] == "fraction" and voc["bbox"]["AP50"] == pytest.approx(final)
    assert any("loss_rpn_cls" in r and "lr" in r and "time" in r for r in lines)
    # The merged config written at start loads back into the same values.
    from detkit.config import get_cfg

    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(out, "config.yaml"))
    assert cfg.SOLVER.MAX_ITER == 4 and cfg.OUTPUT_DIR == out


# A detector that learns nothing: at inference it returns, exactly, the ground truth of the
# test images at even positions of the dataset and nothing on the others.
ORACLE_PLUGIN = """
import torch
from torch import nn

from detkit.data import DatasetCatalog
from detkit.modeling import META_ARCH_REGISTRY
from detkit.structures import Boxes, Instances


@META_ARCH_REGISTRY.register()
class EvenImagesOracle(nn.Module):
    output_kind = "instances"
    num_classes_key = None

    def __init__(self, truth, legacy_plus_one):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1))
        self.truth, self.legacy_plus_one = truth, legacy_plus_one

    @classmethod
    def from_config(cls, cfg, node, input_shape=None):
        records = [r for name in cfg.DATASETS.TEST for r in DatasetCatalog.get(name)]
        truth = {r["image_id"]: r["annotations"] if k % 2 == 0 else []
                 for k, r in enumerate(records)}
        return {"truth": truth, "legacy_plus_one": cfg.MODEL.LEGACY_PLUS_ONE}

    def forward(self, batched_inputs):
        if self.training:
            return {"loss_oracle": ((self.weight - 1) ** 2).sum()}
        outputs = []
        for inp in batched_inputs:
            annotations = self.truth[inp["image_id"]]
            instances = Instances((inp["height"], inp["width"]))
            boxes = torch.tensor([a["bbox"] for a in annotations]).reshape(-1, 4)
            instances.pred_boxes = Boxes(boxes, self.legacy_plus_one)
            instances.scores = torch.full((len(annotations),), 0.9)
            instances.pred_classes = torch.tensor([a["category_id"] for a in annotations],
                                                  dtype=torch.int64)
            outputs.append({"instances": instances})
        return outputs
"""


def eleven_point_map_of_even_images(dataset_name: str) -> float:
    """VOC07 11-point mAP@0.5 when exactly the objects of the images at even positions are
    found (precision 1 up to each class's recall): the devkit's mean over the recall levels
    ``np.arange(0, 1.1, 0.1)`` of the precision, 1 where the recall reaches them; a class
    without detections has none to take a precision from, AP 0."""
    import numpy as np

    from detkit.data import DatasetCatalog

    found: dict[int, int] = {}
    total: dict[int, int] = {}
    for k, record in enumerate(DatasetCatalog.get(dataset_name)):
        for ann in record["annotations"]:
            if not ann.get("difficult", False):
                total[ann["category_id"]] = total.get(ann["category_id"], 0) + 1
                found[ann["category_id"]] = found.get(ann["category_id"], 0) + (k % 2 == 0)
    levels = np.arange(0.0, 1.1, 0.1)
    return float(
        np.mean([(levels <= found[c] / total[c]).mean() if found[c] else 0.0 for c in total])
    )


def test_metrics_json_and_summary_hold_the_same_map_as_fractions(
    tiny_shapes, tiny_shapes_root, tmp_path
):
    # Half the test images found exactly: 0 < mAP@0.5 < 1, the same number in metrics.json
    # (written by the EvalHook) and summary.json; a percent anywhere would be 100 times it.
    # tiny_shapes registers, in this process, the files the run reads as shapes_test.
    (tmp_path / "oracle_plugin.py").write_text(ORACLE_PLUGIN)
    out = tmp_path / "out"
    proc = run(
        [
            "tools/train_net.py",
            "--config-file",
            "configs/quickstart/shapes.yaml",
            *SHORT,
            "IMPORTS",
            "['oracle_plugin']",
            "MODEL.META_ARCHITECTURE",
            "EvenImagesOracle",
            "OUTPUT_DIR",
            str(out),
        ],
        tiny_shapes_root,
        pythonpath=str(tmp_path),
    )
    lines = [json.loads(line) for line in open(out / "metrics.json")]
    evaluations = [r for r in lines if "bbox/AP50" in r]
    assert [r["iteration"] for r in evaluations] == [1, 3]
    final = evaluations[-1]
    expected = eleven_point_map_of_even_images(tiny_shapes[1])
    assert 0.1 < expected < 0.9
    assert final["bbox/AP50"] == pytest.approx(expected, abs=1e-9)
    summary = json.load(open(out / "summary.json"))
    assert (summary["evaluator"], summary["metric"], summary["unit"]) == (
        "voc",
        "mAP@0.5",
        "fraction",
    )
    assert summary["mAP@0.5"] == pytest.approx(final["bbox/AP50"], abs=5e-5)
    assert summary["mAP@0.5_area"] == pytest.approx(final["bbox/AP50_area"], abs=5e-5)
    assert summary["AP@[.5:.95]"] == pytest.approx(final["bbox/AP"], abs=5e-5)
    # Exact boxes: every IoU threshold sees the same detections, so AP@[.5:.95] = AP50.
    assert summary["AP@[.5:.95]"] == pytest.approx(summary["mAP@0.5"], abs=1e-4)
    assert (
        f"Final VOC mAP@0.5 (11-point) on shapes_test: {final['bbox/AP50']:.3f} "
        f"(area {final['bbox/AP50_area']:.3f}, AP@[.5:.95] {final['bbox/AP']:.3f})"
    ) in proc.stdout


def test_resume_continues_from_last_checkpoint(quickstart_run, tiny_shapes_root):
    out, _ = quickstart_run
    args = [
        "tools/train_net.py",
        "--config-file",
        "configs/quickstart/shapes.yaml",
        "--resume",
        *SHORT,
        "OUTPUT_DIR",
        out,
        "SOLVER.MAX_ITER",
        "6",
        "TEST.EVAL_PERIOD",
        "0",
    ]
    proc = run(args, tiny_shapes_root)
    assert "Resuming at iteration 4" in proc.stdout
    lines = [json.loads(line) for line in open(os.path.join(out, "metrics.json"))]
    # Writers run every 20 iterations and at the end: the resumed run ends at iteration 5.
    assert max(r["iteration"] for r in lines) == 5


def test_eval_only_and_demo(quickstart_run, tiny_shapes_root, tmp_path):
    out, _ = quickstart_run
    weights = os.path.join(out, "model_final.pth")
    proc = run(
        [
            "tools/train_net.py",
            "--config-file",
            "configs/quickstart/shapes.yaml",
            "--eval-only",
            "MODEL.WEIGHTS",
            weights,
            "OUTPUT_DIR",
            str(tmp_path / "eval"),
            "MODEL.TINY.CHANNELS",
            "[8, 16, 16, 32]",
        ],
        tiny_shapes_root,
    )
    assert "copypaste: bbox: AP,AP50,AP75" in proc.stdout
    summary = json.load(open(tmp_path / "eval" / "summary.json"))
    assert summary["eval_only"] and summary["evaluator"] == "voc"
    assert summary["metric"] == "mAP@0.5" and summary["unit"] == "fraction"
    assert f"VOC mAP@0.5 (11-point) on shapes_test: {summary['mAP@0.5']:.3f}" in proc.stdout
    demo_out = tmp_path / "demo"
    run(
        [
            "tools/demo.py",
            "--config-file",
            "configs/quickstart/shapes.yaml",
            "--dataset",
            "shapes_test",
            "--max-images",
            "2",
            "--score-thresh",
            "0.0",
            "--output",
            str(demo_out),
            "MODEL.WEIGHTS",
            weights,
            "MODEL.TINY.CHANNELS",
            "[8, 16, 16, 32]",
        ],
        tiny_shapes_root,
    )
    records = json.load(open(demo_out / "detections.json"))
    assert len(records) == 2
    assert sorted(p.name for p in demo_out.glob("*.png")) == ["test_000000.png", "test_000001.png"]
    for record in records:
        for det in record["detections"]:
            assert det["class_name"] in ("circle", "square", "triangle")


def test_unknown_key_on_the_command_line_fails_clearly(tiny_shapes_root):
    proc = run(
        [
            "tools/train_net.py",
            "--config-file",
            "configs/quickstart/shapes.yaml",
            "SOLVER.MAX_ITR",
            "4",
        ],
        tiny_shapes_root,
        check=False,
    )
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
    run(
        [
            "tools/train_net.py",
            "--config-file",
            config_file,
            "--num-gpus",
            "2",
            *SHORT,
            "TEST.EVAL_PERIOD",
            "0",
            "OUTPUT_DIR",
            out,
        ],
        tiny_shapes_root,
    )
    log = open(os.path.join(out, "log.txt")).read()
    assert "Rank 0 of 2" in log  # really distributed (rank 1 logs to the console only)
    with open(os.path.join(out, "last_checkpoint")) as f:
        assert f.read().strip() == "model_final.pth"
    assert "Training: 4 iterations" in log


def test_rpn_only_config_trains_evaluates_recall_and_writes_proposals(tiny_shapes_root, tmp_path):
    # A ProposalNetwork config gets the proposal evaluator, not the VOC one (which has no
    # detections to score), and its evaluation writes the test set's proposals file.
    out = str(tmp_path / "rpn")
    proc = run(
        [
            "tools/train_net.py",
            "--config-file",
            "configs/quickstart/rpn_shapes.yaml",
            *SHORT,
            "TEST.EVAL_PERIOD",
            "0",
            *ONE_LAYOUT,
            "OUTPUT_DIR",
            out,
        ],
        tiny_shapes_root,
    )
    assert "Final Proposal recall on shapes_test: AR@50" in proc.stdout
    summary = json.load(open(os.path.join(out, "summary.json")))
    metrics = json.load(
        open(os.path.join(out, "inference", "shapes_test", "proposal_metrics.json"))
    )
    ar100 = metrics["average_recall"]["all"]["100"]  # a fraction in the evaluator's file too
    assert summary["AR@100"] == pytest.approx(round(ar100, 4))
    assert (summary["evaluator"], summary["metric"], summary["unit"]) == (
        "proposals",
        f"AR@{max(metrics['topk'])}",
        "fraction",
    )
    for name in ("proposals.npz", "recall_vs_iou.png", "recall_vs_proposals.png"):
        assert os.path.isfile(os.path.join(out, "inference", "shapes_test", name)), name
    # --eval-only of the trained RPN: summary and proposals again, without training.
    evaluated = str(tmp_path / "eval")
    run(
        [
            "tools/train_net.py",
            "--config-file",
            "configs/quickstart/rpn_shapes.yaml",
            "--eval-only",
            "MODEL.WEIGHTS",
            os.path.join(out, "model_final.pth"),
            "MODEL.TINY.CHANNELS",
            "[8, 16, 16, 32]",
            *ONE_LAYOUT,
            "OUTPUT_DIR",
            evaluated,
        ],
        tiny_shapes_root,
    )
    again = json.load(open(os.path.join(evaluated, "summary.json")))
    assert again["eval_only"] and again["AR@100"] == summary["AR@100"]
    assert again["evaluator"] == "proposals" and again["metric"] == summary["metric"]
    from detkit.data import load_proposals

    first = load_proposals(os.path.join(out, "inference", "shapes_test", "proposals.npz"))
    second = load_proposals(os.path.join(evaluated, "inference", "shapes_test", "proposals.npz"))
    assert first.image_ids == second.image_ids
    assert len(first.boxes) == len(second.boxes)
    for a, b in zip(first.boxes, second.boxes):
        np.testing.assert_array_equal(a, b)


def test_a_new_run_into_a_finished_folder_is_refused(quickstart_run, tiny_shapes_root):
    out, _ = quickstart_run
    before = {n: os.path.getmtime(os.path.join(out, n)) for n in os.listdir(out)}
    proc = run(
        [
            "tools/train_net.py",
            "--config-file",
            "configs/quickstart/shapes.yaml",
            *SHORT,
            "OUTPUT_DIR",
            out,
        ],
        tiny_shapes_root,
        check=False,
    )
    assert proc.returncode == 1
    assert "holds a finished run (model_final.pth)" in proc.stderr
    assert "--resume" in proc.stderr and "--overwrite" in proc.stderr
    assert "Traceback" not in proc.stderr  # the message, not the frames
    after = {n: os.path.getmtime(os.path.join(out, n)) for n in os.listdir(out)}
    assert after == before  # not a file written, not even the log or config.yaml


def test_divergence_stops_with_a_message_and_finite_checkpoints(tiny_shapes_root, tmp_path):
    # lr 1e4 makes the weights non-finite within a step; a checkpoint every iteration.
    out = str(tmp_path / "diverged")
    args = [
        "tools/train_net.py",
        "--config-file",
        "configs/quickstart/shapes.yaml",
        *SHORT,
        "SOLVER.BASE_LR",
        "1e4",
        "SOLVER.WARMUP_ITERS",
        "0",
        "SOLVER.CHECKPOINT_PERIOD",
        "1",
        "SOLVER.MAX_ITER",
        "6",
        "TEST.EVAL_PERIOD",
        "0",
        "OUTPUT_DIR",
        out,
    ]
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
