"""4-step alternating training, a few iterations per step on the tiny shapes dataset: one
loadable Faster R-CNN at the end whose backbone both heads share, and a resume that picks up
in the step where the run stopped."""

from __future__ import annotations

import json
import logging
import os

import pytest
import torch

from detkit.checkpoint import DetectionCheckpointer
from detkit.config import get_cfg
from detkit.data import DatasetCatalog, load_proposals
from detkit.engine.alternating import STEP_FOLDERS, AlternatingTrainer
from detkit.modeling import build_model


def alternating_cfg(train: str, test: str, output_dir: str):
    cfg = get_cfg()
    cfg.merge_from_file("configs/quickstart/shapes_alternating.yaml")
    cfg.merge_from_list(
        [
            "DATASETS.TRAIN",
            f"['{train}']",
            "DATASETS.TEST",
            f"['{test}']",
            "OUTPUT_DIR",
            output_dir,
            "MODEL.DEVICE",
            "cpu",
            "MODEL.TINY.CHANNELS",
            "[8, 8, 16, 16]",
            "MODEL.ROI_BOX_HEAD.FC_DIM",
            "16",
            "DATALOADER.NUM_WORKERS",
            "0",
            "SOLVER.WARMUP_ITERS",
            "1",
            "SOLVER.CHECKPOINT_PERIOD",
            "1",
            "TEST.EVAL_PERIOD",
            "0",
            "INPUT.MIN_SIZE_TEST",
            "128",
            "ALTERNATING.DUMP_POST_NMS_TOPK",
            "50",
            "MODEL.PRECOMPUTED_PROPOSALS.TOPK_TRAIN",
            "50",
            "SEED",
            "0",
        ]
    )
    for step in (1, 2, 3, 4):
        cfg.merge_from_list(
            [
                f"ALTERNATING.STEP{step}.MAX_ITER",
                "2",
                f"ALTERNATING.STEP{step}.STEPS",
                "[1]",
                f"ALTERNATING.STEP{step}.IMS_PER_BATCH",
                "2",
            ]
        )
    cfg.freeze()
    return cfg


def state(path: str) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


@pytest.fixture(scope="module")
def alternating_run(tiny_shapes, tmp_path_factory):
    train, test = tiny_shapes
    out = str(tmp_path_factory.mktemp("alternating"))
    cfg = alternating_cfg(train, test, out)
    results = AlternatingTrainer(cfg).train()
    return cfg, out, results


def test_each_step_has_its_folder_model_and_proposals(alternating_run, tiny_shapes):
    cfg, out, _ = alternating_run
    for folder in STEP_FOLDERS.values():
        for name in ("model_final.pth", "summary.json", "config.yaml", "metrics.json"):
            assert os.path.isfile(os.path.join(out, folder, name)), (folder, name)
    for rpn_step in (1, 3):
        for dataset in tiny_shapes:
            proposals = load_proposals(
                os.path.join(out, STEP_FOLDERS[rpn_step], "inference", dataset, "proposals.npz")
            )
            ids = [d["image_id"] for d in DatasetCatalog.get(dataset)]
            assert sorted(proposals.image_ids) == sorted(ids)
            assert max(proposals.counts) <= 50  # ALTERNATING.DUMP_POST_NMS_TOPK
    step3 = get_cfg()
    step3.merge_from_file(os.path.join(out, "step3_rpn", "config.yaml"))
    assert step3.MODEL.META_ARCHITECTURE == "ProposalNetwork"
    assert list(step3.MODEL.FROZEN_MODULES) == ["backbone"]
    assert step3.MODEL.WEIGHTS == os.path.join(out, "step2_fast_rcnn", "model_final.pth")
    step4 = get_cfg()
    step4.merge_from_file(os.path.join(out, "step4_fast_rcnn", "config.yaml"))
    assert step4.MODEL.PROPOSAL_GENERATOR.NAME == "PrecomputedProposals"
    assert list(step4.DATASETS.PROPOSAL_FILES_TRAIN) == [
        os.path.join(out, "step3_rpn", "inference", tiny_shapes[0], "proposals.npz")
    ]


