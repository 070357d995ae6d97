"""Dynamic int8 quantization of fully connected layers for CPU inference.

Each ``nn.Linear`` (the halves of a :class:`~detkit.layers.LowRankLinear` included) becomes
PyTorch's dynamically quantized linear layer: its weights are stored as int8 with one scale
per output channel, and each call quantizes its input to uint8 with a scale computed from
that input, multiplies in integers (fbgemm on x86, qnnpack on ARM) and returns float32. Only
the matrix products change; the layers around them (ReLU, batch norm, dropout) stay float.
"""

from __future__ import annotations

import warnings

from torch import nn

__all__ = ["QUANTIZE_MODES", "quantize_linears"]

#: Values of ``MODEL.ROI_BOX_HEAD.QUANTIZE``: "" keeps float32.
QUANTIZE_MODES = ("", "int8")


def _quantized_linear_class() -> type[nn.Module]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization announces its move to torchao
        from torch.ao.nn.quantized.dynamic import Linear

    return Linear


def quantize_linears(module: nn.Module) -> int:
    """Replace every ``nn.Linear`` inside ``module`` by a dynamically quantized int8 copy, in
    place, for inference on the CPU.

    Returns:
        The number of layers replaced.

    Raises:
        ValueError: ``module`` is in training mode or not on the CPU (the int8 kernels are
            CPU kernels and have no backward).
    """
    if module.training:
        raise ValueError(
            "int8 quantization (MODEL.ROI_BOX_HEAD.QUANTIZE) is for inference: call "
            "model.eval() first; train in float32 and quantize the trained model."
        )
    devices = {p.device.type for p in module.parameters()}
    if devices - {"cpu"}:
        raise ValueError(
            f"int8 quantization (MODEL.ROI_BOX_HEAD.QUANTIZE) runs on the CPU only; the model "
            f"is on {', '.join(sorted(devices))}. Set MODEL.DEVICE cpu, or QUANTIZE ''."
        )
    quantized_linear = _quantized_linear_class()
    targets = [(name, m) for name, m in module.named_modules() if type(m) is nn.Linear]
    for name, linear in targets:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            replacement = quantized_linear.from_float(_with_qconfig(linear))
        parent_name, _, attribute = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, attribute, replacement)
    return len(targets)


def _with_qconfig(linear: nn.Linear) -> nn.Linear:
    """``linear`` tagged with the dynamic int8 recipe ``from_float`` reads: per-channel int8
    weights (one scale per output), activations quantized per call."""
    from torch.ao.quantization import per_channel_dynamic_qconfig

    linear.qconfig = per_channel_dynamic_qconfig
    return linear
