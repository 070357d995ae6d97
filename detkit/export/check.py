"""Checking an exported detector against eager PyTorch: test inputs and output parity.

The exported graph starts after the resize (see :class:`~detkit.export.ExportableDetector`),
so the inputs here are resized exactly as :class:`~detkit.engine.predictor.DefaultPredictor`
and the test loader resize them (shortest side ``INPUT.MIN_SIZE_TEST``, longest at most
``INPUT.MAX_SIZE_TEST``, bilinear).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from detkit.config import CfgNode
from detkit.data.datasets import render_shapes_image
from detkit.data.mapper import read_image
from detkit.data.transforms import ResizeTransform, resize_shortest_edge_shape

__all__ = ["Parity", "check_inputs", "compare_outputs", "detector_input", "median_ms"]

#: Seeds of the shapes scenes drawn when no check image is given (two sizes, with objects).
_SYNTHETIC_SEEDS = (0, 1)
_GREY = 127


def detector_input(cfg: CfgNode, image: np.ndarray) -> Tensor:
    """``image`` (uint8 ``[H, W, 3]`` in ``INPUT.FORMAT``) resized for testing, as the
    ``float32 [3, H', W']`` tensor a detector (and an exported one) takes."""
    height, width = image.shape[:2]
    size = resize_shortest_edge_shape(
        height, width, cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST
    )
    resized = ResizeTransform(height, width, *size).apply_image(np.ascontiguousarray(image))
    return torch.as_tensor(resized.astype(np.float32).transpose(2, 0, 1))


def check_inputs(cfg: CfgNode, paths: list[str], blank: bool = True) -> list[tuple[str, Tensor]]:
    """``(name, input tensor)`` of each image file of ``paths``. Without paths: two synthetic
    shapes scenes of different sizes and, with ``blank``, a uniform grey image, which a
    trained detector finds nothing in (the case of no detections). Leave the blank image out
    for proposals (there are always some) and for random weights: on a uniform image many
    boxes then score exactly alike, and NMS keeps whichever comes first, an order each
    runtime sets its own way."""
    if paths:
        return [(path, detector_input(cfg, read_image(path, cfg.INPUT.FORMAT))) for path in paths]
    inputs = []
    for seed in _SYNTHETIC_SEEDS:
        image, _ = render_shapes_image(np.random.default_rng(seed))  # BGR
        image = image[:, :, ::-1] if cfg.INPUT.FORMAT == "RGB" else image
        inputs.append((f"synthetic shapes scene (seed {seed})", detector_input(cfg, image)))
    if blank:
        grey = np.full((240, 320, 3), _GREY, dtype=np.uint8)
        inputs.append((f"uniform grey ({_GREY})", detector_input(cfg, grey)))
    return inputs


@dataclass(frozen=True)
class Parity:
    """How an exported model's outputs on one image compare with eager PyTorch's.

    The outputs are compared as sets, not row by row: each detection is matched with the
    nearest detection (largest coordinate difference) of the same class in the other
    output, in both directions. Detections of equal scores may come in either order (the
    sort and NMS of onnxruntime break ties differently), which a row-by-row comparison
    would report as boxes hundreds of pixels apart.

    ``box_diff`` is the largest distance of a detection to its match (pixels), inf when
    one has none; ``score_diff`` the largest score difference of matched detections
    (probabilities, or objectness logits for proposals); both NaN when the counts differ.
    ``classes_equal``: the same classes, counted with repetition (True for proposals).
    """

    name: str
    size: tuple[int, int]
    noun: str
    eager_count: int
    exported_count: int
    box_diff: float
    score_diff: float
    classes_equal: bool

    def within(self, box_atol: float, score_atol: float) -> bool:
        """Same count and classes, boxes within ``box_atol`` px, scores within ``score_atol``."""
        return (
            self.eager_count == self.exported_count
            and self.classes_equal
            and self.box_diff <= box_atol
            and self.score_diff <= score_atol
        )

    def describe(self) -> str:
        """One line: image, size, counts, differences."""
        if self.eager_count == self.exported_count:
            counts = f"{self.eager_count} {self.noun}"
        else:
            counts = f"{self.eager_count} {self.noun} eager vs {self.exported_count} exported"
        line = (
            f"{self.name} [{self.size[0]}x{self.size[1]}]: {counts}, max |d box| "
            f"{self.box_diff:.2e} px, max |d score| {self.score_diff:.2e}"
        )
        if self.noun == "detections":
            line += ", classes equal" if self.classes_equal else ", CLASSES DIFFER"
        return line


def _matched_differences(
    eager: tuple[Tensor, ...], exported: tuple[Tensor, ...]
) -> tuple[float, float]:
    """(largest box distance, largest score difference) of each detection of either output
    to its nearest same-class detection in the other; the outputs have equal counts."""
    if eager[0].shape[0] == 0:
        return 0.0, 0.0
    boxes, other_boxes = eager[0].double(), exported[0].double()
    distance = torch.cdist(boxes, other_boxes, p=math.inf)  # [eager, exported]
    if len(eager) == 3:
        distance[eager[2][:, None] != exported[2][None, :]] = math.inf
    to_exported, nearest_exported = distance.min(dim=1)
    to_eager, nearest_eager = distance.min(dim=0)
    scores, other_scores = eager[1].double(), exported[1].double()
    score_diff = torch.cat(
        [scores - other_scores[nearest_exported], other_scores - scores[nearest_eager]]
    ).abs()
    return float(torch.cat([to_exported, to_eager]).max()), float(score_diff.max())


def compare_outputs(
    name: str, size: tuple[int, int], eager: tuple[Tensor, ...], exported: tuple[Tensor, ...]
) -> Parity:
    """Compare ``(boxes, scores[, classes])`` of eager PyTorch with an exported model's
    (see :class:`Parity`)."""
    if len(eager) != len(exported):
        raise ValueError(
            f"{name}: eager PyTorch returned {len(eager)} outputs, the exported model "
            f"{len(exported)}; the file was exported from another kind of model."
        )
    eager = tuple(t.detach().cpu() for t in eager)
    exported = tuple(t.detach().cpu() for t in exported)
    eager_count, exported_count = eager[0].shape[0], exported[0].shape[0]
    box_diff = score_diff = math.nan
    if eager_count == exported_count:
        box_diff, score_diff = _matched_differences(eager, exported)
    classes_equal = True
    if len(eager) == 3:
        classes_equal = torch.equal(eager[2].long().sort().values, exported[2].long().sort().values)
    return Parity(
        name=name,
        size=size,
        noun="detections" if len(eager) == 3 else "proposals",
        eager_count=eager_count,
        exported_count=exported_count,
        box_diff=box_diff,
        score_diff=score_diff,
        classes_equal=classes_equal,
    )


def median_ms(run: Callable[[Tensor], object], image: Tensor, runs: int) -> float:
    """Median wall time of ``run(image)`` over ``runs`` calls, in milliseconds, after one
    untimed warm-up call."""
    with torch.no_grad():
        run(image)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            run(image)
            times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)
