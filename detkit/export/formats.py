"""Writing an :class:`~detkit.export.wrapper.ExportableDetector` to a file, and running the
file back.

Two formats, both with dynamic image height and width and data-dependent output counts:

- ``"onnx"``: ``torch.onnx.export(..., dynamo=True)``, run with onnxruntime. torchvision's
  ``nms``, ``roi_align`` and ``roi_pool`` become the ONNX operators NonMaxSuppression,
  RoiAlign and MaxRoiPool: onnxscript's torchlib translates the first two, the last one
  goes through a translation here (torchlib's fails on the operator's arguments).
- ``"torch-export"``: ``torch.export.export`` saved with ``torch.export.save`` (``.pt2``),
  loaded with ``torch.export.load(path).module()``; it needs torch and torchvision only.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import warnings
from collections.abc import Callable

import torch
from torch import Tensor

from detkit.export.wrapper import ExportableDetector

__all__ = [
    "FILE_NAMES",
    "FORMATS",
    "MAX_SIDE",
    "MIN_SIDE",
    "export_detector",
    "load_exported",
    "require_export_dependencies",
]

FORMATS = ("onnx", "torch-export")
FILE_NAMES = {"onnx": "model.onnx", "torch-export": "model.pt2"}
#: The range of image heights and widths the exported graph accepts.
MIN_SIDE, MAX_SIDE = 32, 4096
#: Runtime packages of each format: ``{format: [(module, pip package), ...]}``.
_DEPENDENCIES = {
    "onnx": [("onnx", "onnx"), ("onnxscript", "onnxscript"), ("onnxruntime", "onnxruntime")],
    "torch-export": [],
}


def require_export_dependencies(fmt: str) -> None:
    """Raise ``ValueError`` for an unknown format, ``ModuleNotFoundError`` (saying what to
    install) when a package the format needs is missing."""
    if fmt not in FORMATS:
        raise ValueError(f"Unknown export format '{fmt}'; valid: {', '.join(FORMATS)}.")
    missing = [
        pip for module, pip in _DEPENDENCIES[fmt] if importlib.util.find_spec(module) is None
    ]
    if missing:
        raise ModuleNotFoundError(
            f"The {fmt} format needs {', '.join(missing)}, which is not installed: "
            'pip install -e ".[export]" from the detkit checkout (or pip install detkit[export]).'
        )


@functools.cache
def _register_nms_fake() -> None:
    """Give ``torchvision::nms`` a fake implementation whose output may hold 0 boxes.

    torchvision's own (0.29) creates the output length with the deprecated
    ``create_unbacked_symint()``, whose lower bound is 2, so a traced program asserts at
    run time that NMS kept at least 2 boxes and fails on an image with 0 or 1 detections.
    Registered once per process; it replaces torchvision's for every later trace too.
    """

    @torch.library.register_fake("torchvision::nms")
    def _nms_fake(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
        torch._check(boxes.dim() == 2 and boxes.shape[1] == 4, lambda: "boxes must be [N, 4]")
        torch._check(scores.dim() == 1, lambda: "scores must be [N]")
        kept = torch.library.get_ctx().new_dynamic_size()
        return boxes.new_empty(kept, dtype=torch.long)


def _roi_pool_to_onnx(
    features, rois, spatial_scale: float, pooled_height: int, pooled_width: int
) -> tuple:
    """``torchvision::roi_pool`` as ONNX's MaxRoiPool (the same Caffe pooling: box edges
    rounded to the feature grid, max per bin).

    onnxscript's translation of this operator takes torchvision's Python arguments
    (``output_size``) rather than the operator's, and fails on every call; this one follows
    the operator: rois ``[K, 5]`` (image index, x1, y1, x2, y2), two outputs. The second,
    the argmax kept for the backward pass, is unused at inference and gets a placeholder.
    """
    from onnx import TensorProto
    from onnxscript import opset18 as op

    pooled = op.MaxRoiPool(
        features,
        rois,
        pooled_shape=[pooled_height, pooled_width],
        spatial_scale=spatial_scale,
    )
    return pooled, op.Cast(pooled, to=TensorProto.INT32)  # torchvision's argmax dtype


def _dynamic_shapes() -> dict[str, dict[int, torch.export.Dim]]:
    """Dynamic height and width of the ``image`` input (its channel count is fixed)."""
    height = torch.export.Dim("height", min=MIN_SIDE, max=MAX_SIDE)
    width = torch.export.Dim("width", min=MIN_SIDE, max=MAX_SIDE)
    return {"image": {1: height, 2: width}}


def export_detector(detector: ExportableDetector, example: Tensor, fmt: str, path: str) -> str:
    """Trace ``detector`` on ``example`` (``float32 [C, H, W]``) and write format ``fmt`` to
    ``path``; returns ``path``. The graph accepts other sizes in
    ``[MIN_SIDE, MAX_SIDE]`` and any number of detections, 0 included.

    Raises:
        RuntimeError: a component of the model cannot be traced with dynamic sizes (what
            and where, and how such code is written: docs/export.md).
    """
    require_export_dependencies(fmt)
    _register_nms_fake()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    detector = detector.eval()
    try:
        with torch.no_grad():
            if fmt == "torch-export":
                program = torch.export.export(
                    detector, (example,), dynamic_shapes=_dynamic_shapes()
                )
            else:
                onnx_program = torch.onnx.export(
                    detector,
                    (example,),
                    dynamo=True,
                    dynamic_shapes=_dynamic_shapes(),
                    input_names=["image"],
                    output_names=list(detector.output_names),
                    custom_translation_table={
                        torch.ops.torchvision.roi_pool.default: _roi_pool_to_onnx
                    },
                    verbose=False,
                )
    except Exception as error:
        explained = _explain_trace_error(error)
        if explained is None:
            raise
        raise explained from error
    if fmt == "torch-export":
        with warnings.catch_warnings():
            # Said of weights in the channels_last layout (not contiguous): they are saved
            # whole all the same; the checks compare the loaded program's outputs.
            warnings.filterwarnings("ignore", message="No complete tensor found in the group")
            torch.export.save(program, path)
        return path
    _name_output_count(
        onnx_program.model, "detections" if "classes" in detector.output_names else "proposals"
    )
    onnx_program.save(path)
    return path


def _explain_trace_error(error: BaseException) -> RuntimeError | None:
    """What to do about a tracing error of a model component that is not exportable yet:
    a branch on a data-dependent value, or an image side made a constant. None for others."""
    from torch.fx.experimental.symbolic_shapes import GuardOnDataDependentSymNode

    causes = []
    while error is not None and error not in causes:
        causes.append(error)
        error = error.__cause__ or error.__context__
    where = "docs/export.md, section 'Exportable model code'"
    for cause in causes:
        lines = str(cause).strip().splitlines() or [""]
        if isinstance(cause, GuardOnDataDependentSymNode):
            # torch names the model's line as "Caused by: (file:line in function)".
            at = next((f" {x.strip()}" for x in lines if x.startswith("Caused by:")), "")
            return RuntimeError(
                "A model component branches on a number known only at run time (e.g. how "
                f"many boxes pass a threshold), which cannot be exported: {lines[0]}{at}. "
                "Keep such counts symbolic (torch.sym_int instead of int(), no len() of "
                "tensors) and, while torch.compiler.is_compiling(), take a path valid for "
                f"any count: {where}."
            )
        if lines[0].startswith("Constraints violated"):
            return RuntimeError(
                "A model component turned the image height or width into a constant (an "
                f"int() of a size, or a test on it): {lines[0]} Keep sizes symbolic "
                f"(torch.sym_int instead of int()): {where}."
            )
    return None


def _name_output_count(model, name: str) -> None:
    """Name the outputs' first dimension ``name`` in the ONNX graph (``model``, an
    ``onnx_ir.Model``), instead of the tracer's expression for it (e.g. ``Min(100, u3)``)."""
    import onnx_ir as ir

    for value in model.graph.outputs:
        if value.shape is not None and len(value.shape) > 0:
            value.shape = ir.Shape([name, *value.shape[1:]])


def load_exported(path: str, threads: int = 0) -> Callable[[Tensor], tuple[Tensor, ...]]:
    """A function running the exported file at ``path`` (``.onnx`` or ``.pt2``) on one
    ``float32 [C, H, W]`` CPU tensor and returning the outputs as CPU tensors.

    ``threads``: onnxruntime's intra-op threads (0: its default, one per core); a ``.pt2``
    program runs with torch's (``torch.set_num_threads``).
    """
    if path.endswith(".onnx"):
        require_export_dependencies("onnx")
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: not the graph optimizer's notes
        options.intra_op_num_threads = threads
        session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])

        def run_onnx(image: Tensor) -> tuple[Tensor, ...]:
            feed = {"image": image.detach().cpu().float().contiguous().numpy()}
            return tuple(torch.from_numpy(out) for out in session.run(None, feed))

        return run_onnx
    if path.endswith(".pt2"):
        module = torch.export.load(path).module()

        def run_program(image: Tensor) -> tuple[Tensor, ...]:
            with torch.no_grad():
                return tuple(module(image.detach().cpu().float()))

        return run_program
    raise ValueError(f"{path}: not an exported model (expected a .onnx or .pt2 file).")
