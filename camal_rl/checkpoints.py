"""Torch checkpoints that hold data and nothing else, for both trainers.

A checkpoint is tensors and plain Python values (numbers, strings, lists, tuples, dicts), written
whole or not at all (``camal_rl.files.save_torch``) and read back with torch's weights-only
unpickler, which builds nothing but those: a crafted file can never run code when a command opens
it; it is refused with one line instead. The random streams a bit-for-bit resume needs are kept in
the same plain form (``rng_state`` / ``set_rng_state``).
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from camal_rl.errors import RunFolderError
from camal_rl.files import save_torch


def save(data: dict, path: str | Path) -> None:
    save_torch(data, path)


def load(path: str | Path, *, mmap: bool = False) -> dict:
    """The data of a checkpoint; ``RunFolderError`` (one line, nothing of the file run) otherwise."""
    path = Path(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except OSError:  # missing, unreadable: a machine fault, said as one (``errors.run_cli``)
        raise
    except Exception as error:  # torch raises many types for damaged or foreign files
        text = str(error)
        if "Unsupported global" in text:  # the weights-only loader met a class or function: code, refused
            raise RunFolderError(f"{path} holds more than tensors and plain values, so it was not opened (camal-rl "
                                 f"reads data-only checkpoints and never runs code from a file); it was not "
                                 f"written by this camal-rl") from None
        raise RunFolderError(f"{path} is corrupt or not a checkpoint ({type(error).__name__}); delete it (or its "
                             f"run folder) and train again") from None
    if not isinstance(data, dict):
        raise RunFolderError(f"{path} is not a camal-rl checkpoint (it holds a {type(data).__name__})")
    return data


def rng_state() -> dict:
    """Python's, numpy's, torch's (and CUDA's) random streams as tensors and plain values."""
    _, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    saved = state["numpy"]
    np.random.set_state(("MT19937", saved["keys"].numpy().astype(np.uint32), saved["position"], saved["has_gauss"],
                         saved["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
