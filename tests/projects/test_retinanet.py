"""projects/retinanet: a one-stage detector registered as a META_ARCH entry and built from
detkit's backbone, anchor generator, matcher, box coder and sampler."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from detkit.config import get_cfg
from detkit.modeling import META_ARCH_REGISTRY, build_model
from detkit.modeling.anchor_generator import DefaultAnchorGenerator
from detkit.modeling.backbone.tiny import TinyBackbone
from detkit.modeling.box_coder import DeltaXYWHBoxCoder
from detkit.modeling.matcher import IoUMatcher
from detkit.modeling.sampler import BalancedPositiveNegativeSampler
from detkit.structures import Boxes, ImageList, Instances, pairwise_iou
from detkit.utils.synthetic import two_shapes_example
from projects.retinanet import RetinaNet, RetinaNetHead

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(REPO_ROOT / "projects/retinanet/configs/shapes_retinanet.yaml")
LN2 = math.log(2.0)


def small_model(*overrides: str) -> RetinaNet:
    cfg = get_cfg()
    cfg.merge_from_file(CONFIG)
    cfg.merge_from_list(
        ["MODEL.DEVICE", "cpu", "MODEL.TINY.CHANNELS", "[8, 16, 16, 32]", *overrides]
    )
    return build_model(cfg)


def test_import_registers_the_meta_architecture_and_the_config_keys():
    assert META_ARCH_REGISTRY.get("RetinaNet") is RetinaNet
    assert RetinaNet.__module__ == "projects.retinanet.meta_arch"
    assert "RETINANET" not in get_cfg().MODEL
    cfg = get_cfg()
    cfg.merge_from_file(CONFIG)
    assert cfg.IMPORTS == ["projects.retinanet"]
    assert cfg.MODEL.RETINANET.MATCHER.IOU_THRESHOLDS == [0.4, 0.5]  # the paper's
    assert cfg.MODEL.RETINANET.NUM_CLASSES == 3


def test_config_builds_the_detector_from_detkit_components():
    model = small_model("MODEL.RETINANET.MATCHER.IOU_THRESHOLDS", "[0.3, 0.6]")
    assert isinstance(model.backbone, TinyBackbone)
    assert isinstance(model.anchor_generator, DefaultAnchorGenerator)
    assert model.anchor_generator.sizes == [16.0, 32.0, 64.0, 128.0]  # MODEL.ANCHOR_GENERATOR
    assert isinstance(model.anchor_matcher, IoUMatcher)
    assert model.anchor_matcher.thresholds == [0.3, 0.6]  # the override reached the matcher
    assert isinstance(model.box_coder, DeltaXYWHBoxCoder)
    assert model.box_coder.weights == (1.0, 1.0, 1.0, 1.0)
    assert model.sampler is None  # focal loss: every anchor
    assert isinstance(model.head, RetinaNetHead)
    # A = 4 sizes x 3 ratios = 12 anchors per position; K = 3 classes.
    assert model.head.cls_score.out_channels == 12 * 3
    assert model.head.bbox_pred.out_channels == 12 * 4
    assert len(model.head.cls_subnet) == 2  # NUM_CONVS of the shapes config
    assert isinstance(model.head.cls_subnet[0][1], torch.nn.GroupNorm)  # NORM: GN
    assert model.head.cls_subnet[0][0].bias is None  # the norm's shift replaces it
    # Paper 4.1: every anchor starts as foreground with probability 0.01.
    torch.testing.assert_close(model.head.cls_score.bias.sigmoid(), torch.full((36,), 0.01))
    sampled = small_model(
        "MODEL.RETINANET.SAMPLER.NAME",
        "BalancedPositiveNegativeSampler",
        "MODEL.RETINANET.SAMPLER.BATCH_SIZE_PER_IMAGE",
        "32",
    )
    assert isinstance(sampled.sampler, BalancedPositiveNegativeSampler)
    assert sampled.sampler.batch_size_per_image == 32


# Three anchors against one ground truth [0, 0, 20, 10] of class 1:
# anchor 0 has IoU 0.5 (positive), anchor 1 IoU 0 (negative), anchor 2 IoU 200/444 = 0.45
# (between 0.4 and 0.5: ignored; not the object's best anchor either).
ANCHORS = torch.tensor(
    [[0.0, 0.0, 10.0, 10.0], [100.0, 100.0, 110.0, 110.0], [0.0, 0.0, 20.0, 22.2]]
)
GT = Instances(
    (128, 128), gt_boxes=Boxes(torch.tensor([[0.0, 0.0, 20.0, 10.0]])), gt_classes=torch.tensor([1])
)


def losses_at_zero_logits(model: RetinaNet, gt: Instances) -> dict[str, float]:
    classes, boxes = model.label_anchors(ANCHORS, [gt])
    logits = torch.zeros(1, 3, model.num_classes)  # every probability 0.5
    deltas = torch.zeros(1, 3, 4)  # predicted boxes = anchors
    return {k: v.item() for k, v in model.losses(ANCHORS, logits, deltas, classes, boxes).items()}


def test_anchor_labels_and_losses_match_a_hand_computation():
    model = small_model("MODEL.RETINANET.NUM_CLASSES", "2")
    classes, _ = model.label_anchors(ANCHORS, [GT])
    assert classes.tolist() == [[1, 2, -1]]  # class 1, background (K = 2), ignored
    losses = losses_at_zero_logits(model, GT)
    # Focal loss at p = 0.5 (alpha 0.25, gamma 2): a positive target costs
    # 0.25 * 0.5^2 * ln 2, a negative one 0.75 * 0.5^2 * ln 2. Anchor 0: class 1 positive,
    # class 0 negative; anchor 1: two negatives; anchor 2: nothing. One positive anchor.
    assert losses["loss_cls"] == pytest.approx((0.0625 + 0.1875 + 2 * 0.1875) * LN2, rel=1e-5)
    # Anchor 0 -> [0, 0, 20, 10]: deltas (0.5, 0, ln 2, 0); smooth L1 (beta 0.1) of the
    # predicted zeros: (0.5 - 0.05) + (ln 2 - 0.05).
    assert losses["loss_box_reg"] == pytest.approx(0.4 + LN2, rel=1e-5)


def test_image_without_objects_has_only_negatives():
    model = small_model("MODEL.RETINANET.NUM_CLASSES", "2")
    empty = Instances(
        (128, 128), gt_boxes=Boxes(torch.zeros(0, 4)), gt_classes=torch.zeros(0, dtype=torch.int64)
    )
    losses = losses_at_zero_logits(model, empty)
    assert losses["loss_cls"] == pytest.approx(6 * 0.1875 * LN2, rel=1e-5)  # 3 anchors x 2
    assert losses["loss_box_reg"] == 0.0


def test_sampler_restricts_the_class_loss_to_its_picks():
    # One anchor per image, all positives allowed: only anchor 0 stays in the loss.
    model = small_model(
        "MODEL.RETINANET.NUM_CLASSES",
        "2",
        "MODEL.RETINANET.SAMPLER.NAME",
        "BalancedPositiveNegativeSampler",
        "MODEL.RETINANET.SAMPLER.BATCH_SIZE_PER_IMAGE",
        "1",
        "MODEL.RETINANET.SAMPLER.POSITIVE_FRACTION",
        "1.0",
    )
    classes, _ = model.label_anchors(ANCHORS, [GT])
    assert classes.tolist() == [[1, -1, -1]]
    losses = losses_at_zero_logits(model, GT)
    assert losses["loss_cls"] == pytest.approx((0.0625 + 0.1875) * LN2, rel=1e-5)
    assert losses["loss_box_reg"] == pytest.approx(0.4 + LN2, rel=1e-5)


def test_loss_normalizer_is_a_moving_average_of_positives():
    model = small_model("MODEL.RETINANET.NUM_CLASSES", "2")
    classes, boxes = model.label_anchors(ANCHORS, [GT])  # one positive: anchor 0
    logits, deltas = torch.zeros(1, 3, 2), torch.zeros(1, 3, 4)
    first = model.losses(ANCHORS, logits, deltas, classes, boxes)["loss_box_reg"]
    assert model.loss_normalizer.item() == pytest.approx(1.0)  # starts at the first count
    # Next batch: anchor 0 and its match three times, so three equal positives.
    anchors3, classes3, boxes3 = ANCHORS[[0, 0, 0]], classes[:, [0, 0, 0]], boxes[:, [0, 0, 0]]
    second = model.losses(anchors3, logits, deltas, classes3, boxes3)["loss_box_reg"]
    assert model.loss_normalizer.item() == pytest.approx(0.9 * 1 + 0.1 * 3)
    torch.testing.assert_close(second, 3 * first / 1.2)  # divided by 1.2, not by 3
    model.eval()  # inference-mode losses do not move the average
    model.losses(ANCHORS, logits, deltas, classes, boxes)
    assert model.loss_normalizer.item() == pytest.approx(1.2)


def test_inference_thresholds_takes_topk_per_map_and_suppresses_per_class():
    model = small_model(
        "MODEL.RETINANET.NUM_CLASSES", "2", "MODEL.RETINANET.TOPK_CANDIDATES_TEST", "2"
    )
    images = ImageList(torch.zeros(1, 3, 100, 100), [(100, 100)])
    # Map 0: anchors 0 and 1 overlap (IoU 90/110 = 0.82); map 1: two separate anchors.
    anchors = [
        torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 0.0, 11.0, 10.0], [50.0, 50.0, 60.0, 60.0]]),
        torch.tensor([[20.0, 20.0, 40.0, 40.0], [70.0, 70.0, 90.0, 90.0]]),
    ]
    logits = [
        torch.tensor([[[2.0, -5.0], [1.0, -5.0], [-5.0, 0.0]]]),
        torch.tensor([[[-5.0, -1.0], [-4.0, -5.0]]]),
    ]
    deltas = [torch.zeros(1, 3, 4), torch.zeros(1, 2, 4)]
    det = model.inference(images, anchors, logits, deltas)[0]
    # Map 0 candidates above 0.05: (a0, c0) 0.88, (a1, c0) 0.73, (a2, c1) 0.5 -> the top 2
    # are kept and NMS removes (a1, c0). Map 1: (a0, c1) 0.27; sigmoid(-4) = 0.018 < 0.05.
    assert det.pred_boxes.tensor.tolist() == [[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 40.0, 40.0]]
    assert det.pred_classes.tolist() == [0, 1]
    torch.testing.assert_close(det.scores, torch.sigmoid(torch.tensor([2.0, -1.0])))


def test_overfits_one_image_and_finds_both_boxes():
    torch.manual_seed(0)
    model = small_model("MODEL.TINY.CHANNELS", "[8, 16, 32, 64]")
    example = two_shapes_example()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    model.train()
    history = []
    for _ in range(80):
        losses = model([example])
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        history.append(total.item())
    assert history[-1] < 0.2 * history[0], history

    model.eval()
    with torch.no_grad():
        det = model([example])[0]["instances"]
        # The same image declared to come from a 2x smaller original: boxes halve.
        half = {**example, "height": example["height"] // 2, "width": example["width"] // 2}
        det_half = model([half])[0]["instances"]
    gt = example["instances"]
    iou = pairwise_iou(gt.gt_boxes, det.pred_boxes)  # [2, D]
    for i in range(len(gt)):
        hits = torch.nonzero(iou[i] > 0.7).flatten()
        assert len(hits) > 0, f"object {i} not found: {det}"
        top = hits[det.scores[hits].argmax()]
        assert det.pred_classes[top] == gt.gt_classes[i]
    assert det_half.image_size == (64, 80)
    torch.testing.assert_close(det_half.pred_boxes.tensor, det.pred_boxes.tensor / 2)


def test_input_size_divisibility_pads_the_batch():
    # INPUT.SIZE_DIVISIBILITY 24: a 50 x 70 image is padded to 72 x 72 (the next multiples).
    images = small_model("INPUT.SIZE_DIVISIBILITY", "24").preprocessor(
        [{"image": torch.full((3, 50, 70), 50.0)}]
    )
    assert images.tensor.shape == (1, 3, 72, 72) and images.image_sizes == [(50, 70)]
