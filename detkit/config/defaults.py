"""Every config key detkit reads, with its default and a one-line comment.

Defaults follow the authors' released VGG16 VOC 2007 "end2end" recipe unless a comment says
otherwise. Where the paper and the released code differ, a key chooses (see each comment).
"""

from detkit.config.config import CfgNode as CN

_C = CN()  # root of the config tree

_C.IMPORTS = []  # modules imported before any build, so plugins register their components
_C.OUTPUT_DIR = "./output"  # where logs, checkpoints, metrics and the merged config go
_C.SEED = -1  # random seed for Python, NumPy and torch; negative picks one from time and pid

# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------
_C.MODEL = CN()  # the detector: which components and their parameters
_C.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"  # or ProposalNetwork (RPN only)
_C.MODEL.DEVICE = "auto"  # "auto" (CUDA when present, else CPU), "cpu", "cuda" or "cuda:N"
_C.MODEL.MEMORY_FORMAT = "measure"  # measure (timed per machine), auto (CPU: channels_last), ...
_C.MODEL.WEIGHTS = ""  # checkpoint or ImageNet weights to load: path, URL or torchvision://name
_C.MODEL.PIXEL_MEAN = [102.9801, 115.9465, 122.7717]  # mean per channel, INPUT.FORMAT order
_C.MODEL.PIXEL_STD = [1.0, 1.0, 1.0]  # per-channel std; 1.0 for Caffe weights (0-255 input)
_C.MODEL.LEGACY_PLUS_ONE = False  # width x2-x1+1 in IoU/encode/decode/clip (code)
# Modules not trained: names in the model or glob patterns ("backbone", "backbone.stage[12]",
# "proposal_generator.head", "roi_heads.box_head"); BatchNorm in them stays in eval mode.
_C.MODEL.FROZEN_MODULES = []  # e.g. ["backbone"] in steps 3 and 4 of alternating training

# Backbone: the shared convolutional feature extractor.
_C.MODEL.BACKBONE = CN()  # BACKBONE_REGISTRY entry and shared options
_C.MODEL.BACKBONE.NAME = "VGG16"  # VGG16, ZF, ResNetC4 or TinyBackbone
_C.MODEL.BACKBONE.FREEZE_AT = 2  # stages frozen from the input (VGG16: 2 = conv1_x and conv2_x)
_C.MODEL.BACKBONE.NORM = ""  # normalization in conv blocks: "", "BN", "FrozenBN", "GN"

_C.MODEL.RESNETS = CN()  # options of the ResNet and ResNetC4 backbones and the res5 box head
_C.MODEL.RESNETS.DEPTH = 50  # 50 or 101
_C.MODEL.RESNETS.NORM = "FrozenBN"  # normalization of ResNet blocks: "FrozenBN" or "BN"
_C.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]  # ResNet: the stages returned

_C.MODEL.TINY = CN()  # options of the small CPU backbone used by the quickstart
_C.MODEL.TINY.CHANNELS = [32, 64, 128, 256]  # output channels of the four stride-2 stages
_C.MODEL.TINY.BLOCKS_PER_STAGE = 1  # extra 3x3 conv blocks after each stage's strided conv
_C.MODEL.TINY.BLOCKS = []  # the same per stage, 4 numbers (e.g. [0, 1, 1, 1]); empty: as above
_C.MODEL.TINY.OUT_FEATURES = ["stage4"]  # stages returned (stage i has stride 2^i)
_C.MODEL.TINY.STAGE4_DILATION = 1  # 2: stage 4 dilated instead of strided (stride 8)

# Anchors (paper 3.1.1).
_C.MODEL.ANCHOR_GENERATOR = CN()  # ANCHOR_GENERATOR_REGISTRY entry and anchor shapes
_C.MODEL.ANCHOR_GENERATOR.NAME = "LegacyAnchorGenerator"  # or DefaultAnchorGenerator (floats)
_C.MODEL.ANCHOR_GENERATOR.SIZES = [128, 256, 512]  # sqrt of anchor areas, input pixels
_C.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS = [0.5, 1.0, 2.0]  # height / width ratios
_C.MODEL.ANCHOR_GENERATOR.OFFSET = 0.0  # DefaultAnchorGenerator: centre at (i + OFFSET) * stride
_C.MODEL.ANCHOR_GENERATOR.ROUND_TO_PIXELS = False  # DefaultAnchorGenerator: torchvision's rounding

