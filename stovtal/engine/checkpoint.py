"""Atomic checkpoints: written to a temporary file and renamed; read with ``weights_only=True``."""

from __future__ import annotations

import io
import os
from typing import Any

import torch

from stovtal.utils.fileio import atomic_write_bytes

__all__ = ["check_state_dict", "load_checkpoint", "load_weights", "save_checkpoint"]


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Save ``state`` (tensors, numbers, strings, lists, dicts only) atomically."""
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely (no arbitrary unpickling); errors name the file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path}: not a readable stovtal checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, dict):
        raise ValueError(f"{path}: checkpoint does not hold a dict")
    return state


def check_state_dict(module: torch.nn.Module, state_dict: Any, path: str | os.PathLike) -> None:
    """Raise ``ValueError`` naming ``path`` if ``state_dict`` does not fit ``module`` (missing or
    unexpected keys, other shapes): a checkpoint of another architecture or configuration."""
    path = os.fspath(path)
    if not isinstance(state_dict, dict):
        raise ValueError(f"{path}: the checkpoint's weights are not a state dict")
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [(k, tuple(getattr(state_dict[k], "shape", ())), tuple(v.shape)) for k, v in own.items()
              if k in state_dict and tuple(getattr(state_dict[k], "shape", ())) != tuple(v.shape)]
    if not (missing or unexpected or shapes):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
    if shapes:
        k, theirs, ours = shapes[0]
        parts.append(f"{len(shapes)} shape mismatches (e.g. {k}: {list(theirs)} in the file, {list(ours)} in the model)")
    raise ValueError(f"{path}: the checkpoint does not fit the model: {', '.join(parts)}; it was made with "
                     "another architecture or model configuration")


def load_weights(module: torch.nn.Module, state_dict: Any, path: str | os.PathLike) -> None:
    """``module.load_state_dict(state_dict)`` after :func:`check_state_dict` (errors name ``path``)."""
    check_state_dict(module, state_dict, path)
    module.load_state_dict(state_dict)
