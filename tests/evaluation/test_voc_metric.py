"""VOC AP on arrays: hand-computed curves and cases, a slow loop reference of the devkit, and
agreement with pycocotools where the two metrics coincide."""

import contextlib
import io

import numpy as np
import pytest

from detkit.evaluation.voc_metric import COCO_IOU_THRESHOLDS, box_iou_numpy, voc_ap, voc_eval

# ---------------------------------------------------------------------------------------------
# voc_ap on hand-computed precision/recall curves


def test_voc_ap_area_and_11_point_by_hand():
    # 3 positives; ranked detections TP, FP, TP, FP, TP:
    #   recall    = 1/3, 1/3, 2/3, 2/3, 1
    #   precision = 1,   1/2, 2/3, 1/2, 3/5
    recall = np.array([1, 1, 2, 2, 3]) / 3
    precision = np.array([1, 1 / 2, 2 / 3, 1 / 2, 3 / 5])
    # Area: the envelope is 1 on (0, 1/3], 2/3 on (1/3, 2/3], 3/5 on (2/3, 1]:
    #   1/3 * 1 + 1/3 * 2/3 + 1/3 * 3/5 = 15/45 + 10/45 + 9/45 = 34/45.
    assert voc_ap(recall, precision, use_07_metric=False) == pytest.approx(34 / 45)
    # 11-point: r = 0, .1, .2, .3 -> max precision over every point = 1 (4 levels);
    #   r = .4, .5, .6 -> points with recall >= 2/3: max(2/3, 1/2, 3/5) = 2/3 (3 levels);
    #   r = .7, .8, .9, 1 -> the last point: 3/5 (4 levels).
    #   (4 * 1 + 3 * 2/3 + 4 * 3/5) / 11 = 8.4 / 11.
    assert voc_ap(recall, precision, use_07_metric=True) == pytest.approx(8.4 / 11)


def test_voc_ap_recall_never_reaching_one():
    # 4 positives, two TPs found: recall 0.25, 0.5 at precision 1.
    recall, precision = np.array([0.25, 0.5]), np.array([1.0, 1.0])
    # Area: 0.5 * 1, the envelope is 0 beyond the last point.
    assert voc_ap(recall, precision, use_07_metric=False) == pytest.approx(0.5)
    # 11-point: r = 0, .1, ..., .5 reached (6 levels at precision 1), the other 5 give 0.
    assert voc_ap(recall, precision, use_07_metric=True) == pytest.approx(6 / 11)


def test_voc_ap_11_point_counts_a_recall_of_exactly_three_tenths():
    # 10 positives, 3 TPs: recall 0.1, 0.2, 0.3 (3/10 computed as the devkit does) at
    # precision 1. Levels 0, .1, .2, .3 are reached: 4/11. (np.arange(0, 1.1, 0.1) has
    # 0.30000000000000004 and would give 3/11; we follow the paper's "recall >= 0.3".)
    recall = np.array([1, 2, 3]) / 10
    assert voc_ap(recall, np.ones(3), use_07_metric=True) == pytest.approx(4 / 11)


def test_voc_ap_empty_curve_is_zero():
    assert voc_ap([], [], use_07_metric=True) == 0.0
    assert voc_ap([], [], use_07_metric=False) == 0.0


# ---------------------------------------------------------------------------------------------
# voc_eval on a hand-built case


def _one_image_case():
    """One image, one class. Ground truths: A, B, D non-difficult; C difficult.

    Ranked detections and their fate under the devkit's rules:
      d1 0.9 = A exactly            -> TP (A matched)
      d2 0.8 = A exactly            -> FP (duplicate of A)
      d3 0.7 = C exactly            -> ignored (difficult)
      d4 0.6 IoU(B) = 50/100 = 0.5  -> FP (needs IoU > 0.5 strictly)
      d5 0.5 IoU(B) = 60/100 = 0.6  -> TP (B matched)
      d6 0.4 far from everything    -> FP
      d7 0.3 IoU(D) = 55/100 = 0.55 -> TP (D matched)
    """
    gt_boxes = [[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10], [60, 0, 70, 10]]
    gt_difficult = [False, False, True, False]
    det_boxes = [
        [0, 0, 10, 10],
        [0, 0, 10, 10],
        [40, 0, 50, 10],
        [20, 0, 30, 5],
        [20, 0, 30, 6],
        [100, 100, 110, 110],
        [60, 0, 70, 5.5],
    ]
    det_scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3]
    return {
        "det_image_ids": np.zeros(7, dtype=int),
        "det_boxes": det_boxes,
        "det_scores": det_scores,
        "det_classes": np.zeros(7, dtype=int),
        "gt_image_ids": np.zeros(4, dtype=int),
        "gt_boxes": gt_boxes,
        "gt_classes": np.zeros(4, dtype=int),
        "gt_difficult": gt_difficult,
        "num_classes": 1,
    }


