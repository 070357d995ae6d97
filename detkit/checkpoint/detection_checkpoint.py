"""Checkpoints of detkit models: atomic saves, resume, ImageNet and URL weights, clear reports."""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from fvcore.common.checkpoint import Checkpointer, _filter_reused_missing_keys
from torch import nn

from detkit.checkpoint.checkpoint_file import (
    _IMAGENET_MARKER,
    CheckpointReadError,
    local_weights_path,
    read_checkpoint_file,
)
from detkit.utils import comm
from detkit.utils.io import atomic_write

__all__ = ["CheckpointReadError", "DetectionCheckpointer", "atomic_write", "non_finite_tensors"]

logger = logging.getLogger(__name__)

_LAST_CHECKPOINT = "last_checkpoint"  # file in save_dir naming the newest checkpoint (fvcore)
_MAX_GROUPS_SHOWN = 20


def _summarize_keys(keys: Iterable[str]) -> str:
    """``["a.b.weight", "a.b.bias", "c.w"]`` -> ``"a.b.{bias, weight}, c.w"`` (capped)."""
    groups: dict[str, list[str]] = defaultdict(list)
    for key in sorted(keys):
        module, _, name = key.rpartition(".")
        groups[module].append(name)
    parts = []
    for module, names in groups.items():
        leaf = names[0] if len(names) == 1 else "{" + ", ".join(names) + "}"
        parts.append(f"{module}.{leaf}" if module else leaf)
    if len(parts) > _MAX_GROUPS_SHOWN:
        parts = parts[:_MAX_GROUPS_SHOWN] + [f"... ({len(parts) - _MAX_GROUPS_SHOWN} more)"]
    return ", ".join(parts)


def non_finite_tensors(state_dict: Mapping[str, Any]) -> list[str]:
    """Names of the floating-point tensors of ``state_dict`` holding NaN or infinity."""
    return [
        name
        for name, value in state_dict.items()
        if isinstance(value, torch.Tensor)
        and value.is_floating_point()
        and not bool(torch.isfinite(value).all())
    ]


