"""Freezing parts of a model by name (``MODEL.FROZEN_MODULES``).

One mechanism for every case: the backbone's first stages (the paper's conv1_x, conv2_x),
the shared layers in steps 3 and 4 of alternating training, an RPN head kept fixed while a
new box head trains. A frozen module's parameters stop requiring gradients, so the optimizer
never sees them (no update, no weight decay, no momentum), and its BatchNorm layers become
``FrozenBatchNorm2d`` (:func:`~detkit.layers.norm.freeze_module`): fixed statistics, the
function BN computes in eval mode, in training and inference alike.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from fnmatch import fnmatchcase

from torch import nn

from detkit.layers.norm import freeze_module

__all__ = ["freeze_modules_by_name"]


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def freeze_modules_by_name(
    model: nn.Module, patterns: Sequence[str], config_key: str = "MODEL.FROZEN_MODULES"
) -> list[str]:
    """Freeze every module of ``model`` whose qualified name matches one of ``patterns``.

    Args:
        model: the model (names as in ``model.named_modules()``, e.g. ``"backbone"``,
            ``"backbone.stage2"``, ``"proposal_generator.head"``, ``"roi_heads.box_head"``).
        patterns: exact names or shell-style globs (``"backbone.stage[12]"``,
            ``"roi_heads.*"``); a module matched freezes with everything inside it.
        config_key: named in errors.

    Returns:
        The names of the outermost modules frozen, in model order.

    Raises:
        ValueError: a pattern matches no module (the error lists the names it could mean).
    """
    names = [name for name, _ in model.named_modules() if name]
    chosen: list[str] = []
    for pattern in patterns:
        matched = [n for n in names if n == pattern or fnmatchcase(n, pattern)]
        if not matched:
            parent = pattern.rpartition(".")[0]
            siblings = [n for n in names if n.rpartition(".")[0] == parent] or [
                n for n in names if "." not in n
            ]
            close = difflib.get_close_matches(pattern, names, n=3)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ValueError(
                f"{config_key}: '{pattern}' names no module of {type(model).__name__}.{hint} "
                f"Modules at that level: {', '.join(siblings[:20])}."
            )
        chosen.extend(matched)
    # Freeze outermost modules only: freezing a parent freezes its children.
    outermost = [
        n
        for n in dict.fromkeys(chosen)
        if not any(n.startswith(other + ".") for other in chosen if other != n)
    ]
    for name in outermost:
        frozen = freeze_module(model.get_submodule(name))
        _set_submodule(model, name, frozen)
    return [n for n in names if n in outermost]
