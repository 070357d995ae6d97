"""Online hard example mining: keep the examples with the highest loss."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from detkit.config import CfgNode
from detkit.modeling.sampler.build import SAMPLER_REGISTRY, Sampler

__all__ = ["OHEMSampler"]


@SAMPLER_REGISTRY.register()
class OHEMSampler(Sampler):
    """Online hard example mining (Shrivastava, Gupta, Girshick, CVPR 2016).

    The caller computes the loss of every labelled example (e.g. every RoI, in a forward
    pass without gradients); this sampler keeps the ``batch_size_per_image`` examples with
    the highest loss among those labelled 1 or 0, ties broken by the lower index, so the
    choice is deterministic. As in that paper there is no positive fraction: the losses
    decide the foreground/background mix, and ``POSITIVE_FRACTION`` in the config node is
    not read. The paper also removes overlapping RoIs (NMS at 0.7 on their losses) before
    ranking; this sampler sees no boxes, so a caller wanting that applies it first and
    gives the suppressed examples label -1.

    Args:
        batch_size_per_image: hard examples kept per image.
    """

    needs_losses = True

    def __init__(self, *, batch_size_per_image: int):
        if batch_size_per_image < 0:
            raise ValueError(
                f"batch_size_per_image must be >= 0; got {batch_size_per_image} "
                "(BATCH_SIZE_PER_IMAGE of the sampler's config node)."
            )
        self.batch_size_per_image = int(batch_size_per_image)

    @classmethod
    def from_config(
        cls, cfg: CfgNode, node: CfgNode, input_shape: object | None = None
    ) -> dict[str, Any]:
        """``node``: ``MODEL.ROI_HEADS.SAMPLER`` (or ``MODEL.RPN.SAMPLER``), read for
        ``BATCH_SIZE_PER_IMAGE``; ``input_shape``: unused (a sampler has no input
        features)."""
        return {"batch_size_per_image": int(node.BATCH_SIZE_PER_IMAGE)}

    def __call__(
        self, labels: Tensor, scores: Tensor | None = None, losses: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Keep the hardest labelled examples of one image.

        Args:
            labels: ``Tensor[N]``, 1 positive, 0 negative, -1 ignore (never kept).
            scores: unused.
            losses: ``Tensor[N]`` per-example loss (required).

        Returns:
            ``(positive_idx, negative_idx)``: int64 indices of the kept examples, each in
            order of decreasing loss.
        """
        if losses is None:
            raise ValueError(
                "OHEMSampler ranks examples by their loss: the caller must pass per-example "
                "losses (losses=Tensor[N]) because needs_losses is True. Use "
                "BalancedPositiveNegativeSampler where losses are not computed before sampling."
            )
        if losses.shape != labels.shape:
            raise ValueError(
                f"OHEMSampler needs one loss per label; got losses of shape "
                f"{tuple(losses.shape)} for labels of shape {tuple(labels.shape)}."
            )
        candidates = torch.nonzero(labels >= 0, as_tuple=True)[0]
        # Stable sort: among equal losses the lower index (already ascending) comes first.
        order = torch.sort(losses.detach()[candidates], descending=True, stable=True).indices
        kept = candidates[order[: self.batch_size_per_image]]
        kept_labels = labels[kept]
        return kept[kept_labels == 1], kept[kept_labels == 0]
