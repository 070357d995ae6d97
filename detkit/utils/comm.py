"""Helpers for single- and multi-process runs (torch.distributed), safe when it is not used."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "all_gather",
    "gather_dict",
    "get_rank",
    "get_world_size",
    "is_main_process",
    "synchronize",
]


def get_world_size() -> int:
    """Number of processes (1 when torch.distributed is not initialized)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def get_rank() -> int:
    """This process's rank (0 when torch.distributed is not initialized)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main_process() -> bool:
    """True on rank 0, which writes logs, checkpoints and results."""
    return get_rank() == 0


def synchronize() -> None:
    """Barrier across processes; a no-op in a single process."""
    if get_world_size() > 1:
        if dist.get_backend() == "nccl" and torch.cuda.is_available():
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def all_gather(data: Any) -> list[Any]:
    """Gather a picklable object from every process: a list with one entry per rank."""
    if get_world_size() == 1:
        return [data]
    output: list[Any] = [None] * get_world_size()
    dist.all_gather_object(output, data)
    return output


def gather_dict(local: dict) -> dict | None:
    """Every process's ``local`` dict merged into one on the main process (None on the others):
    how an evaluator collects the per-image results of a sharded dataset. Every process must
    call it."""
    parts = all_gather(local)
    if not is_main_process():
        return None
    merged: dict = {}
    for part in parts:
        merged.update(part)
    return merged
