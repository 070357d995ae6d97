"""How detkit's command-line tools end: an error is printed as its message and what to do,
not as a traceback through the library, unless the traceback is asked for.

Every ``tools/*.py`` script runs its ``main`` through :func:`run_cli`. detkit's errors
already say what went wrong, where and what to do; the frames above that message help
only someone debugging detkit itself, so they are shown with ``--debug`` or
``DETKIT_DEBUG=1``, and always written to the run's ``log.txt`` when a run has one.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable

__all__ = [
    "DEBUG_ENV",
    "add_debug_argument",
    "debug_requested",
    "int_at_least",
    "report_error",
    "run_cli",
]

DEBUG_ENV = "DETKIT_DEBUG"


def add_debug_argument(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--debug`` (show the full traceback of an error) to a tool's parser."""
    parser.add_argument(
        "--debug",
        action="store_true",
        help=f"on an error, show the full traceback (also: {DEBUG_ENV}=1)",
    )
    return parser


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: a whole number >= ``minimum``, else a usage error saying so."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def debug_requested(args: argparse.Namespace | None = None) -> bool:
    """``--debug`` was given (in ``args``, or on the command line of a tool whose parser
    has :func:`add_debug_argument`), or ``DETKIT_DEBUG`` is set and not 0/false/no."""
    if args is not None and getattr(args, "debug", False):
        return True
    if "--debug" in sys.argv[1:]:
        return True
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _write_traceback_to_logs(error: BaseException) -> list[str]:
    """Write the error with its traceback into the log files only (not the console)."""
    written = []
    logger = logging.getLogger("detkit")
    record = logger.makeRecord(
        logger.name,
        logging.ERROR,
        __file__,
        0,
        "Stopped by an error:",
        None,
        (type(error), error, error.__traceback__),
    )
    for handler in logger.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
            handler.flush()
            written.append(handler.baseFilename)
    return written


def run_cli(main: Callable[[], int | None], debug: bool = False) -> int:
    """Run a tool's ``main`` and return its exit code, for ``sys.exit(run_cli(...))``.

    - ``main`` returning None or an int: that exit code (None = 0).
    - An exception: its message on stderr (``Error: ...``) with how to see the traceback,
      the traceback itself written to the run's ``log.txt`` if the logger has one; exit
      code 1. With ``debug`` (or ``DETKIT_DEBUG=1``) the exception propagates unchanged.
    - Ctrl-C: "Interrupted" and exit code 130 (a training run continues with --resume).
    """
    debug = debug or debug_requested()
    try:
        code = main()
    except KeyboardInterrupt:
        if debug:
            raise
        print("\nInterrupted.", file=sys.stderr)
        return 130
    except SystemExit:
        raise
    except Exception as error:
        if debug:
            raise
        return report_error(error)
    return int(code) if isinstance(code, int) and not isinstance(code, bool) else 0


def report_error(error: BaseException, where: str = "") -> int:
    """Print ``error``'s message and how to see its traceback on stderr, write the traceback
    into the run's log files, and return the exit code 1. ``where`` (e.g. "process 1")
    prefixes the message."""
    message = str(error).strip() or "(no message)"
    name = type(error).__name__
    logs = _write_traceback_to_logs(error)
    also = f" It is also in {', '.join(logs)}." if logs else ""
    print(
        f"\nError{' in ' + where if where else ''} ({name}): {message}\n\n"
        f"The traceback is hidden: run again with --debug or {DEBUG_ENV}=1 to see it.{also}",
        file=sys.stderr,
        flush=True,
    )
    return 1