def test_every_summary_names_its_evaluator_in_fractions(alternating_run):
    _, out, results = alternating_run
    summary = json.load(open(os.path.join(out, "summary.json")))
    assert (summary["evaluator"], summary["metric"], summary["unit"]) == (
        "voc",
        "mAP@0.5",
        "fraction",
    )
    assert summary["mAP@0.5"] == pytest.approx(results["bbox"]["AP50"], abs=5e-5)
    # RPN steps are summarized by proposal recall, detector steps by VOC mAP.
    expected = {1: "proposals", 2: "voc", 3: "proposals", 4: "voc"}
    for step, folder in STEP_FOLDERS.items():
        step_summary = json.load(open(os.path.join(out, folder, "summary.json")))
        assert step_summary["evaluator"] == expected[step], folder
        assert summary["steps"][folder]["evaluator"] == expected[step], folder
        assert step_summary["unit"] == "fraction"
    assert summary["unshared_mAP@0.5"] == summary["steps"]["step2_fast_rcnn"]["mAP@0.5"]


def test_the_final_model_shares_one_backbone_and_loads_like_any_other(alternating_run, caplog):
    cfg, out, results = alternating_run
    final = state(os.path.join(out, "model_final.pth"))
    steps = {s: state(os.path.join(out, f, "model_final.pth")) for s, f in STEP_FOLDERS.items()}
    backbone = [k for k in final if k.startswith("backbone.")]
    rpn = [k for k in final if k.startswith("proposal_generator.")]
    heads = [k for k in final if k.startswith("roi_heads.")]
    assert backbone and rpn and heads and len(backbone) + len(rpn) + len(heads) == len(final)
    # One backbone: step 2 trained it; steps 3 and 4 kept it frozen; both heads use it.
    for key in backbone:
        assert torch.equal(final[key], steps[2][key]), key
        assert torch.equal(steps[3][key], steps[4][key]), key
    # Step 1's backbone is another network (trained for proposals only).
    assert any(not torch.equal(steps[1][k], steps[2][k]) for k in backbone if "weight" in k)
    for key in rpn:
        assert torch.equal(final[key], steps[3][key]), key
    for key in heads:
        assert torch.equal(final[key], steps[4][key]), key
    # Step 4 fine-tuned step 2's detector layers.
    assert any(not torch.equal(steps[2][k], steps[4][k]) for k in heads)
    # The config's own model (GeneralizedRCNN + RPN) takes every tensor, nothing left over.
    model = build_model(cfg)
    with caplog.at_level(logging.WARNING):
        DetectionCheckpointer(model, save_to_disk=False).load(os.path.join(out, "model_final.pth"))
    assert "not in the checkpoint" not in caplog.text and "not used" not in caplog.text
    assert "AP50" in results["bbox"]


def test_resume_skips_finished_steps_and_continues_the_interrupted_one(
    alternating_run, tiny_shapes, caplog
):
    cfg, out, _ = alternating_run
    step4 = os.path.join(out, "step4_fast_rcnn")
    # As if killed after step 4's first iteration: its checkpoint of iteration 0 is the last.
    for name in ("summary.json", "model_final.pth"):
        os.remove(os.path.join(step4, name))
    with open(os.path.join(step4, "last_checkpoint"), "w") as f:
        f.write("model_0000000.pth")
    step1_model = os.path.join(out, "step1_rpn", "model_final.pth")
    mtime = os.path.getmtime(step1_model)
    with caplog.at_level(logging.INFO, logger="detkit"):
        AlternatingTrainer(cfg).train(resume=True)
    for step in (1, 2, 3):
        assert f"Alternating step {step} ({STEP_FOLDERS[step]}) already done" in caplog.text
    assert "Resuming at iteration 1" in caplog.text
    assert os.path.getmtime(step1_model) == mtime
    assert os.path.isfile(os.path.join(step4, "model_final.pth"))


def test_alternating_needs_a_faster_rcnn_config(tiny_shapes, tmp_path):
    cfg = alternating_cfg(*tiny_shapes, str(tmp_path)).clone()
    cfg.defrost()
    cfg.MODEL.META_ARCHITECTURE = "ProposalNetwork"
    with pytest.raises(ValueError, match="MODEL.META_ARCHITECTURE must be GeneralizedRCNN"):
        AlternatingTrainer(cfg)
    cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    cfg.ALTERNATING.STEP2.OPTS = ["SOLVER.BASE_LRR", "0.1"]
    with pytest.raises(ValueError, match=r"STEP2.OPTS: Unknown config key .SOLVER.BASE_LRR"):
        AlternatingTrainer(cfg)