def test_voc_eval_hand_built_case_area_and_11_point():
    # npos = 3 (C is difficult). Without the ignored d3 the ranked list is
    # TP FP FP TP FP TP: recall 1/3 1/3 1/3 2/3 2/3 1, precision 1 1/2 1/3 1/2 2/5 1/2.
    # Area: 1/3 * 1 + 1/3 * 1/2 + 1/3 * 1/2 = 2/3.
    # 11-point: 4 levels (r <= .3) at 1, 3 levels (.4-.6) at 1/2, 4 levels (.7-1) at 1/2:
    #   (4 + 1.5 + 2) / 11 = 7.5 / 11.
    # (Counting IoU = 0.5 as a TP would give 13/18 for the area; counting d3 as an FP or C as
    # a positive would give other values: each rule is needed to get these.)
    area = voc_eval(**_one_image_case(), use_07_metric=False)
    eleven = voc_eval(**_one_image_case(), use_07_metric=True)
    assert area.ap[0, 0] == pytest.approx(2 / 3)
    assert eleven.ap[0, 0] == pytest.approx(7.5 / 11)
    assert area.num_positives.tolist() == [3]
    assert area.num_detections.tolist() == [7]
    assert area.recall[0, 0] == pytest.approx(1.0)


def test_voc_eval_detection_whose_best_gt_is_taken_is_false_positive():
    # G1 [0,0,10,10] and G2 [0,0,10,8]. d1 = G1 (TP). d2 = [0,0,10,9.5] has IoU 0.95 with G1
    # and 80/95 with G2: the devkit compares only with its best ground truth (G1, matched),
    # so d2 is a duplicate (FP), even though G2 is free. Recall 1/2, 1/2; precision 1, 1/2:
    # AP = 1/2 * 1 = 0.5. (pycocotools would match d2 to G2 and give 1.0.)
    result = voc_eval(
        det_image_ids=[0, 0],
        det_boxes=[[0, 0, 10, 10], [0, 0, 10, 9.5]],
        det_scores=[0.9, 0.8],
        det_classes=[0, 0],
        gt_image_ids=[0, 0],
        gt_boxes=[[0, 0, 10, 10], [0, 0, 10, 8]],
        gt_classes=[0, 0],
        num_classes=1,
    )
    assert result.ap[0, 0] == pytest.approx(0.5)


def test_voc_eval_plus_one_convention_changes_a_crafted_match():
    # gt [0,0,10,9], det [0,0,5,9].
    # Continuous: 5*9 / (10*9) = 0.5 exactly -> not > 0.5 -> FP -> AP 0.
    # +1 widths: (6*10) / (11*10) = 0.545 -> TP -> AP 1.
    case = {
        "det_image_ids": [0],
        "det_boxes": [[0, 0, 5, 9]],
        "det_scores": [1.0],
        "det_classes": [0],
        "gt_image_ids": [0],
        "gt_boxes": [[0, 0, 10, 9]],
        "gt_classes": [0],
        "num_classes": 1,
    }
    assert voc_eval(**case, legacy_plus_one=False).ap[0, 0] == 0.0
    assert voc_eval(**case, legacy_plus_one=True).ap[0, 0] == 1.0
    assert box_iou_numpy([[0, 0, 5, 9]], [[0, 0, 10, 9]], True)[0, 0] == pytest.approx(6 / 11)


