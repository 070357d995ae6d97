"""Proposal models' evaluation: proposal recall is chosen for them, and their proposals are
written to a file in continuous coordinates whatever the model's width convention."""

from __future__ import annotations

import os

import pytest
import torch

from detkit.config import get_cfg
from detkit.data import DatasetCatalog, DatasetMapper, load_proposals
from detkit.engine import DefaultTrainer
from detkit.evaluation import (
    DatasetEvaluators,
    PascalVOCDetectionEvaluator,
    ProposalEvaluator,
    ProposalFileWriter,
    build_evaluator,
)
from detkit.modeling import build_model
from detkit.structures import Boxes, Instances


def proposals(boxes, scores, legacy):
    return {
        "proposals": Instances(
            (50, 60),
            proposal_boxes=Boxes(torch.tensor(boxes), legacy),
            objectness_logits=torch.tensor(scores),
        )
    }


@pytest.mark.parametrize("legacy", [False, True])
def test_writer_stores_continuous_boxes_by_decreasing_objectness(tmp_path, legacy):
    path = str(tmp_path / "p.npz")
    writer = ProposalFileWriter(path, legacy_plus_one=legacy, source="test")
    writer.reset()
    writer.process(
        [{"image_id": "x"}, {"image_id": "y"}],
        [
            proposals([[0.0, 0.0, 9.0, 9.0], [5.0, 5.0, 20.0, 30.0]], [0.2, 0.8], legacy),
            proposals([[1.0, 2.0, 3.0, 4.0]], [0.5], legacy),
        ],
    )
    assert writer.evaluate() == {}
    loaded = load_proposals(path)
    # A legacy box's x2 is its last pixel: the continuous box ends one pixel further.
    one = 1.0 if legacy else 0.0
    boxes, scores = loaded.get("x")
    assert boxes.tolist() == [[5, 5, 20 + one, 30 + one], [0, 0, 9 + one, 9 + one]]
    assert scores.tolist() == pytest.approx([0.8, 0.2])
    assert loaded.get("y")[0].tolist() == [[1, 2, 3 + one, 4 + one]]
    with pytest.raises(KeyError, match="needs outputs with 'proposals'"):
        writer.process([{"image_id": "z"}], [{"instances": None}])


def test_build_evaluator_picks_recall_for_proposal_models(tiny_shapes, tmp_path):
    _, test = tiny_shapes
    cfg = get_cfg()
    cfg.merge_from_file("configs/rpn_vgg16.yaml")
    chosen = build_evaluator(cfg, test, str(tmp_path))
    assert isinstance(chosen, DatasetEvaluators)
    assert [type(e) for e in chosen._evaluators] == [ProposalEvaluator, ProposalFileWriter]
    cfg.TEST.SAVE_PROPOSALS = False
    assert [type(e) for e in build_evaluator(cfg, test, str(tmp_path))._evaluators] == [
        ProposalEvaluator
    ]
    cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    assert isinstance(build_evaluator(cfg, test, str(tmp_path)), PascalVOCDetectionEvaluator)
    with pytest.raises(ValueError, match="output_kind is 'masks'"):
        build_evaluator(cfg, test, str(tmp_path), output_kind="masks")


def test_rpn_vgg16_config_evaluates_recall_and_writes_continuous_boxes(tiny_shapes, tmp_path):
    # The paper's RPN stage config (legacy +1 widths, VGG16) on small images: recall, and a
    # proposals file whose boxes are the model's with x2 + 1, y2 + 1, in original pixels.
    _, test = tiny_shapes
    cfg = get_cfg()
    cfg.merge_from_file("configs/rpn_vgg16.yaml")
    cfg.merge_from_list(
        [
            "MODEL.WEIGHTS",
            "",
            "MODEL.DEVICE",
            "cpu",
            "DATASETS.TEST",
            f"['{test}']",
            "INPUT.MIN_SIZE_TEST",
            "96",
            "INPUT.MAX_SIZE_TEST",
            "160",
            "DATALOADER.NUM_WORKERS",
            "0",
            "OUTPUT_DIR",
            str(tmp_path),
        ]
    )
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    results = DefaultTrainer.test(cfg, model)
    assert set(results["proposals"]) >= {"AR@50", "AR@2000", "R@1000@0.5"}
    stored = load_proposals(os.path.join(str(tmp_path), "inference", test, "proposals.npz"))
    record = DatasetCatalog.get(test)[0]
    mapped = DatasetMapper(cfg, is_train=False)(record)
    with torch.no_grad():
        (output,) = model([mapped])
    expected = output["proposals"].proposal_boxes.tensor + torch.tensor([0.0, 0.0, 1.0, 1.0])
    boxes, _ = stored.get(record["image_id"])
    assert len(boxes) == len(expected) > 0
    assert torch.allclose(torch.from_numpy(boxes), expected, atol=1e-4)
