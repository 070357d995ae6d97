"""Selective Search proposals (OpenCV's contrib implementation), written as a proposals file.

The paper's "Selective Search vs RPN" rows (PAPER.md: VGG16 with SS 2000, 66.9 mAP) train and
test Fast R-CNN on about 2,000 Selective Search boxes per image, computed in SS's "fast" mode.
:func:`selective_search` computes them for one image with
``cv2.ximgproc.segmentation.createSelectiveSearchSegmentation`` (the ``selective-search``
extra: ``pip install -e ".[selective-search]"``), and
:func:`compute_selective_search_proposals` runs it over a dataset in worker processes and writes
one file in detkit's proposals format (:mod:`detkit.data.proposals`), which
``DATASETS.PROPOSAL_FILES_TRAIN`` / ``_TEST`` read.

Speed on one core of this project's 2-core machine (OpenCV 5.0.0; CPU time per image, and
boxes per image; ``tools/selective_search.py`` prints its own figure in its last line):

* shapes dataset (shorter side 256 px): "fast" 0.23 s (190 boxes); "fast" with
  ``resize_to=128`` 0.05 s (80); "single" 0.03 s (46).
* a 500x375 photo (VOC's usual size): "fast" 0.72 s (1,377 boxes); "fast" with
  ``resize_to=200`` 0.16 s (625); "single" 0.12 s (309); "quality" 2.6 s (2,000, the cap).

VOC 2007 trainval (5,011 images) in "fast" mode is thus about an hour of one core; runs are
checkpointed and resumable.

Ranking: OpenCV orders boxes by ``rand() * level`` with level 1 the initial segments (its
source says this is inverted from the SS paper), so small regions tend to come first; the
order is kept as it is, and ``max_proposals`` keeps the first ones. OpenCV's "fast" mode gives
fewer boxes than 2,000 on a VOC-sized image, so the cap of the paper's "SS 2000" rarely cuts.
The randomness comes from the C library's ``rand()``, which :func:`selective_search` seeds
before each image, so an image's box order does not depend on which worker searched it.
"""

from detkit.data.selective_search.dataset import (
    SelectiveSearchRun,
    compute_selective_search_proposals,
    partial_proposals_path,
)
from detkit.data.selective_search.search import (
    DEFAULT_MIN_SIZE,
    SELECTIVE_SEARCH_MODES,
    rects_to_boxes,
    remove_duplicate_boxes,
    require_selective_search,
    selective_search,
)

__all__ = [
    "DEFAULT_MIN_SIZE",
    "SELECTIVE_SEARCH_MODES",
    "SelectiveSearchRun",
    "compute_selective_search_proposals",
    "partial_proposals_path",
    "rects_to_boxes",
    "remove_duplicate_boxes",
    "require_selective_search",
    "selective_search",
]
