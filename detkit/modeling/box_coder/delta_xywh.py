"""Eq. 2: centre and log-size deltas between reference boxes and boxes, with weights."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from detkit.config import CfgNode
from detkit.modeling.box_coder.build import BOX_CODER_REGISTRY, BoxCoder

__all__ = ["DeltaXYWHBoxCoder"]

# Largest dw, dh decoded: a box at most 1000 / 16 times its reference (paper "Clamp tw, th").
_DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)


@BOX_CODER_REGISTRY.register()
class DeltaXYWHBoxCoder(BoxCoder):
    """The box parameterization of Eq. 2, scaled by per-coordinate weights.

    ``tx = wx * (x - xa) / wa``, ``ty = wy * (y - ya) / ha``, ``tw = ww * log(w / wa)``,
    ``th = wh * log(h / ha)`` with ``(x, y)`` box centres and ``(w, h)`` sizes. Weights
    (10, 10, 5, 5) are the Fast R-CNN head's targets divided by (0.1, 0.1, 0.2, 0.2).

    Args:
        weights: (wx, wy, ww, wh).
        scale_clamp: upper bound on the unweighted dw, dh before ``exp`` in ``decode``, so a
            wild prediction cannot overflow to inf.
        legacy_plus_one: the released code's convention: width ``x2 - x1 + 1``, centre
            ``x1 + 0.5 * w`` and decoded ``x2 = centre + 0.5 * w - 1``. Either way,
            ``decode(encode(ref, box), ref) == box``.
    """

    def __init__(
        self,
        *,
        weights: tuple[float, float, float, float],
        scale_clamp: float = _DEFAULT_SCALE_CLAMP,
        legacy_plus_one: bool = False,
    ):
        weights = tuple(float(w) for w in weights)
        if len(weights) != 4 or any(w <= 0 for w in weights):
            raise ValueError(
                f"DeltaXYWHBoxCoder needs 4 positive weights (wx, wy, ww, wh); got {weights} "
                "(the WEIGHTS key of the box coder's config node)."
            )
        self.weights = weights
        self.scale_clamp = float(scale_clamp)
        self.legacy_plus_one = bool(legacy_plus_one)

    @classmethod
    def from_config(
        cls, cfg: CfgNode, node: CfgNode, input_shape: object | None = None
    ) -> dict[str, Any]:
        """``node``: ``MODEL.RPN.BOX_CODER`` / ``MODEL.ROI_HEADS.BOX_CODER``, read for
        ``WEIGHTS`` and ``SCALE_CLAMP``, with ``MODEL.LEGACY_PLUS_ONE``; ``input_shape``:
        unused (a box coder has no input features)."""
        return {
            "weights": tuple(node.WEIGHTS),
            "scale_clamp": float(node.SCALE_CLAMP),
            "legacy_plus_one": bool(cfg.MODEL.LEGACY_PLUS_ONE),
        }

    def _centres_and_sizes(self, boxes: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        one = 1.0 if self.legacy_plus_one else 0.0
        widths = boxes[..., 2] - boxes[..., 0] + one
        heights = boxes[..., 3] - boxes[..., 1] + one
        return boxes[..., 0] + 0.5 * widths, boxes[..., 1] + 0.5 * heights, widths, heights

    def encode(self, reference: Tensor, target: Tensor) -> Tensor:
        """Eq. 2 deltas that turn each reference box into its target box.

        Args:
            reference: ``Tensor[N, 4]`` XYXY anchors or proposals (positive sizes).
            target: ``Tensor[N, 4]`` XYXY boxes.

        Returns:
            ``Tensor[N, 4]`` weighted (tx, ty, tw, th).
        """
        if reference.shape != target.shape or reference.shape[-1:] != (4,):
            raise ValueError(
                f"encode expects reference and target of the same shape [N, 4]; got "
                f"{tuple(reference.shape)} and {tuple(target.shape)}."
            )
        wx, wy, ww, wh = self.weights
        ref_x, ref_y, ref_w, ref_h = self._centres_and_sizes(reference)
        x, y, w, h = self._centres_and_sizes(target)
        dx = wx * (x - ref_x) / ref_w  # Eq. 2: tx
        dy = wy * (y - ref_y) / ref_h
        dw = ww * torch.log(w / ref_w)
        dh = wh * torch.log(h / ref_h)
        return torch.stack([dx, dy, dw, dh], dim=-1)

    def decode(self, deltas: Tensor, reference: Tensor) -> Tensor:
        """Boxes from (class-specific) deltas on reference boxes; inverse of ``encode``.

        Args:
            deltas: ``Tensor[N, 4 * K]`` weighted (tx, ty, tw, th), K boxes per reference
                (K = 1 for the RPN, K = classes + 1 for the class-specific Fast R-CNN head).
            reference: ``Tensor[N, 4]`` XYXY.

        Returns:
            ``Tensor[N, 4 * K]`` XYXY boxes, box k of row i in columns ``4k .. 4k + 3``.
        """
        if deltas.dim() != 2 or deltas.shape[1] % 4 != 0 or reference.shape != (deltas.shape[0], 4):
            raise ValueError(
                f"decode expects deltas [N, 4 * K] and reference [N, 4]; got "
                f"{tuple(deltas.shape)} and {tuple(reference.shape)}."
            )
        reference = reference.to(deltas.dtype)
        ref_x, ref_y, ref_w, ref_h = (v[:, None] for v in self._centres_and_sizes(reference))
        wx, wy, ww, wh = self.weights
        dx = deltas[:, 0::4] / wx  # [N, K]
        dy = deltas[:, 1::4] / wy
        dw = (deltas[:, 2::4] / ww).clamp(max=self.scale_clamp)  # exp cannot overflow
        dh = (deltas[:, 3::4] / wh).clamp(max=self.scale_clamp)

        x = dx * ref_w + ref_x
        y = dy * ref_h + ref_y
        w = torch.exp(dw) * ref_w
        h = torch.exp(dh) * ref_h
        one = 1.0 if self.legacy_plus_one else 0.0
        boxes = torch.stack(
            [x - 0.5 * w, y - 0.5 * h, x + 0.5 * w - one, y + 0.5 * h - one], dim=-1
        )  # [N, K, 4]
        return boxes.reshape(deltas.shape)