def test_voc_eval_classes_without_positives_and_images_without_detections():
    # Class 0: two gts in image 0 and one in image 1 (no detection there): one TP -> recall
    # 1/3 at precision 1: area AP 1/3. Class 1: only a difficult gt -> NaN. Class 2: a
    # detection but no gt -> NaN. Class 3: one gt, one FP detection in another image -> 0.
    # The mean over classes with positives: (1/3 + 0) / 2 = 1/6.
    result = voc_eval(
        det_image_ids=[0, 1, 2, 1],
        det_classes=[0, 1, 2, 3],
        det_scores=[0.9, 0.8, 0.7, 0.6],
        det_boxes=[[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]],
        gt_image_ids=[0, 0, 3, 1, 2],
        gt_classes=[0, 0, 0, 1, 3],
        gt_boxes=[
            [0, 0, 10, 10],
            [20, 20, 30, 30],
            [0, 0, 10, 10],
            [0, 0, 10, 10],
            [50, 50, 60, 60],
        ],
        gt_difficult=[False, False, False, True, False],
        num_classes=4,
    )
    assert result.ap[0, 0] == pytest.approx(1 / 3)
    assert np.isnan(result.ap[0, 1]) and np.isnan(result.ap[0, 2])
    assert result.ap[0, 3] == 0.0
    assert result.mean_ap()[0] == pytest.approx(1 / 6)
    assert result.num_positives.tolist() == [3, 0, 0, 1]


def test_voc_eval_without_any_detection_or_ground_truth():
    no_dets = voc_eval(
        det_image_ids=[],
        det_boxes=[],
        det_scores=[],
        det_classes=[],
        gt_image_ids=[0],
        gt_boxes=[[0, 0, 5, 5]],
        gt_classes=[1],
        num_classes=2,
    )
    assert np.isnan(no_dets.ap[0, 0]) and no_dets.ap[0, 1] == 0.0
    no_gts = voc_eval(
        det_image_ids=[0],
        det_boxes=[[0, 0, 5, 5]],
        det_scores=[1.0],
        det_classes=[0],
        gt_image_ids=[],
        gt_boxes=[],
        gt_classes=[],
        num_classes=1,
    )
    assert np.isnan(no_gts.mean_ap()[0])


def test_voc_eval_rejects_bad_inputs_with_a_message():
    with pytest.raises(ValueError, match="det_classes must lie in"):
        voc_eval(
            det_image_ids=[0],
            det_boxes=[[0, 0, 1, 1]],
            det_scores=[1],
            det_classes=[5],
            gt_image_ids=[],
            gt_boxes=[],
            gt_classes=[],
            num_classes=2,
        )
    with pytest.raises(ValueError, match="det_scores has 2 rows"):
        voc_eval(
            det_image_ids=[0],
            det_boxes=[[0, 0, 1, 1]],
            det_scores=[1, 2],
            det_classes=[0],
            gt_image_ids=[],
            gt_boxes=[],
            gt_classes=[],
            num_classes=2,
        )


# ---------------------------------------------------------------------------------------------
# Agreement with a slow reference: the devkit's algorithm written with plain loops


