"""Truncated SVD of fully connected layers (Fast R-CNN, section 3.1): one ``out x in`` layer
replaced by two, ``rank x in`` then ``out x rank``, for ``rank (in + out)`` multiplies
instead of ``in x out``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["LowRankLinear", "factorize_linears"]


class LowRankLinear(nn.Module):
    """``y = expand(reduce(x))``: ``reduce`` is ``Linear(in, rank)`` without bias, ``expand``
    ``Linear(rank, out)`` with the original layer's bias (if it had one).

    Built empty (to load a converted checkpoint into) or from a trained layer with
    :meth:`from_linear`.
    """

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True):
        super().__init__()
        if not 1 <= rank <= min(in_features, out_features):
            raise ValueError(
                f"An SVD rank must be in [1, min(in, out)] = [1, {min(in_features, out_features)}]"
                f" for a {in_features} -> {out_features} layer; got {rank} "
                "(MODEL.ROI_BOX_HEAD.SVD_RANKS)."
            )
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.reduce = nn.Linear(in_features, rank, bias=False)
        self.expand = nn.Linear(rank, out_features, bias=bias)

    @classmethod
    @torch.no_grad()
    def from_linear(cls, linear: nn.Linear, rank: int) -> LowRankLinear:
        """The best rank-``rank`` approximation of ``linear`` (Eckart-Young):
        ``W = U S V^T`` truncated to the ``rank`` largest singular values,
        ``reduce = S_t V_t^T``, ``expand = U_t``; the bias is kept."""
        out = cls(linear.in_features, linear.out_features, rank, bias=linear.bias is not None)
        weight = linear.weight.detach().double()
        u, s, vh = torch.linalg.svd(weight, full_matrices=False)
        out.reduce.weight.copy_((s[:rank, None] * vh[:rank]).to(linear.weight.dtype))
        out.expand.weight.copy_(u[:, :rank].to(linear.weight.dtype))
        if linear.bias is not None:
            out.expand.bias.copy_(linear.bias)
        return out.to(linear.weight.device)

    def forward(self, x: Tensor) -> Tensor:
        return self.expand(self.reduce(x))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"


def factorize_linears(module: nn.Module, ranks: list[int], from_weights: bool = False) -> int:
    """Replace the first ``len(ranks)`` ``nn.Linear`` layers of ``module`` (in registration
    order, e.g. a box head's fc6, fc7) by :class:`LowRankLinear` of those ranks, in place.

    Args:
        ranks: one rank per layer.
        from_weights: factorize the layers' weights (converting a trained model); False
            builds empty factorized layers (a model to load a converted checkpoint into).

    Returns:
        The number of layers replaced (``len(ranks)``).

    Raises:
        ValueError: ``module`` has fewer linear layers than ranks.
    """
    linears = [(name, m) for name, m in module.named_modules() if isinstance(m, nn.Linear)]
    if len(linears) < len(ranks):
        raise ValueError(
            f"MODEL.ROI_BOX_HEAD.SVD_RANKS has {len(ranks)} ranks but the box head "
            f"{type(module).__name__} has {len(linears)} fully connected layers "
            f"({', '.join(n for n, _ in linears) or 'none'}); give at most one rank per layer."
        )
    for (name, linear), rank in zip(linears, ranks):
        if from_weights:
            replacement = LowRankLinear.from_linear(linear, int(rank))
        else:
            replacement = LowRankLinear(
                linear.in_features, linear.out_features, int(rank), linear.bias is not None
            ).to(linear.weight.device)
        parent_name, _, attribute = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, attribute, replacement)
    return len(ranks)
