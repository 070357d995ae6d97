"""Random sampling of a fixed-size mini-batch with at most a given fraction of positives."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from detkit.config import CfgNode
from detkit.modeling.sampler.build import SAMPLER_REGISTRY, Sampler

__all__ = ["BalancedPositiveNegativeSampler"]


@SAMPLER_REGISTRY.register()
class BalancedPositiveNegativeSampler(Sampler):
    """Uniformly random positives and negatives, without replacement (paper 3.1.3).

    ``num_pos = min(int(batch_size_per_image * positive_fraction), #positives)`` and
    ``num_neg = min(batch_size_per_image - num_pos, #negatives)``: negatives pad a lack of
    positives ("we pad the mini-batch with negative ones"); when there are too few examples
    in total the batch is smaller, not padded. RPN: 256 anchors, half positive; Fast R-CNN:
    128 RoIs, a quarter foreground.

    Args:
        batch_size_per_image: examples sampled per image.
        positive_fraction: largest fraction of positives in the batch.
        seed: with a seed, draws come from the sampler's own ``torch.Generator``: reproducible
            and independent of the global RNG. Without one, the global torch RNG is used.
    """

    def __init__(
        self, *, batch_size_per_image: int, positive_fraction: float, seed: int | None = None
    ):
        if batch_size_per_image < 0:
            raise ValueError(
                f"batch_size_per_image must be >= 0; got {batch_size_per_image} "
                "(BATCH_SIZE_PER_IMAGE of the sampler's config node)."
            )
        if not 0.0 <= positive_fraction <= 1.0:
            raise ValueError(
                f"positive_fraction must be in [0, 1]; got {positive_fraction} "
                "(POSITIVE_FRACTION of the sampler's config node)."
            )
        self.batch_size_per_image = int(batch_size_per_image)
        self.positive_fraction = float(positive_fraction)
        self.seed = seed
        self.generator: torch.Generator | None = None
        if seed is not None:
            self.generator = torch.Generator()
            self.generator.manual_seed(int(seed))

    @classmethod
    def from_config(
        cls, cfg: CfgNode, node: CfgNode, input_shape: object | None = None
    ) -> dict[str, Any]:
        """``node``: ``MODEL.RPN.SAMPLER`` / ``MODEL.ROI_HEADS.SAMPLER``, read for
        ``BATCH_SIZE_PER_IMAGE`` and ``POSITIVE_FRACTION``; ``input_shape``: unused (a
        sampler has no input features)."""
        return {
            "batch_size_per_image": int(node.BATCH_SIZE_PER_IMAGE),
            "positive_fraction": float(node.POSITIVE_FRACTION),
        }

    def _choose(self, candidates: Tensor, count: int) -> Tensor:
        """``count`` entries of the 1-D ``candidates``, uniformly without replacement."""
        if self.generator is not None:  # the generator is on the CPU
            order = torch.randperm(candidates.numel(), generator=self.generator)
            order = order.to(candidates.device)
        else:
            order = torch.randperm(candidates.numel(), device=candidates.device)
        return candidates[order[:count]]

    def __call__(
        self, labels: Tensor, scores: Tensor | None = None, losses: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Sample the examples of one image.

        Args:
            labels: ``Tensor[N]``, 1 positive, 0 negative, -1 ignore (never sampled).
            scores: unused.
            losses: unused.

        Returns:
            ``(positive_idx, negative_idx)``: int64 indices into the N examples, in random
            order, disjoint and without repeats.
        """
        positive = torch.nonzero(labels == 1, as_tuple=True)[0]
        negative = torch.nonzero(labels == 0, as_tuple=True)[0]
        num_pos = min(int(self.batch_size_per_image * self.positive_fraction), positive.numel())
        num_neg = min(self.batch_size_per_image - num_pos, negative.numel())
        return self._choose(positive, num_pos), self._choose(negative, num_neg)
