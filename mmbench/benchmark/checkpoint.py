"""Safe checkpoints: everything mmbench writes loads with ``torch.load(weights_only=True)``.

``weights_only=True`` unpickles tensors and plain Python values only, so opening a checkpoint
(someone else's included) cannot run code. Random-generator states are stored as tensors and
plain values for that reason (:func:`numpy_state`).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmbench.errors import CheckpointError


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``.

    Raises:
        CheckpointError: the file holds anything but tensors and plain values (a pickled
            object that could run code), or cannot be read; the message names the file.
    """
    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        first = " ".join(str(exc).split())[:300]
        raise CheckpointError(
            f"{path}: refused to load: not a plain weights file ({first}); mmbench loads "
            "checkpoints with weights_only=True and never unpickles arbitrary objects"
        ) from exc


def numpy_state() -> dict[str, Any]:
    """numpy's global generator state as tensors and plain values."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "name": str(name),
        "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached),
    }


def set_numpy_state(state: dict[str, Any]) -> None:
    """Restore numpy's global generator from :func:`numpy_state`."""
    keys = state["keys"].cpu().numpy().astype(np.uint32)
    np.random.set_state(
        (state["name"], keys, state["pos"], state["has_gauss"], state["cached_gaussian"])
    )


__all__ = ["load_checkpoint", "numpy_state", "set_numpy_state"]
