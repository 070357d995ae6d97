"""detkit.engine.sweep and tools/sweep.py: commands built, placeholders, resumption, failures,
tables and validation, with a fake training script whose summary.json is derived from its
options (mAP@0.5 = SOLVER.BASE_LR + SEED / 100); then one real sweep of two 2-iteration
quickstart variants through tools/train_net.py."""

from __future__ import annotations

import json
import os
import re
import shlex
import sys

import pytest
import yaml

from detkit.engine.sweep import (
    SweepError,
    build_command,
    exit_code,
    load_sweep,
    lookup,
    main,
    parse_sweep,
    plan_runs,
    plot_results,
    run_state,
    run_sweep,
    substitute,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Parses train_net's arguments; records each call in <sweep dir>/calls.txt.
FAKE_TOOL = r"""
import argparse, json, os, sys
parser = argparse.ArgumentParser()
parser.add_argument("--config-file", required=True)
parser.add_argument("--resume", action="store_true")
parser.add_argument("--eval-only", action="store_true")
parser.add_argument("opts", nargs=argparse.REMAINDER)
args = parser.parse_args()
opts = dict(zip(args.opts[0::2], args.opts[1::2]))
out = opts["OUTPUT_DIR"]
os.makedirs(out, exist_ok=True)
with open(os.path.join(os.path.dirname(out), "calls.txt"), "a") as f:
    f.write(json.dumps({"run": os.path.basename(out), "argv": sys.argv[1:]}) + "\n")
print("fake tool in", out)
seed = int(opts.get("SEED", "0"))
if opts.get("FAKE.FAIL") == "1" or opts.get("FAKE.FAIL_SEED") == str(seed):
    print("boom: loss diverged")
    sys.exit(3)
if opts.get("FAKE.CRASH") == "1" and not args.resume:
    with open(os.path.join(out, "last_checkpoint"), "w") as f:
        f.write("model_0000001.pth")
    print("crashed half-way")
    sys.exit(1)
lr = float(opts.get("SOLVER.BASE_LR", "0.1"))
summary = {"mAP@0.5": round(lr + seed / 100, 4), "training_time_s": 1000 * lr,
           "iterations": 4, "nested": {"AR@100": 0.5}, "resumed": args.resume}
with open(os.path.join(out, "summary.json"), "w") as f:
    json.dump(summary, f)
"""


def variant(name, lr=None, **fields):
    opts = ["SOLVER.BASE_LR", str(lr)] if lr is not None else []
    return {"name": name, "tool": "fake_tool.py", "opts": opts + fields.pop("opts", []), **fields}


def write_sweep(tmp_path, variants, filename="sweep.yaml", **top) -> str:
    """The sweep file (and the fake tool and base config) in tmp_path; returns its path."""
    (tmp_path / "fake_tool.py").write_text(FAKE_TOOL, encoding="utf-8")
    (tmp_path / "base.yaml").write_text("SOLVER: {}\n", encoding="utf-8")
    data = {
        "name": "test",
        "config_file": "base.yaml",
        "output_dir": "out",
        "columns": [{"key": "mAP@0.5", "format": ".3f"}],
        "variants": variants,
        **top,
    }
    path = tmp_path / filename
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return str(path)


def make_sweep(tmp_path, variants, **top):
    return load_sweep(write_sweep(tmp_path, variants, **top), base_dir=str(tmp_path))


def calls(tmp_path, out="out"):
    path = tmp_path / out / "calls.txt"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def tables(markdown: str) -> dict[str, list[list[str]]]:
    """{"## heading": rows (header first, separator dropped)} of a results.md."""
    result: dict[str, list[list[str]]] = {}
    heading = None
    for line in markdown.splitlines():
        if line.startswith("## "):
            heading = line[3:]
            result[heading] = []
        elif line.startswith("| ") and heading and not line.startswith("| ---"):
            result[heading].append([c.strip() for c in line[2:-2].split(" | ")])
    return result


def quiet(messages: list[str]):
    return messages.append


def test_exact_command_line_and_placeholders(tmp_path):
    sweep = make_sweep(
        tmp_path,
        [
            variant(
                "a",
                eval_only=True,
                opts=["MODEL.WEIGHTS", "{sweep_dir}/w_{seed}.pth", "X.DIR", "{run_dir}/x"],
            ),
            variant("b", 0.5),
        ],
        opts=["SOLVER.MAX_ITER", 10],
        seeds=[3, 4],
    )
    out = str(tmp_path / "out")
    runs = plan_runs(sweep)
    assert [r.run_dir for r in runs] == [
        os.path.join(out, f) for f in ("a_seed3", "a_seed4", "b_seed3", "b_seed4")
    ]
    head = [
        sys.executable,
        str(tmp_path / "fake_tool.py"),
        "--config-file",
        str(tmp_path / "base.yaml"),
    ]
    assert build_command(sweep, runs[1], resume=True) == head + [
        "--eval-only",
        "SOLVER.MAX_ITER",
        "10",  # no --resume for an evaluation
        "MODEL.WEIGHTS",
        f"{out}/w_4.pth",
        "X.DIR",
        f"{out}/a_seed4/x",
        "OUTPUT_DIR",
        f"{out}/a_seed4",
        "SEED",
        "4",
    ]
    assert build_command(sweep, runs[2], resume=True) == head + [
        "--resume",
        "SOLVER.MAX_ITER",
        "10",
        "SOLVER.BASE_LR",
        "0.5",
        "OUTPUT_DIR",
        f"{out}/b_seed3",
        "SEED",
        "3",
    ]
    # Only the three placeholders are replaced: other braces are config values.
    text = "{sweep_dir}|{run_dir}|{seed}|{x}|[8, 16]|{a: 1}"
    assert substitute(text, "S", "R", 7) == "S|R|7|{x}|[8, 16]|{a: 1}"


def test_placeholders_in_before_commands_and_creates(tmp_path):
    write_file = "import sys; open(sys.argv[1], 'w').write(sys.argv[2])"
    before = [
        {
            "run": ["python", "-c", write_file, "{sweep_dir}/pre_{seed}.txt", "{run_dir}"],
            "creates": "{sweep_dir}/pre_{seed}.txt",
        }
    ]
    sweep = make_sweep(
        tmp_path,
        [variant("a", 0.1, before=before, opts=["DATA.FILE", "{sweep_dir}/pre_{seed}.txt"])],
        seeds=[0, 1],
    )
    runs = run_sweep(sweep, echo=quiet([]))
    assert [r.status for r in runs] == ["ok", "ok"]
    out = tmp_path / "out"
    for seed in (0, 1):
        assert (out / f"pre_{seed}.txt").read_text() == str(out / f"a_seed{seed}")
    assert [c["argv"][-5] for c in calls(tmp_path)] == [
        str(out / "pre_0.txt"),
        str(out / "pre_1.txt"),
    ]
    # Run again from scratch: the before-command's output exists, so it is skipped.
    (out / "pre_1.txt").write_text("kept")
    run_sweep(sweep, force=["a"], echo=quiet([]))
    assert (out / "pre_1.txt").read_text() == "kept"
    assert "before[0] skipped" in (out / "a_seed1" / "sweep.log").read_text()


def test_finished_runs_are_skipped_and_forced_ones_rerun(tmp_path):
    sweep = make_sweep(tmp_path, [variant("a", 0.1), variant("b", 0.2)])
    run_sweep(sweep, echo=quiet([]))
    assert [c["run"] for c in calls(tmp_path)] == ["a", "b"]
    for name in ("a", "b"):
        (tmp_path / "out" / name / "marker").write_text("x")
    messages: list[str] = []
    runs = run_sweep(sweep, echo=quiet(messages))
    assert len(calls(tmp_path)) == 2  # nothing ran again
    assert [(r.status, r.reused, r.summary["mAP@0.5"]) for r in runs] == [
        ("ok", True, 0.1),
        ("ok", True, 0.2),
    ]
    assert sum("skipped" in m for m in messages) == 2
    rows = tables((tmp_path / "out" / "results.md").read_text())["Results"]
    assert [row[:2] for row in rows[1:]] == [["a", "0.100"], ["b", "0.200"]]
    # --force b: only b runs again, from an empty folder; --only a runs nothing.
    run_sweep(sweep, only=["b"], force=["b"], echo=quiet([]))
    assert [c["run"] for c in calls(tmp_path)] == ["a", "b", "b"]
    assert (tmp_path / "out" / "a" / "marker").exists()
    assert not (tmp_path / "out" / "b" / "marker").exists()
    run_sweep(sweep, only=["a"], echo=quiet([]))
    assert len(calls(tmp_path)) == 3


def test_interrupted_run_resumes_and_one_without_checkpoint_starts_again(tmp_path):
    sweep = make_sweep(
        tmp_path, [variant("crashy", 0.3, opts=["FAKE.CRASH", "1"]), variant("fresh", 0.4)]
    )
    leftover = tmp_path / "out" / "fresh" / "metrics.json"
    leftover.parent.mkdir(parents=True)
    leftover.write_text("{}\n")  # a run that died before its first checkpoint
    runs = run_sweep(sweep, echo=quiet([]))
    assert [r.status for r in runs] == ["failed", "ok"] and exit_code(runs) == 1
    assert "--resume" not in runs[1].command and leftover.exists()  # only --force deletes
    assert (tmp_path / "out" / "crashy" / "last_checkpoint").exists()
    runs = run_sweep(sweep, echo=quiet([]))
    assert [r.status for r in runs] == ["ok", "ok"] and exit_code(runs) == 0
    assert runs[0].resumed and runs[0].command[4] == "--resume"
    assert runs[0].summary["resumed"] is True and runs[1].reused
    log = (tmp_path / "out" / "crashy" / "sweep.log").read_text()
    assert "crashed half-way" in log and log.count("=== ") == 2  # appended, not replaced


def test_run_state_finds_checkpoints_of_multi_step_schedules(tmp_path):
    assert run_state(str(tmp_path / "absent")) == "fresh"
    (tmp_path / "step2_fast_rcnn").mkdir()
    assert run_state(str(tmp_path)) == "fresh"
    (tmp_path / "step2_fast_rcnn" / "last_checkpoint").write_text("model_0000009.pth")
    assert run_state(str(tmp_path)) == "resume"  # e.g. SOLVER.SCHEME alternating
    (tmp_path / "summary.json").write_text("{}")
    assert run_state(str(tmp_path)) == "done"


def test_failure_is_recorded_the_sweep_goes_on_and_exits_nonzero(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_sweep(tmp_path, [variant("bad", 0.1, opts=["FAKE.FAIL", "1"]), variant("good", 0.2)])
    assert main(["sweep.yaml"]) == 1
    console = capsys.readouterr().out
    assert "[1/2] bad: FAILED" in console and "[2/2] good: ok in" in console
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    bad, good = results["runs"]
    assert bad["status"] == "failed" and "fake_tool.py exited with code 3" in bad["error"]
    assert "boom: loss diverged" in bad["log_tail"] and bad["summary"] is None
    assert good["status"] == "ok" and good["summary"]["mAP@0.5"] == 0.2
    assert results["command"] == "python tools/sweep.py sweep.yaml"
    markdown = (tmp_path / "out" / "results.md").read_text()
    rows = tables(markdown)["Results"]
    assert rows[1] == ["bad", "—", "—", "failed"] and rows[2] == ["good", "0.200", "—", "ok"]
    assert "boom: loss diverged" in markdown.split("## Failures")[1]
    # --stop-on-error: the runs after the failure are not started.
    write_sweep(
        tmp_path,
        [variant("bad", 0.1, opts=["FAKE.FAIL", "1"]), variant("good", 0.2)],
        filename="stop.yaml",
        output_dir="out2",
    )
    assert main(["stop.yaml", "--stop-on-error"]) == 1
    assert [c["run"] for c in calls(tmp_path, "out2")] == ["bad"]
    rows = tables((tmp_path / "out2" / "results.md").read_text())["Results"]
    assert [row[-1] for row in rows[1:]] == ["failed", "not run"]


def test_groups_give_separate_tables_with_formatted_values(tmp_path):
    columns = [
        {"key": "mAP@0.5", "format": ".3f"},
        {"key": "training_time_s", "label": "train time (s)", "format": ".0f"},
        {"key": "nested.AR@100", "label": "AR@100", "format": ".2f"},
        {"key": "not_reported", "label": "missing"},
    ]
    sweep = make_sweep(
        tmp_path,
        [
            variant("a", 0.02, group="Learning rate", description="base lr 0.02", reference=69.9),
            variant("b", 0.5, group="Schedule"),
            variant("c", 0.04, group="Learning rate"),
        ],
        columns=columns,
        reference_label="paper",
        plot={"key": "mAP@0.5", "label": "mAP"},
    )
    runs = run_sweep(sweep, echo=quiet([]))
    found = tables((tmp_path / "out" / "results.md").read_text())
    header = [
        "variant",
        "description",
        "mAP@0.5",
        "train time (s)",
        "AR@100",
        "missing",
        "paper",
        "seed",
        "status",
    ]
    assert found == {
        "Learning rate": [
            header,
            ["a", "base lr 0.02", "0.020", "20", "0.50", "—", "69.9", "—", "ok"],
            ["c", "", "0.040", "40", "0.50", "—", "", "—", "ok"],
        ],
        "Schedule": [header, ["b", "", "0.500", "500", "0.50", "—", "", "—", "ok"]],
    }
    png = tmp_path / "out" / "results.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_results(sweep, runs, str(tmp_path / "again.png")) == {
        "Learning rate": [("a", 0.02), ("c", 0.04)],
        "Schedule": [("b", 0.5)],
    }


def test_several_seeds_give_the_mean_and_each_value(tmp_path):
    sweep = make_sweep(
        tmp_path, [variant("a", 0.1), variant("b", 0.2, opts=["FAKE.FAIL_SEED", "2"])], seeds=[0, 2]
    )
    runs = run_sweep(sweep, echo=quiet([]))
    assert [os.path.basename(r.run_dir) for r in runs] == [
        "a_seed0",
        "a_seed2",
        "b_seed0",
        "b_seed2",
    ]
    assert [c["argv"][-1] for c in calls(tmp_path)] == ["0", "2", "0", "2"]
    rows = tables((tmp_path / "out" / "results.md").read_text())["Results"]
    # mAP = lr + seed / 100: a gives 0.10 and 0.12, mean 0.11; b's seed 2 failed.
    assert rows[1] == ["a", "0.110 (0.100, 0.120)", "0, 2", "ok"]
    assert rows[2] == ["b", "0.200 (0.200, —)", "0, 2", "failed (seed 2)"]


def test_missing_output_of_an_earlier_variant_fails_clearly(tmp_path):
    # The fake tool writes no model: summary.json stands for the file 'eval' needs.
    weights = "{sweep_dir}/joint_seed{seed}/summary.json"
    sweep = make_sweep(
        tmp_path,
        [
            variant("joint", 0.1, opts=["FAKE.FAIL_SEED", "1"]),
            variant("eval", eval_only=True, opts=["MODEL.WEIGHTS", weights]),
        ],
        seeds=[0, 1],
    )
    runs = run_sweep(sweep, echo=quiet([]))
    assert [r.status for r in runs] == ["ok", "failed", "ok", "failed"]
    missing = f"{tmp_path}/out/joint_seed1/summary.json"
    assert f"MODEL.WEIGHTS {missing} does not exist" in runs[3].error
    assert "it should come from variant 'joint', which failed" in runs[3].error
    # The tool never ran for eval's seed 1.
    assert [c["run"] for c in calls(tmp_path)] == ["joint_seed0", "joint_seed1", "eval_seed0"]


def test_dry_run_prints_commands_and_runs_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_sweep(tmp_path, [variant("a", 0.1)])
    assert main(["sweep.yaml", "--dry-run"]) == 0
    sweep = load_sweep("sweep.yaml")
    command = shlex.join(build_command(sweep, plan_runs(sweep)[0]))
    assert command in capsys.readouterr().out
    assert not (tmp_path / "out").exists()
    assert main(["sweep.yaml", "--only", "A"]) == 2
    assert "--only A: no such variant" in capsys.readouterr().err


def test_lookup_reads_dotted_keys_and_nested_paths():
    summary = {"mAP@0.5": 0.9, "bbox": {"AP50": 0.85, "per.class": {"circle": 1}}}
    assert lookup(summary, "mAP@0.5") == 0.9
    assert lookup(summary, "bbox.AP50") == 0.85
    assert lookup(summary, "bbox.per.class.circle") == 1
    assert lookup(summary, "bbox.AP75") is None and lookup(None, "x") is None


BAD_VARIANTS = [
    ({"name": "a b"}, "variant 'a b', field 'name': use only letters"),
    ({"name": "a", "opts": ["X", "1", "Y"]}, "variant 'a', field 'opts': expected KEY VALUE"),
    ({"name": "a", "optz": []}, "variant 'a', field 'optz': unknown field; did you mean 'opts'"),
    (
        {"name": "a", "opts": ["X", "{sweepdir}/w"]},
        "variant 'a', field 'opts[1]': unknown placeholder {sweepdir}",
    ),
    ({"name": "a", "opts": ["X", "{seed}"]}, "variant 'a', field 'opts[1]': '{seed}' uses {seed}"),
    ({"name": "a", "opts": ["OUTPUT_DIR", "x"]}, "variant 'a', field 'opts[0]': OUTPUT_DIR is set"),
    ({"name": "a", "config_file": "nope.yaml"}, "variant 'a', field 'config_file': file not found"),
    ({"name": "a", "eval_only": "yes"}, "variant 'a', field 'eval_only': expected true or false"),
    (
        {"name": "a", "before": [{"run": "python x.py"}]},
        "variant 'a', field 'before[0].run': expected a non-empty list",
    ),
]


@pytest.mark.parametrize("bad, expected", BAD_VARIANTS)
def test_validation_errors_name_file_variant_and_field(tmp_path, bad, expected):
    path = write_sweep(tmp_path, [bad])
    with pytest.raises(SweepError) as error:
        load_sweep(path, base_dir=str(tmp_path))
    assert f"{path}: {expected}" in str(error.value)


def test_validation_lists_every_problem_at_once(tmp_path):
    path = write_sweep(
        tmp_path,
        [
            {"name": "a", "opts": ["MODEL.WEIGHTS", "{sweep_dir}/b/model_final.pth"]},
            {"name": "b"},
            {"name": "b"},
        ],
        columns=[{"key": "mAP@0.5", "format": ".3q"}],
    )
    with pytest.raises(SweepError) as error:
        load_sweep(path, base_dir=str(tmp_path))
    message = str(error.value)
    assert message.startswith(f"3 problem(s) in the sweep file {path}")
    assert f"{path}: field 'columns[0].format': '.3q' is not a Python number format" in message
    assert f"{path}: variant 'b', field 'name': used by an earlier variant" in message
    assert (
        f"{path}: variant 'a', field 'opts': '{{sweep_dir}}/b/model_final.pth' uses the "
        "outputs of variant 'b', which comes later in the file"
    ) in message
    path = write_sweep(
        tmp_path,
        [{"name": "a", "opts": ["W", "{sweep_dir}/b_seed{seed}/m.pth"]}, {"name": "b"}],
        seeds=[0, 1],
    )
    with pytest.raises(SweepError, match="move 'b' before 'a'"):
        load_sweep(path, base_dir=str(tmp_path))
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n")
    with pytest.raises(SweepError, match="broken.yaml: not valid YAML"):
        load_sweep(str(tmp_path / "broken.yaml"))
    with pytest.raises(SweepError, match="problem"):
        parse_sweep({"name": "x", "output_dir": "o", "variants": []}, "x.yaml", str(tmp_path))


def test_the_example_of_docs_sweeps_md_is_valid():
    markdown = open(os.path.join(ROOT, "docs", "sweeps.md"), encoding="utf-8").read()
    (block,) = re.findall(r"^```yaml\n(.*?)^```$", markdown, flags=re.S | re.M)
    sweep = parse_sweep(yaml.safe_load(block), "docs/sweeps.md", base_dir=ROOT)
    runs = plan_runs(sweep)
    assert [os.path.basename(r.run_dir) for r in runs[-2:]] == [
        "lr_0.06_100_proposals_seed0",
        "lr_0.06_100_proposals_seed1",
    ]
    command = build_command(sweep, runs[-1], resume=True)
    out = os.path.join(ROOT, "output", "sweeps", "quickstart_lr")
    assert command[4] == "--eval-only" and "--resume" not in command
    assert command[command.index("MODEL.WEIGHTS") + 1] == f"{out}/lr_0.06_seed1/model_final.pth"
    assert command[-2:] == ["SEED", "1"]


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
]  # as in tests/tools/test_train_net.py