# Proposal generator.
_C.MODEL.PROPOSAL_GENERATOR = CN()  # PROPOSAL_GENERATOR_REGISTRY entry
_C.MODEL.PROPOSAL_GENERATOR.NAME = "RPN"  # PROPOSAL_GENERATOR_REGISTRY entry

_C.MODEL.RPN = CN()  # Region Proposal Network (paper 3.1)
_C.MODEL.RPN.IN_FEATURES = ["conv5_3"]  # backbone outputs the RPN reads (one map, paper)
_C.MODEL.RPN.BOUNDARY_THRESH = 0  # straddle margin (0 paper); -1 keeps all
_C.MODEL.RPN.LOSS_NORMALIZATION = "sampled"  # "sampled" (code) or "paper" (Eq. 1)
_C.MODEL.RPN.LOSS_WEIGHT_LOC = 1.0  # lambda of Eq. 1 (code 1; paper 10 with "paper" normalization)
_C.MODEL.RPN.SMOOTH_L1_BETA = 0.1111111111111111  # smooth L1 beta (code sigma 3 = 1/9; 0 = L1)
_C.MODEL.RPN.PRE_NMS_TOPK_TRAIN = 12000  # proposals kept by objectness before NMS, training
_C.MODEL.RPN.POST_NMS_TOPK_TRAIN = 2000  # proposals kept after NMS, training
_C.MODEL.RPN.PRE_NMS_TOPK_TEST = 6000  # proposals kept by objectness before NMS, inference
_C.MODEL.RPN.POST_NMS_TOPK_TEST = 300  # proposals kept after NMS, inference (paper: 300)
_C.MODEL.RPN.TOPK_SCOPE = "global"  # top-k over all maps; "per_level": per map, NMS per map
_C.MODEL.RPN.NMS_THRESH = 0.7  # IoU threshold of proposal NMS
_C.MODEL.RPN.MIN_SIZE = 16.0  # min side, pixels of the original image
_C.MODEL.RPN.TEST_USE_OBJECTNESS = True  # False: "no cls" ablation, random proposals, no NMS
_C.MODEL.RPN.TEST_USE_REGRESSION = True  # False: "no reg" ablation, the anchors are proposals

# Proposals read from files (DATASETS.PROPOSAL_FILES_*): Fast R-CNN on stored proposals.
_C.MODEL.PRECOMPUTED_PROPOSALS = CN()  # options of the PrecomputedProposals generator
_C.MODEL.PRECOMPUTED_PROPOSALS.TOPK_TRAIN = 2000  # best proposals kept per image, training
_C.MODEL.PRECOMPUTED_PROPOSALS.TOPK_TEST = 300  # best proposals kept per image, inference

_C.MODEL.RPN.HEAD = CN()  # RPN_HEAD_REGISTRY entry
_C.MODEL.RPN.HEAD.NAME = "StandardRPNHead"  # 3x3 conv + sibling 1x1 objectness and delta convs
_C.MODEL.RPN.HEAD.CONV_DIM = -1  # channels of the 3x3 conv; -1 = the input's (VGG 512, ZF 256)
_C.MODEL.RPN.HEAD.OBJECTNESS = "sigmoid"  # "sigmoid" (k logits) or "softmax" (2k logits, code)

_C.MODEL.RPN.MATCHER = CN()  # MATCHER_REGISTRY entry labelling anchors (paper 3.1.2)
_C.MODEL.RPN.MATCHER.NAME = "IoUMatcher"  # matcher class
_C.MODEL.RPN.MATCHER.IOU_THRESHOLDS = [0.3, 0.7]  # negative below 0.3, positive at 0.7 and above
_C.MODEL.RPN.MATCHER.IOU_LABELS = [0, -1, 1]  # label of each IoU interval: neg, ignore, pos
_C.MODEL.RPN.MATCHER.ALLOW_LOW_QUALITY_MATCHES = True  # best anchors per gt positive
_C.MODEL.RPN.MATCHER.LOW_QUALITY_MIN_IOU = 0.0  # minimum IoU for that rule (code 0; some use 0.3)

