"""One checkpoint file: where the weights named by ``MODEL.WEIGHTS`` are (a local path, an
http(s) URL downloaded once, or ``torchvision://<model>``), and what the file holds (read
without unpickling code; a torchvision ImageNet state_dict renamed onto detkit's modules).
:class:`~detkit.checkpoint.DetectionCheckpointer` loads through these two functions.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import torch
from iopath.common.file_io import PathManager
from torch import nn

from detkit.checkpoint.imagenet import (
    TORCHVISION_SCHEME,
    cached_torchvision_weights,
    convert_imagenet_state_dict,
    detect_imagenet_format,
    resolve_torchvision_url,
)

__all__ = ["CheckpointReadError", "local_weights_path", "read_checkpoint_file"]

# Key of read_checkpoint_file's result naming the ImageNet format it converted from;
# DetectionCheckpointer._load_model consumes it.
_IMAGENET_MARKER = "__imagenet_format__"


class CheckpointReadError(RuntimeError):
    """A checkpoint file that cannot be read (truncated, not a PyTorch file, or pickled
    objects); nothing of the model has been changed when it is raised."""


def local_weights_path(path: str, path_manager: PathManager, logger: logging.Logger) -> str:
    """A local file for ``path``: itself, torchvision's cache, or a download.

    Args:
        path: local file, http(s) URL or ``torchvision://<model>``.
        path_manager: downloads URLs into iopath's cache (the checkpointer's).
        logger: where the torchvision file used is said.

    Raises:
        FileNotFoundError: a local path that does not exist.
        RuntimeError: a URL that cannot be downloaded (the message says how to use a local
            copy instead).
    """
    name = path
    if path.startswith(TORCHVISION_SCHEME):
        path = resolve_torchvision_url(name)
        cached = cached_torchvision_weights(path)
        if cached is not None:
            logger.info(f"{name}: using torchvision's cached file {cached}")
            return cached
        logger.info(f"{name}: torchvision's ImageNet weights at {path}")
    if os.path.isfile(path):
        return path
    if "://" not in path:
        raise FileNotFoundError(
            f"Weights file not found: '{path}' (absolute: {os.path.abspath(path)}). "
            "MODEL.WEIGHTS takes a local .pth file, an http(s) URL or "
            'torchvision://<model> (e.g. torchvision://vgg16); "" trains from scratch.'
        )
    try:
        return path_manager.get_local_path(path)
    except Exception as error:
        file_name = os.path.basename(path)
        hub_hint = ""
        if name.startswith(TORCHVISION_SCHEME):
            hub_dir = os.path.join(torch.hub.get_dir(), "checkpoints")
            hub_hint = f" (or put it in {hub_dir}/, where {name} finds it)"
        raise RuntimeError(
            f"Could not download the weights '{name}' from {path}: "
            f"{type(error).__name__}: {error}\n"
            f"Without network access, download {file_name} on another machine (e.g. "
            f"`wget {path}`), copy it here and use the local file: "
            f"MODEL.WEIGHTS /path/to/{file_name}{hub_hint}. "
            'MODEL.WEIGHTS "" trains from random initialization instead.'
        ) from error


def read_checkpoint_file(f: str, model: nn.Module) -> dict[str, Any]:
    """Read ``f`` into a checkpoint dict (``{"model": state_dict, ...}``); a torchvision
    ImageNet state_dict is renamed onto ``model``'s modules first.

    ``weights_only=True``: a checkpoint holds tensors and plain values only, so loading an
    untrusted file cannot run code.

    Raises:
        CheckpointReadError: ``f`` is truncated, not a PyTorch file, or holds Python objects.
        RuntimeError: ``f`` holds neither a checkpoint dict nor a state_dict.
    """
    try:
        loaded = torch.load(f, map_location=torch.device("cpu"), weights_only=True)
    except Exception as error:
        with open(f, "rb") as handle:
            head = handle.read(4)
        if head[:2] != b"PK" and head[:1] != b"\x80":  # neither torch's zip nor pickle
            hint = (
                f"It is not a PyTorch file (it starts with {head!r}): an empty file, a "
                "download that saved an error page, or another format."
            )
        elif "Weights only load failed" in str(error):
            hint = (
                "It holds Python objects besides tensors and plain values, which detkit "
                "does not unpickle (that could run code). If you trust the file, load it "
                "with torch.load(..., weights_only=False) and save only its state_dict."
            )
        else:
            hint = (
                "It may be truncated (an interrupted copy or download: fetch it again) "
                "or not a PyTorch file."
            )
        first_line = str(error).splitlines()[0] if str(error) else ""
        raise CheckpointReadError(
            f"Could not read the checkpoint {f}: {type(error).__name__}: {first_line}\n{hint}"
        ) from error
    if isinstance(loaded, Mapping) and isinstance(loaded.get("model"), Mapping):
        return dict(loaded)  # a detkit/fvcore checkpoint: model keys are detkit's already
    if isinstance(loaded, Mapping) and all(isinstance(v, torch.Tensor) for v in loaded.values()):
        fmt = detect_imagenet_format(loaded)
        if fmt is None:  # a bare state_dict of a detkit model
            return {"model": dict(loaded)}
        model_keys = model.state_dict().keys()
        converted = convert_imagenet_state_dict(loaded, fmt, model_keys)
        return {"model": converted, _IMAGENET_MARKER: fmt}
    raise RuntimeError(
        f"{f} is neither a detkit checkpoint (a dict with a 'model' state_dict) nor a "
        f"state_dict of tensors (it holds a {type(loaded).__name__})."
    )
