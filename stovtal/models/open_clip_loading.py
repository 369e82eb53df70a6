"""Load an open_clip model from a local checkpoint file (never from a hub).

Used by the frame feature extractor and by :class:`OpenClipTextEncoder`, so the
image and text towers always come from the same place.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["LoadedClip", "load_open_clip", "file_sha256", "resolve_model_name"]


@dataclass
class LoadedClip:
    """An open_clip model (eval mode) with its validation transform and tokenizer."""

    model: Any
    preprocess: Any
    tokenizer: Any
    model_name: str
    checkpoint: str
    device: torch.device


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    old = {k: os.environ.get(k) for k in keys}
    for k in keys:
        os.environ[k] = "1"
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def resolve_model_name(model: str) -> str:
    """A built-in open_clip model name, or a path to a model-config JSON file
    (open_clip's format: ``embed_dim``, ``vision_cfg``, ``text_cfg``), which is
    registered under its file stem. Hub schemas are refused."""
    import open_clip

    if not isinstance(model, str) or not model:
        raise ValueError(f"model must be a non-empty string, got {model!r}")
    if model.startswith(("hf-hub:", "local-dir:")):
        raise ValueError(
            f"model {model!r}: hub/dir schemas are not supported (no downloads at run time); "
            "pass a built-in open_clip model name or a model-config .json file, plus --checkpoint"
        )
    if model.endswith(".json"):
        if not os.path.isfile(model):
            raise FileNotFoundError(f"{model}: model config file not found")
        open_clip.add_model_config(model)
        name = os.path.splitext(os.path.basename(model))[0]
    else:
        name = model
    if name.replace("/", "-") not in open_clip.list_models():
        raise ValueError(
            f"unknown open_clip model {model!r}; built-ins include "
            f"{', '.join(open_clip.list_models()[:8])}, ... (or pass a model-config .json file)"
        )
    return name


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def load_open_clip(
    model: str, checkpoint: str | os.PathLike, device: str | torch.device = "cpu"
) -> LoadedClip:
    """Build open_clip ``model`` and load the weights in the local file ``checkpoint``.

    Args:
        model: built-in open_clip name (e.g. ``"ViT-B-16"``) or a model-config .json path.
        checkpoint: local weights file (a state dict or an open_clip training checkpoint).
        device: where to put the model.
    """
    import open_clip

    name = resolve_model_name(model)
    checkpoint = os.fspath(checkpoint)
    if not os.path.isfile(checkpoint):
        raise FileNotFoundError(
            f"{checkpoint}: checkpoint file not found (a local file is required)"
        )
    device = torch.device(device)
    with _hub_offline():
        try:
            clip, _, preprocess = open_clip.create_model_and_transforms(
                name,
                pretrained=checkpoint,
                device=device,
                pretrained_image=False,
                pretrained_text=False,
            )
        except Exception as exc:
            raise RuntimeError(
                f"{checkpoint}: cannot load as weights of open_clip model {name!r} "
                f"({type(exc).__name__}: {exc})"
            ) from exc
        tokenizer = open_clip.get_tokenizer(name)
    clip.eval()
    return LoadedClip(clip, preprocess, tokenizer, name, checkpoint, device)