_C.MODEL.RPN.SAMPLER = CN()  # SAMPLER_REGISTRY entry choosing the anchors of the loss
_C.MODEL.RPN.SAMPLER.NAME = "BalancedPositiveNegativeSampler"  # sampler class
_C.MODEL.RPN.SAMPLER.BATCH_SIZE_PER_IMAGE = 256  # anchors per image in the loss (paper: 256)
_C.MODEL.RPN.SAMPLER.POSITIVE_FRACTION = 0.5  # at most this fraction positive (paper: 1:1)

_C.MODEL.RPN.BOX_CODER = CN()  # BOX_CODER_REGISTRY entry for anchor deltas (Eq. 2)
_C.MODEL.RPN.BOX_CODER.NAME = "DeltaXYWHBoxCoder"  # box coder class
_C.MODEL.RPN.BOX_CODER.WEIGHTS = [1.0, 1.0, 1.0, 1.0]  # (wx, wy, ww, wh): unnormalized
_C.MODEL.RPN.BOX_CODER.SCALE_CLAMP = 4.135166556742356  # clamp dw, dh before exp: log(1000 / 16)

# ROI heads (Fast R-CNN).
_C.MODEL.ROI_HEADS = CN()  # ROI_HEADS_REGISTRY entry and its sampling/inference options
_C.MODEL.ROI_HEADS.NAME = "StandardROIHeads"  # ROI heads class
_C.MODEL.ROI_HEADS.IN_FEATURES = ["conv5_3"]  # backbone outputs the RoIs are pooled from
_C.MODEL.ROI_HEADS.NUM_CLASSES = 20  # foreground classes K (VOC 20); the predictor adds background
_C.MODEL.ROI_HEADS.PROPOSAL_APPEND_GT = True  # add ground-truth boxes to the proposals in training
_C.MODEL.ROI_HEADS.SMOOTH_L1_BETA = 1.0  # smooth L1 beta of the box loss (sigma 1)
_C.MODEL.ROI_HEADS.CLS_AGNOSTIC_BBOX_REG = False  # 4 box outputs, not 4(K+1)
_C.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.05  # keep detections scoring above this
_C.MODEL.ROI_HEADS.NMS_THRESH_TEST = 0.3  # per-class NMS IoU at test
_C.MODEL.ROI_HEADS.DETECTIONS_PER_IMAGE = 100  # best detections kept per image over all classes

_C.MODEL.ROI_HEADS.MATCHER = CN()  # MATCHER_REGISTRY entry labelling proposals
_C.MODEL.ROI_HEADS.MATCHER.NAME = "IoUMatcher"  # matcher class
_C.MODEL.ROI_HEADS.MATCHER.IOU_THRESHOLDS = [0.0, 0.5]  # bg in [0.0, 0.5) (code; defaults use 0.1)
_C.MODEL.ROI_HEADS.MATCHER.IOU_LABELS = [-1, 0, 1]  # ignore below the bg bound, bg, fg
_C.MODEL.ROI_HEADS.MATCHER.ALLOW_LOW_QUALITY_MATCHES = False  # no best-match rule for RoIs
_C.MODEL.ROI_HEADS.MATCHER.LOW_QUALITY_MIN_IOU = 0.0  # unused while the rule is off

_C.MODEL.ROI_HEADS.SAMPLER = CN()  # SAMPLER_REGISTRY entry choosing the RoIs of the loss
_C.MODEL.ROI_HEADS.SAMPLER.NAME = "BalancedPositiveNegativeSampler"  # or OHEMSampler
_C.MODEL.ROI_HEADS.SAMPLER.BATCH_SIZE_PER_IMAGE = 128  # RoIs per image (code: 128)
_C.MODEL.ROI_HEADS.SAMPLER.POSITIVE_FRACTION = 0.25  # at most 25% foreground

_C.MODEL.ROI_HEADS.BOX_CODER = CN()  # BOX_CODER_REGISTRY entry for RoI deltas
_C.MODEL.ROI_HEADS.BOX_CODER.NAME = "DeltaXYWHBoxCoder"  # box coder class
_C.MODEL.ROI_HEADS.BOX_CODER.WEIGHTS = [10.0, 10.0, 5.0, 5.0]  # targets / (0.1, 0.1, 0.2, 0.2)
_C.MODEL.ROI_HEADS.BOX_CODER.SCALE_CLAMP = 4.135166556742356  # dw, dh clamp: log(1000 / 16)

