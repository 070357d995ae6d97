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
import re
import sys
from collections.abc import Callable

__all__ = [
    "DEBUG_ENV",
    "add_config_overrides_arguments",
    "add_debug_argument",
    "debug_requested",
    "int_at_least",
    "looks_like_config_key",
    "parse_args_anywhere",
    "report_error",
    "run_cli",
    "split_config_overrides",
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


# A config key as written on a command line: upper-case names joined by dots
# (``SEED``, ``MODEL.WEIGHTS``, ``MODEL.ROI_HEADS.NUM_CLASSES``).
_CONFIG_KEY = re.compile(r"[A-Z][A-Z0-9_]*(\.[A-Z][A-Z0-9_]*)*")
_OPTS_FLAG = "--opts"


def looks_like_config_key(token: str) -> bool:
    """``token`` reads as a config key (``MODEL.WEIGHTS``) or ``KEY=VALUE``, and is not the
    path of an existing file or folder (``IMG.JPG`` may be either)."""
    key = token.split("=", 1)[0]
    return _CONFIG_KEY.fullmatch(key) is not None and not os.path.exists(token)


def split_config_overrides(tokens: list[str]) -> list[str]:
    """Config overrides as flat ``KEY VALUE`` pairs, for ``cfg.merge_from_list``.

    Each override may be written ``KEY VALUE`` or ``KEY=VALUE``
    (``["SEED=1", "OUTPUT_DIR", "out"]`` -> ``["SEED", "1", "OUTPUT_DIR", "out"]``). Only a
    token in a key's place is split, so a value may itself contain ``=``.

    Raises:
        ValueError: a key without a value, saying how to write it.
    """
    pairs: list[str] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        key, equals, value = token.partition("=")
        if equals and _CONFIG_KEY.fullmatch(key):
            pairs += [key, value]
            index += 1
            continue
        if index + 1 >= len(tokens):
            raise ValueError(
                f"The config override {token!r} has no value: write KEY VALUE or KEY=VALUE "
                "(e.g. MODEL.WEIGHTS model.pth)."
            )
        pairs += [token, tokens[index + 1]]
        index += 2
    return pairs


def add_config_overrides_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Config overrides for a parser read with :func:`parse_args_anywhere`: trailing
    ``KEY VALUE`` (or ``KEY=VALUE``) pairs, also accepted after ``--opts`` (detectron2's
    form). Both land, as flat pairs, in ``args.opts``."""
    parser.add_argument(
        _OPTS_FLAG,
        dest="opts_flag",
        nargs="*",
        default=[],
        metavar="KEY VALUE",
        help="config overrides (the same as writing them at the end, without --opts)",
    )
    parser.add_argument(
        "opts",
        nargs="*",
        metavar="KEY VALUE",
        help="config overrides, e.g. MODEL.WEIGHTS model.pth or SEED=1",
    )
    return parser


def _option_values(action: argparse.Action, tokens: list[str], start: int) -> int:
    """How many tokens from ``start`` are the values of the option ``action``."""
    if action.nargs == 0:
        return 0
    if action.nargs is None or action.nargs == argparse.OPTIONAL:
        if action.nargs == argparse.OPTIONAL and (
            start >= len(tokens)
            or tokens[start].startswith("--")
            or looks_like_config_key(tokens[start])
        ):
            return 0
        return 1 if start < len(tokens) else 0
    if isinstance(action.nargs, int):
        return min(action.nargs, len(tokens) - start)
    # "*" / "+": values up to the next option or the first token that reads as a config key.
    count = 0
    while start + count < len(tokens):
        token = tokens[start + count]
        if token.startswith("--") or looks_like_config_key(token):
            break
        count += 1
    return count


def parse_args_anywhere(
    parser: argparse.ArgumentParser, argv: list[str] | None = None
) -> argparse.Namespace:
    """Parse ``argv`` (default ``sys.argv[1:]``) where options may come before, between or
    after the config overrides.

    Options (``--x``, ``--x=v``, ``-h``) take their values as ``parser`` declares them;
    every other token is part of a ``KEY VALUE`` / ``KEY=VALUE`` override. ``--opts`` marks
    overrides (detectron2's form) and may appear anywhere. The overrides come back as flat
    pairs in ``args.opts`` (:func:`split_config_overrides`); a key without a value is a
    usage error. The parser should have :func:`add_config_overrides_arguments`.
    """
    tokens = list(sys.argv[1:] if argv is None else argv)
    known = parser._option_string_actions
    options: list[str] = []
    overrides: list[str] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        index += 1
        if token == _OPTS_FLAG:
            continue  # what follows is overrides, as anywhere else
        name = token.split("=", 1)[0]
        if token.startswith("--") or name in known:
            options.append(token)
            action = known.get(name)
            if action is not None and "=" not in token:
                count = _option_values(action, tokens, index)
                options += tokens[index : index + count]
                index += count
        else:
            overrides.append(token)
    args = parser.parse_args(options)
    try:
        args.opts = split_config_overrides(list(getattr(args, "opts", []) or []) + overrides)
    except ValueError as error:
        parser.error(str(error))
    if hasattr(args, "opts_flag"):
        del args.opts_flag
    return args