def reference_voc_eval(dets, gts, num_classes, threshold, use_07_metric, plus_one):
    """dets: list of (image, class, score, box); gts: list of (image, class, box, difficult).
    Returns a list of per-class AP (NaN without positives), computed one detection at a time."""
    one = 1.0 if plus_one else 0.0
    aps = []
    for cls in range(num_classes):
        records = {}  # image -> list of [box, difficult, matched]
        npos = 0
        for image, c, box, difficult in gts:
            if c == cls:
                records.setdefault(image, []).append([box, difficult, False])
                npos += 0 if difficult else 1
        class_dets = sorted([d for d in dets if d[1] == cls], key=lambda d: -d[2])
        tp, fp = [], []
        for image, _, _, bb in class_dets:
            best_iou, best = -np.inf, None
            for record in records.get(image, []):
                gt = record[0]
                iw = max(min(bb[2], gt[2]) - max(bb[0], gt[0]) + one, 0.0)
                ih = max(min(bb[3], gt[3]) - max(bb[1], gt[1]) + one, 0.0)
                inter = iw * ih
                union = (
                    (bb[2] - bb[0] + one) * (bb[3] - bb[1] + one)
                    + (gt[2] - gt[0] + one) * (gt[3] - gt[1] + one)
                    - inter
                )
                iou = inter / union
                if iou > best_iou:
                    best_iou, best = iou, record
            if best_iou > threshold:
                if best[1]:
                    tp.append(0)
                    fp.append(0)
                elif not best[2]:
                    best[2] = True
                    tp.append(1)
                    fp.append(0)
                else:
                    tp.append(0)
                    fp.append(1)
            else:
                tp.append(0)
                fp.append(1)
        if npos == 0:
            aps.append(float("nan"))
            continue
        tp_cum, fp_cum = np.cumsum(tp), np.cumsum(fp)
        rec = tp_cum / npos
        prec = tp_cum / np.maximum(tp_cum + fp_cum, np.finfo(np.float64).eps)
        if use_07_metric:
            ap = 0.0
            for t in [k / 10 for k in range(11)]:
                above = [p for r, p in zip(rec, prec) if r >= t]
                ap += (max(above) if above else 0.0) / 11
        else:
            mrec = [0.0, *rec, 1.0]
            mpre = [0.0, *prec, 0.0]
            for i in range(len(mpre) - 2, -1, -1):
                mpre[i] = max(mpre[i], mpre[i + 1])
            ap = sum(
                (mrec[i + 1] - mrec[i]) * mpre[i + 1]
                for i in range(len(mrec) - 1)
                if mrec[i + 1] != mrec[i]
            )
        aps.append(ap)
    return aps


def _random_dataset(seed, num_images=40, num_classes=4, integer=False):
    rng = np.random.default_rng(seed)
    gts, dets = [], []
    for image in range(num_images):
        for _ in range(rng.integers(0, 6)):
            x1, y1 = rng.uniform(0, 200, size=2)
            w, h = rng.uniform(8, 80, size=2)
            box = [x1, y1, x1 + w, y1 + h]
            if integer:
                box = [float(round(v)) for v in box]
            c = int(rng.integers(0, num_classes - 1))  # the last class never has ground truth
            gts.append((image, c, box, bool(rng.random() < 0.2)))
            for _ in range(rng.integers(0, 3)):  # jittered copies, duplicates included
                jitter = rng.normal(0, 0.15, size=4) * [w, h, w, h]
                c_det = c if rng.random() < 0.85 else int(rng.integers(0, num_classes))
                dets.append((image, c_det, float(rng.random()), list(np.add(box, jitter))))
        for _ in range(rng.integers(0, 3)):  # background false positives
            x1, y1 = rng.uniform(0, 200, size=2)
            box = [x1, y1, x1 + rng.uniform(5, 60), y1 + rng.uniform(5, 60)]
            dets.append((image, int(rng.integers(0, num_classes)), float(rng.random()), box))
    # Keep x1 <= x2 after jitter.
    dets = [
        (i, c, s, [min(b[0], b[2]), min(b[1], b[3]), max(b[0], b[2]), max(b[1], b[3])])
        for i, c, s, b in dets
    ]
    return gts, dets


def _arrays(gts, dets, num_classes):
    return {
        "det_image_ids": [d[0] for d in dets],
        "det_classes": [d[1] for d in dets],
        "det_scores": [d[2] for d in dets],
        "det_boxes": [d[3] for d in dets],
        "gt_image_ids": [g[0] for g in gts],
        "gt_classes": [g[1] for g in gts],
        "gt_boxes": [g[2] for g in gts],
        "gt_difficult": [g[3] for g in gts],
        "num_classes": num_classes,
    }


