"""docs/reuse.md runs as written.

Part 1: its first ```python block builds an RPN by hand; it must learn (loss down) and find
both objects. Part 2: its file blocks (a matcher, a sampler, a box head, a meta-architecture
and two configs) are saved in a temporary folder and its last block trains both models; the
components must be the ones the configs name, learn, and behave as their docstrings say."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from doc_pages import doc_blocks, run_page  # tests/docs/doc_pages.py

from detkit.modeling.matcher import MatchInputs
from detkit.structures import Boxes, pairwise_iou

DOC = Path(__file__).resolve().parents[2] / "docs" / "reuse.md"


def test_reuse_example_trains_an_rpn_built_by_hand(capsys):
    first = doc_blocks(DOC)[0]
    assert first[0] is None, "docs/reuse.md should open with the runnable RPN example"
    namespace: dict = {"__name__": "reuse_example"}
    exec(compile(first[1], str(DOC), "exec"), namespace)
    history = namespace["history"]
    assert len(history) == 40
    assert history[-1] < 0.5 * history[0], history
    # Both objects of two_shapes_example are covered by a proposal with IoU > 0.5.
    assert namespace["best_iou"].min() > 0.5, namespace["best_iou"]
    assert "RPN loss:" in capsys.readouterr().out


def check_centre_matcher(matcher_class) -> None:
    """Hand-computed: a candidate is positive only with its centre inside a box and enough
    IoU; among boxes containing its centre, the one of highest IoU is its match."""
    gt = Boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0], [4.0, 0.0, 14.0, 10.0]]))
    candidates = Boxes(
        torch.tensor(
            [
                [1.0, 0.0, 11.0, 10.0],  # centre (6, 5) in both; IoU 0.82 and 0.54: box 0
                [12.0, 0.0, 22.0, 10.0],  # centre (17, 5) in neither: negative
                [0.0, 0.0, 2.0, 10.0],  # centre (1, 5) in box 0, IoU 0.2 < 0.4: negative
            ]
        )
    )
    inputs = MatchInputs(iou=pairwise_iou(gt, candidates), gt_boxes=gt, candidates=candidates)
    matches, labels = matcher_class(min_iou=0.4)(inputs)
    assert labels.tolist() == [1, 0, 0] and int(matches[0]) == 0


def test_adding_components_file_by_file(example_folder, one_thread, capsys):
    blocks = doc_blocks(DOC)
    files = {path for path, _ in blocks if path}
    assert {
        "my_components/matcher.py",
        "my_components/sampler.py",
        "my_components/box_head.py",
        "my_components/meta_arch.py",
    } <= files
    ns = run_page(DOC, example_folder, blocks=blocks[1:])
    detector, objectness = ns["detector"], ns["objectness"]
    # The configs' names reached the models.
    assert type(detector.proposal_generator.anchor_matcher).__name__ == "CentreMatcher"
    assert detector.proposal_generator.anchor_matcher.min_iou == 0.4  # the config's, not 0.3
    assert type(detector.proposal_generator.sampler).__name__ == "NegativeRatioSampler"
    assert type(detector.roi_heads.box_head).__name__ == "MaxPoolFCHead"
    assert type(detector.roi_heads.proposal_matcher).__name__ == "IoUMatcher"
    assert type(objectness).__name__ == "ObjectnessDetector"
    check_centre_matcher(sys.modules["my_components.matcher"].CentreMatcher)
    # Both learn, and predict in the original image's pixels.
    for history in (ns["detector_history"], ns["objectness_history"]):
        assert history[-1] < 0.6 * history[0], history
    for output in (ns["detector_output"], ns["objectness_output"]):
        assert output["instances"].image_size == (128, 160)
    instances = ns["objectness_output"]["instances"]
    assert bool((instances.pred_classes == 0).all())
    assert bool(((instances.scores > 0) & (instances.scores < 1)).all())
    assert "loss" in capsys.readouterr().out
