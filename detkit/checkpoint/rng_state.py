"""The random generators' states as a checkpointable, so ``--resume`` continues exactly."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

__all__ = ["RNGState"]


class RNGState:
    """``state_dict()`` / ``load_state_dict()`` of Python's, NumPy's and torch's global
    generators (CUDA's too when present), holding only tensors and plain values so the
    checkpoint loads with ``weights_only=True``.

    Registered with the checkpointer, it makes a resumed run draw the same random numbers
    (anchor and RoI sampling, dropout) as the run that was interrupted.
    """

    def state_dict(self) -> dict[str, Any]:
        version, internal, gauss = random.getstate()
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        state = {
            "python_version": version,
            "python_state": torch.tensor(internal, dtype=torch.int64),
            "python_gauss": gauss,
            "numpy_kind": kind,
            "numpy_keys": torch.from_numpy(keys.astype(np.int64)),
            "numpy_pos": int(pos),
            "numpy_has_gauss": int(has_gauss),
            "numpy_cached_gaussian": float(cached),
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        random.setstate(
            (state["python_version"], tuple(state["python_state"].tolist()), state["python_gauss"])
        )
        np.random.set_state(
            (
                state["numpy_kind"],
                state["numpy_keys"].numpy().astype(np.uint32),
                state["numpy_pos"],
                state["numpy_has_gauss"],
                state["numpy_cached_gaussian"],
            )
        )
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