_C.MODEL.ROI_HEADS.POOLER = CN()  # ROI_POOLER_REGISTRY entry
_C.MODEL.ROI_HEADS.POOLER.NAME = "ROIPool"  # ROIPool (paper) or ROIAlign
_C.MODEL.ROI_HEADS.POOLER.RESOLUTION = 7  # output bins per side (7x7)
_C.MODEL.ROI_HEADS.POOLER.SAMPLING_RATIO = 0  # ROIAlign samples per bin; 0 = adaptive
_C.MODEL.ROI_HEADS.POOLER.ALIGNED = True  # ROIAlign half-pixel alignment
_C.MODEL.ROI_HEADS.POOLER.IMPLEMENTATION = "auto"  # ROIAlign: auto, torchvision or separable
_C.MODEL.ROI_HEADS.POOLER.CANONICAL_SIZE = 224.0  # MultiLevelROIAlign: a RoI this large (px)
_C.MODEL.ROI_HEADS.POOLER.CANONICAL_LEVEL = 4  # goes to this level (stride 2**level)

_C.MODEL.ROI_BOX_HEAD = CN()  # ROI_BOX_HEAD_REGISTRY entry: pooled features -> vector
_C.MODEL.ROI_BOX_HEAD.NAME = "VGGFCHead"  # VGGFCHead (fc6/fc7), ConvFCHead or Res5Head
_C.MODEL.ROI_BOX_HEAD.FC_DIM = 4096  # width of each fully connected layer
_C.MODEL.ROI_BOX_HEAD.NUM_FC = 2  # ConvFCHead: number of fully connected layers
_C.MODEL.ROI_BOX_HEAD.NUM_CONV = 0  # ConvFCHead: number of 3x3 convs before the fcs
_C.MODEL.ROI_BOX_HEAD.CONV_DIM = 256  # ConvFCHead: channels of those convs
_C.MODEL.ROI_BOX_HEAD.DROPOUT = 0.5  # dropout after each fc (VGG fc6/fc7: 0.5)
_C.MODEL.ROI_BOX_HEAD.NORM = ""  # ConvFCHead: "", "BN" or "GN" after each conv and fc
_C.MODEL.ROI_BOX_HEAD.SVD_RANKS = []  # truncated SVD of the first fcs (tools/compress_model.py)
_C.MODEL.ROI_BOX_HEAD.QUANTIZE = ""  # CPU inference: "int8" = dynamic int8 fcs (deployment.md)

# ---------------------------------------------------------------------------------------------
# Input
# ---------------------------------------------------------------------------------------------
_C.INPUT = CN()  # how images are read and resized
_C.INPUT.FORMAT = "BGR"  # channel order the model sees: "BGR" (Caffe weights) or "RGB"
_C.INPUT.MIN_SIZE_TRAIN = [600]  # shorter side in training; one is picked at random per image
_C.INPUT.MAX_SIZE_TRAIN = 1000  # cap on the longer side in training
_C.INPUT.MIN_SIZE_TEST = 600  # shorter side at test
_C.INPUT.MAX_SIZE_TEST = 1000  # cap on the longer side at test
_C.INPUT.SIZE_DIVISIBILITY = 0  # pad batches to a multiple of this (0 = no extra padding)
_C.INPUT.RANDOM_FLIP = "horizontal"  # "horizontal" (p = 0.5 per sample) or "none"
_C.INPUT.FLIP_BY_DUPLICATION = False  # add a flipped copy of every image instead (released code)
_C.INPUT.CROP = CN()  # random crop of the original image before the resize (training only)
_C.INPUT.CROP.ENABLED = False  # True adds the crop to the training augmentations
# "relative" (h * SIZE[0], w * SIZE[1]), "relative_range" (fractions drawn in [SIZE, 1]),
_C.INPUT.CROP.TYPE = "relative_range"  # "absolute" (SIZE px) or "absolute_range" (px drawn)
_C.INPUT.CROP.SIZE = [0.9, 0.9]  # fractions (relative types) or pixels (absolute types)
_C.INPUT.COLOR_JITTER = CN()  # photometric jitter in training (torchvision adjust_*), 0 = off
_C.INPUT.COLOR_JITTER.BRIGHTNESS = 0.0  # brightness factor drawn in [1 - r, 1 + r]
_C.INPUT.COLOR_JITTER.CONTRAST = 0.0  # contrast factor drawn in [1 - r, 1 + r]
_C.INPUT.COLOR_JITTER.SATURATION = 0.0  # saturation factor drawn in [1 - r, 1 + r]
_C.INPUT.COLOR_JITTER.HUE = 0.0  # hue shift drawn in [-r, r], fraction of the wheel (<= 0.5)

