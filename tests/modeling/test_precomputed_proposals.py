"""PrecomputedProposals: Fast R-CNN trained and tested on proposals that came with the inputs."""

from __future__ import annotations

import pytest
import torch

from detkit.config import get_cfg
from detkit.modeling import build_model
from detkit.modeling.proposal_generator import PrecomputedProposals
from detkit.structures import Boxes, ImageList, Instances

SIZE = (96, 128)
BOXES = torch.tensor([[0.0, 0.0, 30.0, 40.0], [10.0, 12.0, 50.0, 60.0], [60.0, 20.0, 120.0, 80.0]])
SCORES = torch.tensor([0.1, 0.9, 0.5])


def cfg_with(topk_train: int, topk_test: int):
    cfg = get_cfg()
    cfg.merge_from_file("configs/quickstart/shapes.yaml")
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.TINY.CHANNELS = [8, 8, 16, 16]
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 16
    cfg.MODEL.PROPOSAL_GENERATOR.NAME = "PrecomputedProposals"
    cfg.MODEL.PRECOMPUTED_PROPOSALS.TOPK_TRAIN = topk_train
    cfg.MODEL.PRECOMPUTED_PROPOSALS.TOPK_TEST = topk_test
    return cfg


def inputs():
    proposals = Instances(SIZE, proposal_boxes=Boxes(BOXES.clone()), objectness_logits=SCORES)
    gt = Instances(
        SIZE, gt_boxes=Boxes(torch.tensor([[10.0, 12.0, 50.0, 60.0]])), gt_classes=torch.tensor([2])
    )
    return [
        {
            "image": torch.rand(3, *SIZE) * 255,
            "instances": gt,
            "proposals": proposals,
            "height": SIZE[0],
            "width": SIZE[1],
        }
    ]


def test_keeps_its_own_top_k_by_objectness_for_training_and_test():
    generator = PrecomputedProposals(topk=(2, 1))
    images = ImageList(torch.zeros(1, 3, *SIZE), [SIZE])
    given = [inputs()[0]["proposals"]]
    generator.train()
    kept, losses = generator(images, {}, None, given)
    assert losses == {}
    assert kept[0].proposal_boxes.tensor.tolist() == BOXES[[1, 2]].tolist()  # 0.9, 0.5
    generator.eval()
    assert generator(images, {}, None, given)[0][0].objectness_logits.tolist() == [
        pytest.approx(0.9)
    ]


def test_fast_rcnn_trains_and_detects_on_the_given_proposals():
    torch.manual_seed(0)
    model = build_model(cfg_with(topk_train=2, topk_test=1))
    seen: list[list[Instances]] = []
    model.roi_heads.register_forward_pre_hook(lambda m, args: seen.append(args[2]))
    model.train()
    losses = model(inputs())
    assert set(losses) == {"loss_cls", "loss_box_reg"}  # no RPN, no RPN loss
    sum(losses.values()).backward()
    assert model.backbone.stage3[0].conv.weight.grad.abs().sum() > 0  # features still learn
    assert seen[-1][0].proposal_boxes.tensor.tolist() == BOXES[[1, 2]].tolist()
    model.eval()
    with torch.no_grad():
        (output,) = model(inputs())
    assert seen[-1][0].proposal_boxes.tensor.tolist() == [BOXES[1].tolist()]  # test top-1
    assert output["instances"].image_size == SIZE
    assert sum(p.numel() for p in model.proposal_generator.parameters()) == 0


def test_inputs_without_proposals_say_which_keys_to_set():
    model = build_model(cfg_with(2, 1)).eval()
    data = inputs()
    del data[0]["proposals"]
    with pytest.raises(ValueError, match="DATASETS.PROPOSAL_FILES_TRAIN.*PROPOSAL_FILES_TEST"):
        with torch.no_grad():
            model(data)
    with pytest.raises(ValueError, match="MODEL.PRECOMPUTED_PROPOSALS.TOPK_TRAIN"):
        PrecomputedProposals(topk=(0, 5))
