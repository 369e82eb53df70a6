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
    model: str, checkpoint: str | os.PathLike, device: str | torch.device = "cpu",
    base_checkpoint: str | os.PathLike | None = None, require_text: bool = True,
) -> LoadedClip:
    """Build open_clip ``model`` and load the weights in the local file ``checkpoint``.

    Args:
        model: built-in open_clip name (e.g. ``"ViT-B-16"``) or a model-config .json path.
        checkpoint: local weights file: a state dict, an open_clip training checkpoint, or a
            ViFi-CLIP checkpoint (:mod:`stovtal.models.vificlip`; mapped onto open_clip's
            OpenAI-layout names, every tensor accounted for).
        device: where to put the model.
        base_checkpoint: open_clip weights loaded first, for what a ViFi-CLIP file lacks (its
            token embedding: the original CLIP ViT-B/16 weights).
        require_text: whether the text tower must be complete (False for image features only).
    """
    import open_clip

    from .vificlip import is_vificlip, read_clip_checkpoint

    name = resolve_model_name(model)
    checkpoint = os.fspath(checkpoint)
    if not os.path.isfile(checkpoint):
        raise FileNotFoundError(
            f"{checkpoint}: checkpoint file not found (a local file is required)"
        )
    if base_checkpoint is not None and not os.path.isfile(base_checkpoint):
        raise FileNotFoundError(f"{base_checkpoint}: base checkpoint file not found")
    device = torch.device(device)
    sd = read_clip_checkpoint(checkpoint)  # None: a TorchScript archive (OpenAI's), left to open_clip
    vifi = sd is not None and is_vificlip(sd)
    with _hub_offline():
        try:
            clip, _, preprocess = open_clip.create_model_and_transforms(
                name,
                pretrained=os.fspath(base_checkpoint) if vifi and base_checkpoint else (None if vifi else checkpoint),
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
    if vifi:
        assert sd is not None
        _load_vificlip(clip, sd, checkpoint, name, base_checkpoint is not None, require_text)
    clip.eval()
    return LoadedClip(clip, preprocess, tokenizer, name, checkpoint, device)


def _load_vificlip(clip: Any, sd: dict[str, torch.Tensor], checkpoint: str, name: str, has_base: bool,
                   require_text: bool) -> None:
    from .vificlip import vificlip_to_open_clip

    mapped, unmapped = vificlip_to_open_clip(sd)
    own = clip.state_dict()
    problems = []
    if unmapped:
        problems.append("tensors with no open_clip counterpart: " + ", ".join(sorted(unmapped)))
    extra = sorted(k for k in mapped if k not in own)
    if extra:
        problems.append(f"tensors open_clip {name!r} does not have: " + ", ".join(extra))
    bad = sorted(f"{k} {tuple(mapped[k].shape)} vs {tuple(own[k].shape)}"
                 for k in mapped if k in own and mapped[k].shape != own[k].shape)
    if bad:
        problems.append("shape mismatches: " + "; ".join(bad))
    missing = sorted(k for k in own if k not in mapped)
    if missing and not has_base:
        text_only = all(not k.startswith("visual.") for k in missing)
        if not (text_only and not require_text):
            problems.append(
                "open_clip tensors the ViFi-CLIP file does not set: " + ", ".join(missing)
                + (" (ViFi-CLIP keeps no token embedding: pass the original CLIP ViT-B/16 weights as the base "
                   "checkpoint)" if "token_embedding.weight" in missing else "")
            )
    if problems:
        raise RuntimeError(f"{checkpoint}: a ViFi-CLIP checkpoint that does not fit open_clip {name!r}:\n  "
                           + "\n  ".join(problems))
    dev = next(iter(own.values())).device
    clip.load_state_dict({k: v.to(dev) for k, v in mapped.items()}, strict=False)
