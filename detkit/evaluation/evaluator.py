"""The evaluator interface and ``inference_on_dataset``, which runs a model over a test loader."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from detkit.utils import comm
from detkit.utils.progress import track

__all__ = [
    "RESERVED_RESULT_KEYS",
    "DatasetEvaluator",
    "DatasetEvaluators",
    "inference_context",
    "inference_on_dataset",
]

logger = logging.getLogger(__name__)

# Entries of ``inference_on_dataset``'s results that are not tasks: no evaluator may use them.
RESERVED_RESULT_KEYS = ("evaluators", "timing")


class DatasetEvaluator:
    """Accumulates a model's outputs over a dataset and turns them into metrics.

    ``inference_on_dataset`` calls ``reset()`` once, ``process(inputs, outputs)`` for every
    batch, then ``evaluate()``. Under several processes each one processes its own shard;
    ``evaluate()`` gathers them and returns the metrics on the main process, ``{}`` elsewhere.

    Metrics are fractions in [0, 1] (AP, recall), apart from counts. An evaluator whose
    metrics a run summary can name sets the class attribute ``name`` ("voc", "coco",
    "proposals"); ``describe()`` says what its metrics are, and ``inference_on_dataset``
    returns that description beside the metrics, under ``"evaluators"``.
    """

    name: str | None = None

    def describe(self) -> dict[str, str]:
        """What produced the metrics: ``{"name": name}`` plus evaluator-specific details
        (e.g. the VOC evaluator's ``"ap_metric"``); ``{}`` when ``name`` is None."""
        return {"name": self.name} if self.name else {}

    def describe_tasks(self, tasks: Iterable[str]) -> dict[str, dict[str, str]]:
        """``{task: description}`` for the tasks of this evaluator's last ``evaluate()``;
        tasks of an evaluator without a name are left out."""
        description = self.describe()
        return {task: dict(description) for task in tasks} if description else {}

    def reset(self) -> None:
        """Forget everything processed so far (called before a new pass over the dataset)."""

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        """Record one batch.

        Args:
            inputs: the model's inputs, one dict per image (``image_id``, ``height``, ...).
            outputs: the model's outputs, one dict per image
                (``{"instances": Instances(pred_boxes, scores, pred_classes)}``).
        """

    def evaluate(self) -> dict[str, dict[str, float]]:
        """Metrics by task, e.g. ``{"bbox": {"AP50": 0.712, "AP": 0.401}}`` (fractions)."""
        return {}


class DatasetEvaluators(DatasetEvaluator):
    """Several evaluators run as one; their result dicts are merged, and each task is
    described by the evaluator that returned it (``describe_tasks``).

    Args:
        evaluators: the evaluators; two of them returning the same task key is an error.
    """

    def __init__(self, evaluators: Sequence[DatasetEvaluator]):
        self._evaluators = list(evaluators)
        self._descriptions: dict[str, dict[str, str]] = {}

    def describe_tasks(self, tasks: Iterable[str]) -> dict[str, dict[str, str]]:
        return {task: self._descriptions[task] for task in tasks if task in self._descriptions}

    def reset(self) -> None:
        for evaluator in self._evaluators:
            evaluator.reset()

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        for evaluator in self._evaluators:
            evaluator.process(inputs, outputs)

    def evaluate(self) -> dict[str, dict[str, float]]:
        results: dict[str, dict[str, float]] = {}
        self._descriptions = {}
        for evaluator in self._evaluators:
            evaluated = evaluator.evaluate() or {}
            for task, metrics in evaluated.items():
                if task in results:
                    raise KeyError(
                        f"Two evaluators returned results for the task '{task}' "
                        f"(the second is {type(evaluator).__name__}); combine evaluators that "
                        "report different tasks, or evaluate them separately."
                    )
                results[task] = metrics
            self._descriptions.update(evaluator.describe_tasks(evaluated))
        return results


@contextmanager
def inference_context(model: nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode for the block and restore its previous mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _synchronize_device() -> None:
    # CUDA runs asynchronously: without this, timings measure kernel launches, not work.
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def inference_on_dataset(
    model: nn.Module,
    data_loader: Iterable[list[dict]],
    evaluator: DatasetEvaluator | Sequence[DatasetEvaluator] | None,
    *,
    num_warmup: int = 5,
) -> dict:
    """Run ``model`` on every batch of ``data_loader`` and evaluate its outputs.

    The model runs in eval mode (its previous mode is restored afterwards) and without
    gradients. The main process shows its progress (a bar on a terminal) and logs it with
    an ETA every 30 s (:mod:`detkit.utils.progress`).

    Args:
        model: called as ``model(inputs) -> outputs`` on each batch (a list of mapped dicts).
        data_loader: finite iterable of batches; its ``len`` (if any) sizes the progress bar.
        evaluator: one evaluator, several (combined), or None to only run the model.
        num_warmup: images left out of the timing (the first calls are slow: allocation,
            cudnn autotuning). When the dataset has no more images than this, all are timed.

    Returns:
        The evaluator's results ``{task: {metric: value}}``, plus:

        - ``"evaluators"``: ``{task: description}`` of the tasks whose evaluator has a
          ``name`` (``DatasetEvaluator.describe``, e.g. ``{"bbox": {"name": "voc",
          "ap_metric": "11-point"}}``); absent when no evaluator has one. Run summaries
          (``detkit.engine.summary``) read it to name the evaluator and its headline metric.
        - ``"timing"``: ``{"s_per_img"`` (model time per image after warm-up),
          ``"total_s_per_img"`` (with data loading and evaluator work), ``"num_images"}``
          (images seen by this process).
    """
    if evaluator is None:
        evaluator = DatasetEvaluators([])
    elif not isinstance(evaluator, DatasetEvaluator):
        evaluator = DatasetEvaluators(evaluator)
    try:
        total = len(data_loader)  # type: ignore[arg-type]
    except TypeError:
        total = None
    logger.info(
        "Start inference on %s batches (%d process(es)).",
        total if total is not None else "an unknown number of",
        comm.get_world_size(),
    )
    evaluator.reset()

    # Per batch: (number of images, model seconds, seconds from the end of the previous batch
    # to the end of this one, which includes data loading and evaluator.process).
    batch_times: list[tuple[int, float, float]] = []
    with inference_context(model), torch.no_grad():
        progress = track(
            data_loader, total, "Inference", "batch", logger, enabled=comm.is_main_process()
        )
        last = time.perf_counter()
        for inputs in progress:
            _synchronize_device()
            start = time.perf_counter()
            outputs = model(inputs)
            _synchronize_device()
            model_seconds = time.perf_counter() - start
            evaluator.process(inputs, outputs)
            now = time.perf_counter()
            batch_times.append((len(inputs), model_seconds, now - last))
            last = now

    timing = _summarize_timing(batch_times, num_warmup)
    logger.info(
        "Inference done on %d images: %.4f s/img model time, %.4f s/img in total "
        "(data loading and evaluation included; first %d image(s) excluded as warm-up).",
        timing["num_images"],
        timing["s_per_img"],
        timing["total_s_per_img"],
        timing["num_warmup_images"],
    )
    results = dict(evaluator.evaluate() or {})
    for reserved in RESERVED_RESULT_KEYS:
        if reserved in results:
            raise KeyError(f"An evaluator returned a task named '{reserved}', which is reserved.")
    descriptions = evaluator.describe_tasks(results)
    if descriptions:
        results["evaluators"] = descriptions
    results["timing"] = timing
    return results


def _summarize_timing(batch_times: list[tuple[int, float, float]], num_warmup: int) -> dict:
    """Seconds per image over the batches that start after the first ``num_warmup`` images."""
    num_images = sum(n for n, _, _ in batch_times)
    seen = 0
    timed: list[tuple[int, float, float]] = []
    for n, model_s, total_s in batch_times:
        if seen >= num_warmup:
            timed.append((n, model_s, total_s))
        seen += n
    if not timed:  # too few images to leave any out
        timed = batch_times
    timed_images = sum(n for n, _, _ in timed)
    per_image = max(timed_images, 1)
    return {
        "s_per_img": sum(m for _, m, _ in timed) / per_image,
        "total_s_per_img": sum(t for _, _, t in timed) / per_image,
        "num_images": num_images,
        "num_warmup_images": num_images - timed_images,
    }