# ---------------------------------------------------------------------------------------------
# Datasets and loading
# ---------------------------------------------------------------------------------------------
_C.DATASETS = CN()  # registered dataset names
_C.DATASETS.TRAIN = []  # names concatenated for training, e.g. ["voc_2007_trainval"]
_C.DATASETS.TEST = []  # names evaluated, e.g. ["voc_2007_test"]
_C.DATASETS.PROPOSAL_FILES_TRAIN = []  # one proposals file (.npz) per DATASETS.TRAIN name
_C.DATASETS.PROPOSAL_FILES_TEST = []  # one proposals file (.npz) per DATASETS.TEST name
# Every image decoded and every box checked before training (cached in $DETKIT_CACHE/verify):
_C.DATASETS.VERIFY = "stop"  # on a bad image: "stop" the run with a report, "skip" it, or "off"

_C.DATALOADER = CN()  # data loading
_C.DATALOADER.NUM_WORKERS = 2  # loader worker processes (0 = load in the main process)
_C.DATALOADER.ASPECT_RATIO_GROUPING = True  # batch images of like aspect ratio together
_C.DATALOADER.FILTER_EMPTY_ANNOTATIONS = False  # drop training images with no object

# ---------------------------------------------------------------------------------------------
# Solver
# ---------------------------------------------------------------------------------------------
_C.SOLVER = CN()  # optimizer and schedule
_C.SOLVER.OPTIMIZER = "SGD"  # "SGD" (paper) or "AdamW"
_C.SOLVER.BASE_LR = 0.001  # learning rate (paper: 0.001)
_C.SOLVER.MOMENTUM = 0.9  # SGD momentum
_C.SOLVER.WEIGHT_DECAY = 0.0005  # weight decay of weights
_C.SOLVER.WEIGHT_DECAY_BIAS = 0.0005  # weight decay of biases (Caffe also decays biases)
_C.SOLVER.WEIGHT_DECAY_NORM = 0.0  # weight decay of BN/GN weights and biases (usual: none)
_C.SOLVER.BIAS_LR_FACTOR = 2.0  # bias learning rate = BASE_LR x this (released code: 2)
_C.SOLVER.IMS_PER_BATCH = 1  # images per optimizer step per pass, over all processes
_C.SOLVER.ITER_SIZE = 2  # passes whose gradients are accumulated per update (code: 2)
_C.SOLVER.MAX_ITER = 70000  # updates (VOC07 end2end: 70k)
_C.SOLVER.STEPS = [50000]  # updates at which the lr is multiplied by GAMMA
_C.SOLVER.LR_SCHEDULER_NAME = "WarmupMultiStepLR"  # step decay at STEPS, or "WarmupCosineLR"
_C.SOLVER.GAMMA = 0.1  # lr decay factor at each step
_C.SOLVER.WARMUP_ITERS = 0  # linear warm-up length in updates (released code: none)
_C.SOLVER.WARMUP_FACTOR = 0.001  # lr factor at the start of warm-up
_C.SOLVER.WARMUP_METHOD = "linear"  # "linear" (WARMUP_FACTOR -> 1) or "constant"
_C.SOLVER.CHECKPOINT_PERIOD = 10000  # save a checkpoint every this many updates
_C.SOLVER.CLIP_GRADIENTS = 0.0  # clip the gradient norm to this (0 = no clipping)
_C.SOLVER.AMP = CN()  # mixed precision in training (inference stays float32)
_C.SOLVER.AMP.ENABLED = False  # autocast: float16 + gradient scaler on CUDA, bfloat16 on CPU
_C.SOLVER.SCHEME = "joint"  # "joint" (approximate joint training) or "alternating" (4 steps)

