"""The quickstart-size Faster R-CNN, trained on one image with two boxes, drives its losses
down and then detects both boxes with IoU > 0.7 and the right classes."""

import os

import torch

from detkit.config import get_cfg
from detkit.modeling import build_model
from detkit.structures import pairwise_iou
from detkit.utils.synthetic import two_shapes_example

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_overfit_one_image_two_boxes():
    torch.manual_seed(0)
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(ROOT, "configs/quickstart/faster_rcnn_tiny.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    example = two_shapes_example()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.02, momentum=0.9, weight_decay=1e-4)
    model.train()
    history = []
    for _ in range(80):
        losses = model([example])
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        history.append({k: v.item() for k, v in losses.items()})
    first, last = history[0], history[-1]
    assert sum(last.values()) < 0.2 * sum(first.values()), (first, last)
    assert last["loss_cls"] < 0.5 * first["loss_cls"]
    assert last["loss_rpn_cls"] < 0.5 * first["loss_rpn_cls"]

    model.eval()
    with torch.no_grad():
        det = model([example])[0]["instances"]
    gt = example["instances"]
    iou = pairwise_iou(gt.gt_boxes, det.pred_boxes)  # [2 gt, D detections]
    for i in range(len(gt)):
        # The best-scoring detection that overlaps this object must be of its class.
        hits = torch.nonzero(iou[i] > 0.7).flatten()
        assert len(hits) > 0, f"object {i} not found: {det}"
        top = hits[det.scores[hits].argmax()]
        assert det.pred_classes[top] == gt.gt_classes[i]
        assert det.scores[top] > 0.5
