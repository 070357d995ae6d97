"""``ExportableDetector``: a detector as one image tensor in, plain tensors out.

The exporters (``torch.export``, ONNX) trace a module whose inputs and outputs are tensors;
a detkit model takes a list of dicts and returns ``Instances``. The wrapper adapts only the
signature: its forward calls the model itself (preprocessor, backbone, proposal generator,
ROI heads, exactly as eager inference) on ``[{"image": image}]``.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from detkit.modeling.meta_arch import GeneralizedRCNN, ProposalNetwork
from detkit.modeling.poolers.roi_pool import ROIAlign

__all__ = [
    "SUPPORTED_META_ARCHITECTURES",
    "ExportableDetector",
    "FrozenBatchNorm1d",
    "detector_outputs",
    "output_names_of",
]

#: Meta-architectures the wrapper exports, and the names of their outputs.
SUPPORTED_META_ARCHITECTURES: dict[type[nn.Module], tuple[str, ...]] = {
    GeneralizedRCNN: ("boxes", "scores", "classes"),
    ProposalNetwork: ("boxes", "objectness_logits"),
}


class FrozenBatchNorm1d(nn.Module):
    """``nn.BatchNorm1d`` in eval mode as ``x * scale + shift`` (as torchvision's
    ``FrozenBatchNorm2d`` for 4-D maps), for ``[R, C]`` inputs.

    Why: aten's ``batch_norm`` branches on whether its input is empty, which an exporter
    cannot decide for the RoI features of a box head (their number depends on the image).
    The arithmetic is the same normalization; results agree to float32 rounding.
    """

    def __init__(self, norm: nn.BatchNorm1d):
        super().__init__()
        channels = norm.num_features
        weight = norm.weight.detach() if norm.affine else torch.ones(channels)
        bias = norm.bias.detach() if norm.affine else torch.zeros(channels)
        self.register_buffer("scale", weight * (norm.running_var + norm.eps).rsqrt())
        self.register_buffer("shift", bias - norm.running_mean * self.scale)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale + self.shift


def _freeze_batchnorm1d(module: nn.Module) -> None:
    """Replace, in place, every ``nn.BatchNorm1d`` under ``module`` by a
    :class:`FrozenBatchNorm1d` with its running statistics."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm1d):
            if not child.track_running_stats:
                raise ValueError(
                    f"{name}: a BatchNorm1d without running statistics normalizes with the "
                    "statistics of each batch of RoIs; it cannot be exported as a fixed layer."
                )
            setattr(module, name, FrozenBatchNorm1d(child))
        else:
            _freeze_batchnorm1d(child)


def output_names_of(model: nn.Module) -> tuple[str, ...]:
    """The names of the tensors the exported ``model`` returns.

    Raises:
        ValueError: the model's meta-architecture cannot be exported (naming those that can).
    """
    for kind, names in SUPPORTED_META_ARCHITECTURES.items():
        if isinstance(model, kind):
            return names
    supported = ", ".join(k.__name__ for k in SUPPORTED_META_ARCHITECTURES)
    raise ValueError(
        f"Export supports the meta-architectures {supported}; this model is a "
        f"{type(model).__name__}. Export a config whose MODEL.META_ARCHITECTURE is one of "
        "them, or wrap the model in a module taking one image tensor and returning tensors."
    )


class ExportableDetector(nn.Module):
    """A copy of ``model`` in eval mode, called on one image and returning plain tensors.

    ``forward(image)`` takes ``float32 [C, H, W]``: the image already converted to
    ``INPUT.FORMAT`` and resized for testing (0-255), i.e. what ``batched_inputs[i]["image"]``
    holds at inference. It runs ``model([{"image": image}])`` (no ``height``/``width``, so no
    rescale: boxes are in the pixels of ``image``) and returns, for ``GeneralizedRCNN``,
    ``boxes [N, 4]`` (x1, y1, x2, y2), ``scores [N]`` and ``classes [N]`` (int64); for
    ``ProposalNetwork``, ``boxes [N, 4]`` and ``objectness_logits [N]``.

    The copy differs from ``model`` only where an exporter needs it, with the same results:

    - every ``ROIAlign`` uses torchvision's kernel (``implementation "torchvision"``, the
      one exporters translate; detkit's separable RoIAlign computes the same values);
    - every ``nn.BatchNorm1d`` becomes a :class:`FrozenBatchNorm1d`.

    Args:
        model: a built detector (``build_model``); it is not modified.

    Raises:
        ValueError: the model's meta-architecture is not one of
            :data:`SUPPORTED_META_ARCHITECTURES`.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.output_names = output_names_of(model)
        self.model = copy.deepcopy(model).eval()
        for module in self.model.modules():
            if isinstance(module, ROIAlign):
                module.implementation = "torchvision"
                module.implementation_by_mode = {}
        _freeze_batchnorm1d(self.model)

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        """``image: float32 [C, H, W]`` -> the tensors named by ``self.output_names``."""
        return detector_outputs(self.model, image)


def detector_outputs(model: nn.Module, image: Tensor) -> tuple[Tensor, ...]:
    """``model([{"image": image}])`` of one image as the tensors :class:`ExportableDetector`
    returns: ``(boxes, scores, classes)``, or ``(boxes, objectness_logits)`` for a model of
    proposals. Eager checks call it on the original model: the same path as the export."""
    output = model([{"image": image}])[0]
    if "proposals" in output:
        proposals = output["proposals"]
        return proposals.proposal_boxes.tensor, proposals.objectness_logits
    detections = output["instances"]
    return detections.pred_boxes.tensor, detections.scores, detections.pred_classes