_C.TEST = CN()  # evaluation
_C.TEST.EVAL_PERIOD = 0  # evaluate every this many updates during training (0 = only at the end)
_C.TEST.PROPOSAL_TOPK = [50, 100, 300, 1000, 2000]  # proposal counts N of recall and AR@N
_C.TEST.SAVE_PROPOSALS = True  # proposal models: write each test set's proposals.npz

# ---------------------------------------------------------------------------------------------
# 4-step alternating training (paper 3.2; SOLVER.SCHEME "alternating")
# ---------------------------------------------------------------------------------------------
_C.ALTERNATING = CN()  # the steps' schedules; steps run in OUTPUT_DIR/step<i>_<rpn|fast_rcnn>
_C.ALTERNATING.SHARED_MODULES = ["backbone"]  # frozen in steps 3 and 4: the shared conv layers
_C.ALTERNATING.DUMP_PRE_NMS_TOPK = -1  # proposals dumped after steps 1 and 3: no pre-NMS limit
_C.ALTERNATING.DUMP_POST_NMS_TOPK = 2000  # and 2,000 kept after NMS (PAPER.md, RPN)
# Released schedule: RPN steps 80k updates (lr step at 60k), 1 image; Fast R-CNN steps 40k
# (step at 30k), 2 images per update. Other keys of a step go in its OPTS.
_C.ALTERNATING.STEP1 = CN()  # RPN from the initial weights (MODEL.WEIGHTS)
_C.ALTERNATING.STEP1.MAX_ITER = 80000  # updates of this step
_C.ALTERNATING.STEP1.STEPS = [60000]  # lr x SOLVER.GAMMA at these updates of this step
_C.ALTERNATING.STEP1.IMS_PER_BATCH = 1  # images per update
_C.ALTERNATING.STEP1.ITER_SIZE = 1  # passes accumulated per update (alternating recipe: 1)
_C.ALTERNATING.STEP1.OPTS = []  # other KEY VALUE overrides, e.g. ["SOLVER.BASE_LR", "0.01"]
_C.ALTERNATING.STEP2 = CN()  # Fast R-CNN from the initial weights, on step 1's proposals
_C.ALTERNATING.STEP2.MAX_ITER = 40000  # updates of this step
_C.ALTERNATING.STEP2.STEPS = [30000]  # lr x SOLVER.GAMMA at these updates of this step
_C.ALTERNATING.STEP2.IMS_PER_BATCH = 2  # images per update
_C.ALTERNATING.STEP2.ITER_SIZE = 1  # passes accumulated per update (alternating recipe: 1)
_C.ALTERNATING.STEP2.OPTS = []  # other KEY VALUE overrides, e.g. ["SOLVER.BASE_LR", "0.01"]
_C.ALTERNATING.STEP3 = CN()  # RPN layers on step 2's frozen shared layers
_C.ALTERNATING.STEP3.MAX_ITER = 80000  # updates of this step
_C.ALTERNATING.STEP3.STEPS = [60000]  # lr x SOLVER.GAMMA at these updates of this step
_C.ALTERNATING.STEP3.IMS_PER_BATCH = 1  # images per update
_C.ALTERNATING.STEP3.ITER_SIZE = 1  # passes accumulated per update (alternating recipe: 1)
_C.ALTERNATING.STEP3.OPTS = []  # other KEY VALUE overrides, e.g. ["SOLVER.BASE_LR", "0.01"]
_C.ALTERNATING.STEP4 = CN()  # Fast R-CNN layers on step 3's proposals, shared layers frozen
_C.ALTERNATING.STEP4.MAX_ITER = 40000  # updates of this step
_C.ALTERNATING.STEP4.STEPS = [30000]  # lr x SOLVER.GAMMA at these updates of this step
_C.ALTERNATING.STEP4.IMS_PER_BATCH = 2  # images per update
_C.ALTERNATING.STEP4.ITER_SIZE = 1  # passes accumulated per update (alternating recipe: 1)
_C.ALTERNATING.STEP4.OPTS = []  # other KEY VALUE overrides, e.g. ["SOLVER.BASE_LR", "0.01"]
