"""Config keys of the RetinaNet project (``MODEL.RETINANET``)."""

from __future__ import annotations

import math

from detkit.config import CfgNode as CN
from detkit.config import register_config_extension

__all__ = ["add_retinanet_config"]


@register_config_extension
def add_retinanet_config(cfg: CN) -> None:
    """Add ``MODEL.RETINANET`` to ``cfg``, in place (defaults: the focal-loss paper's).

    Applied by detkit when a config lists ``projects.retinanet`` in ``IMPORTS``. The backbone
    (``MODEL.BACKBONE``) and the anchors (``MODEL.ANCHOR_GENERATOR``) are detkit's own keys.
    """
    _R = cfg.MODEL.RETINANET = CN()  # RetinaNet (projects/retinanet): one-stage detector
    _R.IN_FEATURES = ["conv5_3"]  # backbone outputs the head runs on (one anchor set per map)
    _R.NUM_CLASSES = 20  # foreground classes K; no background class (sigmoid per class)
    _R.NUM_CONVS = 4  # 3x3 conv + ReLU layers in each of the class and box subnets (paper: 4)
    _R.NORM = ""  # normalization in the head's towers: "" (paper) or "GN" (from scratch)
    _R.PRIOR_PROB = 0.01  # initial foreground probability of every anchor (paper: 0.01)
    _R.FOCAL_LOSS_ALPHA = 0.25  # weight of positives in the focal loss; negative disables it
    _R.FOCAL_LOSS_GAMMA = 2.0  # focusing parameter (paper: 2; 0 is cross-entropy)
    _R.SMOOTH_L1_BETA = 0.1  # smooth L1 beta of the box loss (0 is L1)
    _R.LOSS_NORMALIZER_MOMENTUM = 0.9  # moving average of positives per batch (0: none)
    _R.SCORE_THRESH_TEST = 0.05  # keep (anchor, class) scores above this at test
    _R.TOPK_CANDIDATES_TEST = 1000  # best (anchor, class) pairs kept per feature map at test
    _R.NMS_THRESH_TEST = 0.5  # per-class NMS IoU at test
    _R.DETECTIONS_PER_IMAGE = 100  # best detections kept per image over all classes

    _R.MATCHER = CN()  # MATCHER_REGISTRY entry labelling anchors
    _R.MATCHER.NAME = "IoUMatcher"  # matcher class
    _R.MATCHER.IOU_THRESHOLDS = [0.4, 0.5]  # negative below 0.4, positive from 0.5 (paper)
    _R.MATCHER.IOU_LABELS = [0, -1, 1]  # label of each IoU interval: neg, ignore, pos
    _R.MATCHER.ALLOW_LOW_QUALITY_MATCHES = True  # each gt's best anchors are positive too
    _R.MATCHER.LOW_QUALITY_MIN_IOU = 0.0  # minimum IoU for that rule

    _R.SAMPLER = CN()  # optional SAMPLER_REGISTRY entry; "" puts every anchor in the loss
    _R.SAMPLER.NAME = ""  # "" (focal loss, paper) or e.g. BalancedPositiveNegativeSampler
    _R.SAMPLER.BATCH_SIZE_PER_IMAGE = 256  # anchors sampled per image, when NAME is set
    _R.SAMPLER.POSITIVE_FRACTION = 0.5  # largest positive fraction, when NAME is set

    _R.BOX_CODER = CN()  # BOX_CODER_REGISTRY entry for anchor deltas
    _R.BOX_CODER.NAME = "DeltaXYWHBoxCoder"  # box coder class
    _R.BOX_CODER.WEIGHTS = [1.0, 1.0, 1.0, 1.0]  # (wx, wy, ww, wh): unnormalized deltas
    _R.BOX_CODER.SCALE_CLAMP = math.log(1000.0 / 16)  # clamp dw, dh before exp
