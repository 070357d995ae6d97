"""Proposals computed beforehand (RPN dumps, selective search) instead of by a network."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from detkit.config import CfgNode
from detkit.layers import ShapeSpec
from detkit.modeling.proposal_generator.build import PROPOSAL_GENERATOR_REGISTRY
from detkit.structures import ImageList, Instances

__all__ = ["PrecomputedProposals"]


@PROPOSAL_GENERATOR_REGISTRY.register()
class PrecomputedProposals(nn.Module):
    """Hands the proposals that came with the inputs to the ROI heads: Fast R-CNN on
    stored proposals (the paper's steps 2 and 4 of alternating training, and its selective
    search rows).

    The proposals are read from files by ``DATASETS.PROPOSAL_FILES_TRAIN`` / ``_TEST`` and
    moved with each image by the dataset mapper (its ``"proposals"``). This module has no
    parameters and no loss; it keeps each image's ``topk`` best by objectness.

    Args:
        topk: ``(train, test)`` proposals kept per image (the paper: 2,000 in training;
            300 RPN or 2,000 selective search proposals at test).
    """

    def __init__(self, *, topk: tuple[int, int] = (2000, 300)):
        super().__init__()
        if min(topk) < 1:
            raise ValueError(
                f"PrecomputedProposals needs top-k >= 1; got {tuple(topk)} (config keys "
                "MODEL.PRECOMPUTED_PROPOSALS.TOPK_TRAIN / TOPK_TEST)."
            )
        self.topk = tuple(int(k) for k in topk)

    @classmethod
    def from_config(
        cls, cfg: CfgNode, node: CfgNode, input_shape: dict[str, ShapeSpec] | None = None
    ) -> dict[str, Any]:
        """Reads ``TOPK_TRAIN`` and ``TOPK_TEST`` of ``MODEL.PRECOMPUTED_PROPOSALS``, not of
        ``node`` (``MODEL.PROPOSAL_GENERATOR``, which only names this class);
        ``input_shape``: the backbone's ``{name: ShapeSpec}``, unused."""
        node = cfg.MODEL.PRECOMPUTED_PROPOSALS
        return {"topk": (node.TOPK_TRAIN, node.TOPK_TEST)}

    def forward(
        self,
        images: ImageList,
        features: dict[str, Tensor],
        gt_instances: list[Instances] | None = None,
        input_proposals: list[Instances] | None = None,
    ) -> tuple[list[Instances], dict[str, Tensor]]:
        """Per image, ``Instances(proposal_boxes, objectness_logits)`` of at most ``topk``
        boxes on the batch's device, in decreasing objectness; no losses.

        Args:
            images: the padded batch (its device and image sizes).
            features: unused (the proposals do not depend on them).
            gt_instances: unused.
            input_proposals: the ``"proposals"`` of each batched input, in the resized
                input's pixels (the dataset mapper's output).
        """
        if input_proposals is None or len(input_proposals) != len(images):
            raise ValueError(
                "MODEL.PROPOSAL_GENERATOR.NAME is PrecomputedProposals, but the inputs carry "
                "no 'proposals'. Give a proposals file per dataset with "
                "DATASETS.PROPOSAL_FILES_TRAIN (training) and DATASETS.PROPOSAL_FILES_TEST "
                "(evaluation), e.g. the proposals.npz an RPN's --eval-only run writes."
            )
        k = self.topk[0 if self.training else 1]
        device = images.tensor.device
        results = []
        for proposals, image_size in zip(input_proposals, images.image_sizes):
            if tuple(proposals.image_size) != tuple(image_size):
                raise ValueError(
                    f"Proposals were made for a {proposals.image_size} image but the input is "
                    f"{tuple(image_size)}: they must come from the dataset mapper with the image."
                )
            logits = proposals.objectness_logits
            order = logits.argsort(descending=True, stable=True)[:k]
            results.append(
                Instances(
                    image_size,
                    proposal_boxes=proposals.proposal_boxes[order].to(device),
                    objectness_logits=logits[order].to(device),
                )
            )
        return results, {}
