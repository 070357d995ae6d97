"""``ProposalFileWriter``: a proposal model's outputs over a dataset, saved as a proposals file."""

from __future__ import annotations

import logging

import numpy as np

from detkit.evaluation.evaluator import DatasetEvaluator
from detkit.utils import comm

__all__ = ["ProposalFileWriter"]

logger = logging.getLogger(__name__)


class ProposalFileWriter(DatasetEvaluator):
    """Collects ``outputs["proposals"]`` of every image and writes one proposals file
    (:func:`detkit.data.save_proposals`) that ``DATASETS.PROPOSAL_FILES_*`` can read back.

    Boxes are stored in continuous original-image pixels, as dataset annotations are: with
    ``legacy_plus_one`` the model's pixel-index boxes (``x2`` the last pixel) get ``x2 + 1``,
    ``y2 + 1``, and the dataset mapper converts them back for a legacy model.

    Args:
        path: the ``.npz`` file to write (on the main process, after every image is seen).
        legacy_plus_one: the model's width convention (``MODEL.LEGACY_PLUS_ONE``).
        source: what made the proposals, stored in the file.
    """

    def __init__(self, path: str, *, legacy_plus_one: bool = False, source: str = ""):
        self.path = path
        self.legacy_plus_one = legacy_plus_one
        self.source = source
        self._proposals: dict = {}

    def reset(self) -> None:
        self._proposals = {}

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        for inp, out in zip(inputs, outputs):
            if "proposals" not in out:
                raise KeyError(
                    f"ProposalFileWriter needs outputs with 'proposals' (image "
                    f"{inp.get('image_id')!r}); got keys {sorted(out)}."
                )
            proposals = out["proposals"].to("cpu")
            boxes = proposals.proposal_boxes.tensor.numpy().astype(np.float32).reshape(-1, 4)
            if self.legacy_plus_one:
                boxes = boxes + np.array([0, 0, 1, 1], dtype=np.float32)
            logits = proposals.objectness_logits.numpy().astype(np.float32).reshape(-1)
            self._proposals[inp["image_id"]] = (boxes, logits)

    def evaluate(self) -> dict:
        from detkit.data.proposals import save_proposals  # the data package is optional

        merged = comm.gather_dict(self._proposals)
        if merged is None:
            return {}
        ids = list(merged)
        save_proposals(
            self.path,
            ids,
            [merged[i][0] for i in ids],
            [merged[i][1] for i in ids],
            source=self.source,
        )
        return {}
