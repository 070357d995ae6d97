"""Logging to the console and to ``OUTPUT_DIR/log.txt``."""

from __future__ import annotations

import logging
import os
import sys

__all__ = ["setup_logger"]

_FORMAT = "[%(asctime)s %(name)s] %(message)s"


def setup_logger(
    output_dir: str | None = None, distributed_rank: int = 0, name: str = "detkit"
) -> logging.Logger:
    """Configure the ``detkit`` logger (idempotent).

    Rank 0 logs INFO to stdout; every rank logs DEBUG to ``output_dir/log.txt``
    (``log.txt.rank{N}`` for other ranks).
    """
    logger = logging.getLogger(name)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    for handler in list(logger.handlers):
        if getattr(handler, "_detkit", False):
            logger.removeHandler(handler)
            handler.close()
    formatter = logging.Formatter(_FORMAT, datefmt="%m/%d %H:%M:%S")
    if distributed_rank == 0:
        console = logging.StreamHandler(stream=sys.stdout)
        console.setLevel(logging.INFO)
        console.setFormatter(formatter)
        console._detkit = True  # type: ignore[attr-defined]
        logger.addHandler(console)
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        filename = os.path.join(output_dir, "log.txt")
        if distributed_rank > 0:
            filename += f".rank{distributed_rank}"
        file_handler = logging.FileHandler(filename)
        file_handler.setLevel(logging.DEBUG)
        file_handler.setFormatter(formatter)
        file_handler._detkit = True  # type: ignore[attr-defined]
        logger.addHandler(file_handler)
    return logger
