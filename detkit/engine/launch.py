"""Start one process per device (PyTorch DDP); also runs under ``torchrun``."""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from detkit.utils.cli import debug_requested, report_error

__all__ = ["launch"]

logger = logging.getLogger("detkit")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(
    main_func: Callable[..., Any],
    num_processes_per_machine: int = 1,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: str = "auto",
    args: tuple = (),
) -> Any:
    """Run ``main_func(*args)`` in one process, or in ``num_processes_per_machine`` processes
    on each of ``num_machines`` machines joined into one process group.

    NCCL on CUDA (one process per GPU), gloo on CPU. When started by ``torchrun`` (the
    ``RANK`` and ``WORLD_SIZE`` variables are set), the group is initialized from the
    environment and ``main_func`` runs in this process.

    Args:
        dist_url: ``tcp://host:port`` of machine 0; ``"auto"`` picks a free local port
            (single machine only).
    """
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ and not dist.is_initialized():
        _init_group(
            "env://",
            int(os.environ["WORLD_SIZE"]),
            int(os.environ["RANK"]),
            int(os.environ.get("LOCAL_RANK", 0)),
        )
        return main_func(*args)
    world_size = num_processes_per_machine * num_machines
    if world_size <= 1:
        return main_func(*args)
    if dist_url == "auto":
        if num_machines != 1:
            raise ValueError("--dist-url auto works on one machine; give tcp://host:port.")
        dist_url = f"tcp://127.0.0.1:{_free_port()}"
    mp.start_processes(
        _worker,
        nprocs=num_processes_per_machine,
        args=(main_func, world_size, num_processes_per_machine, machine_rank, dist_url, args),
        start_method="spawn",
    )
    return None


def _init_group(init_method: str, world_size: int, rank: int, local_rank: int) -> None:
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend, init_method=init_method, world_size=world_size, rank=rank)


def _worker(
    local_rank: int,
    main_func: Callable[..., Any],
    world_size: int,
    num_per_machine: int,
    machine_rank: int,
    dist_url: str,
    args: tuple,
) -> None:
    rank = machine_rank * num_per_machine + local_rank
    try:
        _init_group(dist_url, world_size, rank, local_rank)
    except Exception as e:
        raise RuntimeError(
            f"Process {rank} could not join the process group at {dist_url}: {e}"
        ) from e
    try:
        main_func(*args)
    except Exception as error:
        if debug_requested():
            raise
        # The message, not the frames (those go to the log); the parent reports the exit.
        sys.exit(report_error(error, where=f"process {rank}"))
    finally:
        dist.destroy_process_group()