def test_end_to_end_two_quickstart_variants_through_train_net(
    tiny_shapes_root, tmp_path, monkeypatch
):
    monkeypatch.setenv("DETKIT_DATASETS", tiny_shapes_root)
    data = {
        "name": "e2e",
        "config_file": "configs/quickstart/shapes.yaml",
        "output_dir": str(tmp_path / "sweep"),
        "opts": [*SHORT, "SOLVER.MAX_ITER", "2", "TEST.EVAL_PERIOD", "0"],
        "columns": [{"key": "mAP@0.5", "format": ".4f"}, {"key": "iterations"}],
        "variants": [
            {"name": "lr_0.06", "opts": ["SOLVER.BASE_LR", "0.06"]},
            {"name": "lr_0.02", "opts": ["SOLVER.BASE_LR", "0.02"]},
        ],
    }
    runs = run_sweep(parse_sweep(data, "e2e.yaml", base_dir=ROOT), echo=quiet([]))
    assert [r.status for r in runs] == ["ok", "ok"], [r.log_tail for r in runs]
    rows = tables((tmp_path / "sweep" / "results.md").read_text())["Results"]
    for row, name in zip(rows[1:], ("lr_0.06", "lr_0.02")):
        with open(tmp_path / "sweep" / name / "summary.json") as f:
            summary = json.load(f)
        assert row == [name, f"{summary['mAP@0.5']:.4f}", "2", "—", "ok"]
        assert summary["evaluator"] == "voc" and summary["unit"] == "fraction"