@pytest.mark.parametrize("use_07_metric", [False, True])
@pytest.mark.parametrize("legacy_plus_one", [False, True])
def test_voc_eval_agrees_with_slow_reference_on_random_data(use_07_metric, legacy_plus_one):
    num_classes = 4
    gts, dets = _random_dataset(
        seed=7 + 2 * use_07_metric + legacy_plus_one,
        num_classes=num_classes,
        integer=legacy_plus_one,
    )
    thresholds = (0.5, 0.7)
    result = voc_eval(
        **_arrays(gts, dets, num_classes),
        iou_thresholds=thresholds,
        use_07_metric=use_07_metric,
        legacy_plus_one=legacy_plus_one,
    )
    for t, threshold in enumerate(thresholds):
        expected = reference_voc_eval(
            dets, gts, num_classes, threshold, use_07_metric, legacy_plus_one
        )
        np.testing.assert_allclose(result.ap[t], expected, rtol=0, atol=1e-12)
    # The data exercise every rule: positives, difficult ground truths, a class without any.
    assert np.isnan(result.ap[0, -1]) and np.isfinite(result.ap[0, :-1]).all()
    assert 0.2 < np.nanmean(result.ap[0]) < 0.95


# ---------------------------------------------------------------------------------------------
# Agreement with pycocotools (issue 4: area AP within 0.01 of pycocotools' AP@0.5)


def _disjoint_dataset(seed, num_images=60, num_classes=3):
    """Ground truths in separate 100-px cells, so a detection can have IoU > 0.5 with at most
    one of them: the VOC and COCO matching rules then agree and only interpolation differs."""
    rng = np.random.default_rng(seed)
    gts, dets = [], []
    for image in range(num_images):
        for cell in rng.permutation(9)[: rng.integers(0, 6)]:
            cx, cy = 100 * (cell % 3), 100 * (cell // 3)
            w, h = rng.uniform(20, 90, size=2)
            x1, y1 = cx + rng.uniform(0, 95 - w), cy + rng.uniform(0, 95 - h)
            box = [x1, y1, x1 + w, y1 + h]
            c = int(rng.integers(0, num_classes))
            gts.append((image, c, box, False))
            for _ in range(rng.choice([0, 1, 1, 1, 2])):
                jitter = rng.normal(0, 0.12, size=4) * [w, h, w, h]
                b = np.add(box, jitter)
                b = [min(b[0], b[2]), min(b[1], b[3]), max(b[0], b[2]), max(b[1], b[3])]
                dets.append((image, c, float(rng.random()), b))
        for _ in range(rng.integers(0, 3)):
            x1, y1 = rng.uniform(0, 250, size=2)
            box = [x1, y1, x1 + rng.uniform(10, 50), y1 + rng.uniform(10, 50)]
            dets.append((image, int(rng.integers(0, num_classes)), float(rng.random()), box))
    return gts, dets


def _pycocotools_stats(gts, dets, num_images, num_classes):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def xywh(b):
        return [b[0], b[1], b[2] - b[0], b[3] - b[1]]

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {
            "images": [{"id": i + 1, "width": 300, "height": 300} for i in range(num_images)],
            "categories": [{"id": c + 1, "name": str(c)} for c in range(num_classes)],
            "annotations": [
                {
                    "id": n + 1,
                    "image_id": i + 1,
                    "category_id": c + 1,
                    "bbox": xywh(b),
                    "area": (b[2] - b[0]) * (b[3] - b[1]),
                    "iscrowd": 0,
                }
                for n, (i, c, b, _) in enumerate(gts)
            ],
        }
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(
            [
                {"image_id": i + 1, "category_id": c + 1, "bbox": xywh(b), "score": s}
                for i, c, s, b in dets
            ]
        )
        coco_eval = COCOeval(coco_gt, coco_dt, "bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval.stats


def test_voc_area_ap_agrees_with_pycocotools_101_point_ap():
    num_images, num_classes = 60, 3
    gts, dets = _disjoint_dataset(seed=3, num_images=num_images, num_classes=num_classes)
    result = voc_eval(
        **_arrays(gts, dets, num_classes), iou_thresholds=COCO_IOU_THRESHOLDS, use_07_metric=False
    )
    stats = _pycocotools_stats(gts, dets, num_images, num_classes)
    mean_ap = result.mean_ap()
    assert 0.3 < mean_ap[0] < 0.95  # a curve with both TPs and FPs, not a degenerate one
    assert abs(mean_ap[0] - stats[1]) < 0.01  # AP@0.5
    assert abs(mean_ap[5] - stats[2]) < 0.01  # AP@0.75
    assert abs(mean_ap.mean() - stats[0]) < 0.01  # AP@[0.5:0.95]