class DetectionCheckpointer(Checkpointer):
    """fvcore's Checkpointer for detkit: what ``MODEL.WEIGHTS`` and ``--resume`` use.

    - Saves are atomic (:func:`atomic_write`): the checkpoint file is complete before it
      gets its name, and ``last_checkpoint`` is rewritten only after that, so a crash
      during a save leaves ``last_checkpoint`` naming the previous good file. Only the
      main process (rank 0) writes. Weights holding NaN or infinity are never saved
      (:class:`FloatingPointError`), so ``last_checkpoint`` always names finite weights.
    - ``resume_or_load`` falls back to the newest readable checkpoint when the one
      ``last_checkpoint`` names is missing or truncated, with a warning naming it.
    - ``load(path)`` takes a local file, an http(s) URL (downloaded once into iopath's
      cache) or ``torchvision://<model>`` (torchvision's ImageNet weights, see
      :func:`~detkit.checkpoint.imagenet.resolve_torchvision_url`). A detkit checkpoint
      (a dict with ``"model"``) loads by name; a raw torchvision ImageNet state_dict is
      first renamed onto detkit's modules
      (:func:`~detkit.checkpoint.imagenet.convert_imagenet_state_dict`).
    - Tensors whose shape differs from the model's (e.g. the predictor when fine-tuning
      with another number of classes) are skipped and listed with both shapes; missing
      and unused keys are reported once each, grouped by module.

    Args:
        model: the model (a DistributedDataParallel wrapper is unwrapped).
        save_dir: local directory of checkpoints and ``last_checkpoint``
            (``OUTPUT_DIR``); "" disables saving.
        save_to_disk: None = only on the main process.
        checkpointables: objects with ``state_dict``/``load_state_dict`` saved and
            restored with the model, e.g. ``optimizer=..., scheduler=...``.
    """

    def __init__(
        self,
        model: nn.Module,
        save_dir: str = "",
        *,
        save_to_disk: bool | None = None,
        **checkpointables: Any,
    ):
        if save_to_disk is None:
            save_to_disk = comm.is_main_process()
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.logger = logger  # detkit's logger (fvcore's own would not reach detkit's handlers)
        self._imagenet_format: str | None = None  # of the file being loaded, for the report

    # ----------------------------------------------------------------------------- saving
    def save(self, name: str, **kwargs: Any) -> None:
        """Write ``<save_dir>/<name>.pth`` atomically, then point ``last_checkpoint`` at it.

        Holds ``"model"``, one entry per checkpointable and ``kwargs`` (the periodic
        checkpointer adds ``iteration``). Does nothing without ``save_dir``, or off the
        main process.
        """
        if not self.save_dir or not self.save_to_disk or not comm.is_main_process():
            return
        state = self.model.state_dict()
        bad = non_finite_tensors(state)
        if bad:
            last = self._last_checkpoint_name()
            raise FloatingPointError(
                f"Not saving {name}.pth: {len(bad)} model tensors hold NaN or infinite values "
                f"({_summarize_keys(bad)}). The weights diverged in the last step; "
                f"last_checkpoint still names {last or 'no checkpoint'}, which --resume "
                "would continue from. Usual causes: a learning rate too high for the batch "
                "size (lower SOLVER.BASE_LR or add SOLVER.WARMUP_ITERS), or broken boxes in "
                "the data (tools/verify_dataset.py)."
            )
        data = {"model": state}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        os.makedirs(self.save_dir, exist_ok=True)
        self.logger.info(f"Saving checkpoint to {save_file}")
        atomic_write(save_file, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        """Atomically replace ``last_checkpoint`` with ``last_filename_basename``."""
        atomic_write(
            os.path.join(self.save_dir, _LAST_CHECKPOINT),
            lambda f: f.write(last_filename_basename.encode("utf-8")),
        )

    def _last_checkpoint_name(self) -> str | None:
        try:
            with open(os.path.join(self.save_dir, _LAST_CHECKPOINT), encoding="utf-8") as f:
                return f.read().strip() or None
        except OSError:
            return None

    # ------------------------------------------------------------------- finding and loading
    def has_checkpoint(self) -> bool:
        """Whether ``save_dir`` has a ``last_checkpoint`` file (never true without save_dir)."""
        return bool(self.save_dir) and os.path.isfile(os.path.join(self.save_dir, _LAST_CHECKPOINT))

    def resume_or_load(self, path: str, *, resume: bool = True) -> dict[str, Any]:
        """Resume from ``save_dir/last_checkpoint``, else initialize the model from ``path``.

        With ``resume`` and a ``last_checkpoint``: loads the model and every
        checkpointable (optimizer, scheduler) from the file it names; the returned dict
        holds the remaining entries, e.g. ``"iteration"``. Otherwise only the model's
        weights are loaded from ``path`` (``MODEL.WEIGHTS``; "" leaves the random
        initialization), and training starts at iteration 0.

        If the file ``last_checkpoint`` names is missing or cannot be read (truncated by a
        full disk, a partial copy), the newest other checkpoint of ``save_dir`` that reads
        is used instead, with a warning naming the broken one.

        Raises:
            RuntimeError: ``last_checkpoint`` exists but no checkpoint of ``save_dir`` reads.
        """
        if resume and self.has_checkpoint():
            names = ", ".join(["model", *self.checkpointables, "iteration"])
            broken: list[str] = []
            for candidate in self._resume_candidates():
                try:
                    checkpoint = self.load(candidate)
                except CheckpointReadError as error:
                    broken.append(f"{candidate}: {str(error).splitlines()[0]}")
                    self.logger.warning(
                        f"Cannot resume from {candidate}: {error}\nTrying the newest "
                        "older checkpoint."
                    )
                    continue
                if broken:
                    self.logger.warning(
                        f"Resumed from {candidate}, the newest checkpoint that reads; skipped "
                        f"{len(broken)} broken: " + "; ".join(broken)
                    )
                else:
                    self.logger.info(f"Resumed from {candidate} ({names})")
                return checkpoint
            raise RuntimeError(
                f"{os.path.join(self.save_dir, _LAST_CHECKPOINT)} exists, but no checkpoint "
                f"of {self.save_dir} can be read"
                + (": " + "; ".join(broken) if broken else " (there are none)")
                + ". Delete last_checkpoint to start from MODEL.WEIGHTS, or restore a copy."
            )
        if resume:
            self.logger.info(
                f"No checkpoint found to resume from (no {_LAST_CHECKPOINT} in "
                f"'{self.save_dir}'): starting at iteration 0."
            )
        if path:
            self.logger.info(f"Initializing the model from {path} (weights only)")
        return self.load(path, checkpointables=[])

    def _resume_candidates(self) -> list[str]:
        """The file ``last_checkpoint`` names (if it exists), then the other ``.pth`` files of
        ``save_dir`` newest first: ``model_final``, then by the iteration in
        ``model_<iter>.pth``, then other names by modification time."""
        named = self._last_checkpoint_name()
        first = os.path.join(self.save_dir, named) if named else None

        def rank(path: str) -> tuple[int, float]:
            stem = os.path.splitext(os.path.basename(path))[0]
            if stem == "model_final":
                return (2, 0.0)
            if stem.startswith("model_") and stem[6:].isdigit():
                return (1, float(stem[6:]))
            return (0, os.path.getmtime(path))

        others = sorted(
            (
                os.path.join(self.save_dir, n)
                for n in os.listdir(self.save_dir)
                if n.endswith(".pth") and os.path.join(self.save_dir, n) != first
            ),
            key=rank,
            reverse=True,
        )
        if first is not None and not os.path.isfile(first):
            self.logger.warning(
                f"{os.path.join(self.save_dir, _LAST_CHECKPOINT)} names '{named}', which does "
                "not exist; looking for the newest other checkpoint."
            )
            first = None
        return ([first] if first else []) + others

    def load(self, path: str, checkpointables: list[str] | None = None) -> dict[str, Any]:
        """Load the model (and the listed checkpointables; None = all) from ``path``.

        Args:
            path: local file, http(s) URL or ``torchvision://<model>``; "" loads nothing.
            checkpointables: names of checkpointables to restore; [] = the model only.

        Returns:
            The checkpoint's entries not consumed, e.g. ``{"iteration": 4999}``.

        Raises:
            FileNotFoundError: a local path that does not exist.
            RuntimeError: a URL that cannot be downloaded (the message says how to use a
                local copy instead), or a file that is not a readable checkpoint.
            ValueError: no tensor of the checkpoint matches the model.
        """
        if not path:
            self.logger.info(
                "No weights to load (MODEL.WEIGHTS is empty): starting from scratch, with the "
                "model's random initialization."
            )
            return {}
        return super().load(self._get_local_path(path), checkpointables)

    def _get_local_path(self, path: str) -> str:
        """A local file for ``path``: itself, torchvision's cache, or a download
        (:func:`~detkit.checkpoint.checkpoint_file.local_weights_path`)."""
        return local_weights_path(path, self.path_manager, self.logger)

    def _load_file(self, f: str) -> dict[str, Any]:
        """Read ``f``; rename a torchvision ImageNet state_dict onto detkit's modules
        (:func:`~detkit.checkpoint.checkpoint_file.read_checkpoint_file`: ``weights_only``,
        so loading an untrusted file cannot run code)."""
        return read_checkpoint_file(f, self.model)

    def _load_model(self, checkpoint: dict[str, Any]) -> Any:
        imagenet_format = checkpoint.pop(_IMAGENET_MARKER, None)
        # fvcore renames and filters this dict in place: afterwards it holds what was loaded.
        state_dict = checkpoint["model"]
        num_checkpoint_tensors = len(state_dict)
        model_keys = list(self.model.state_dict().keys())
        incompatible = super()._load_model(checkpoint)
        if model_keys and not set(state_dict).intersection(model_keys):
            checkpoint_keys = incompatible.unexpected_keys + [
                k for k, _, _ in incompatible.incorrect_shapes
            ]
            raise ValueError(
                f"None of the {num_checkpoint_tensors} tensors of the checkpoint fits the "
                f"model ({type(self.model).__name__}): the weights are for another "
                f"architecture. Checkpoint keys look like {sorted(checkpoint_keys)[:3]}, "
                f"model keys like {model_keys[:3]}. Check MODEL.WEIGHTS against "
                "MODEL.BACKBONE.NAME."
            )
        self._imagenet_format = imagenet_format
        return incompatible

    def _log_incompatible_keys(self, incompatible) -> None:
        """One message each for shape-skipped, missing and unused tensors."""
        skipped = {key for key, _, _ in incompatible.incorrect_shapes}
        if incompatible.incorrect_shapes:
            lines = "\n".join(
                f"  {key}: {tuple(ckpt)} in the checkpoint, {tuple(model)} in the model"
                for key, ckpt, model in incompatible.incorrect_shapes
            )
            self.logger.warning(
                f"Skipped {len(skipped)} checkpoint tensors whose shape differs from the "
                "model's; those layers keep their initialization (expected when fine-tuning "
                f"with another MODEL.ROI_HEADS.NUM_CLASSES):\n{lines}"
            )
        # A model saved with frozen BatchNorm (FrozenBatchNorm2d, e.g. MODEL.FROZEN_MODULES)
        # has no batch counter; BN's counter matters only without momentum: not worth a word.
        missing = [
            k
            for k in _filter_reused_missing_keys(self.model, incompatible.missing_keys)
            if k not in skipped and not k.endswith("num_batches_tracked")
        ]
        if missing:
            message = (
                f"{len(missing)} model tensors are not in the checkpoint and keep their "
                f"initialization: {_summarize_keys(missing)}"
            )
            if self._imagenet_format:  # the detection layers are new: expected
                self.logger.info(message + " (new layers, not part of the ImageNet model).")
            else:
                self.logger.warning(message)
        if incompatible.unexpected_keys:
            self.logger.warning(
                f"{len(incompatible.unexpected_keys)} checkpoint tensors are not used by the "
                f"model: {_summarize_keys(incompatible.unexpected_keys)}"
            )
