"""ViFi-CLIP checkpoints (muzairkhattak/ViFi-CLIP) as open_clip ViT-B-16 weights.

ViFi-CLIP fine-tunes both towers of OpenAI's CLIP ViT-B/16 on Kinetics-400 and saves
``{"model": state_dict, "optimizer", "lr_scheduler", "epoch", "config": <yacs CfgNode>, ...}``
with the towers under ``image_encoder.`` (OpenAI ``VisionTransformer`` names) and
``text_encoder.`` (``transformer.``, ``positional_embedding``, ``ln_final``,
``text_projection``), ``logit_scale`` and ``prompt_learner.`` buffers (embeddings of its
training prompts), possibly ``module.``-prefixed. open_clip's ``ViT-B-16`` (OpenAI layout)
uses the same names under ``visual.`` and at the top level. ViFi-CLIP stores no token
embedding table (its prompts are embedded with the original CLIP's): text encoding needs the
original CLIP ViT-B/16 weights as a base for ``token_embedding.weight``.

Files are read with ``torch.load(weights_only=True)``; the yacs config object is allowed as a
plain ordered dict (:class:`_YacsConfig`, registered under ``yacs.config.CfgNode``), nothing else.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

__all__ = ["is_vificlip", "read_clip_checkpoint", "vificlip_to_open_clip"]


class _YacsConfig:
    """Stand-in for ``yacs.config.CfgNode`` when unpickling a ViFi-CLIP checkpoint: creating
    one gives an ``OrderedDict``, which ``weights_only`` loading fills with the config's plain
    values (and attributes); no code of the checkpoint runs."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:  # type: ignore[misc]
        return OrderedDict()


def read_clip_checkpoint(path: str | os.PathLike) -> dict[str, Tensor] | None:
    """The state dict in a CLIP / ViFi-CLIP checkpoint file (``model`` / ``state_dict`` entry
    or a bare state dict), read with ``weights_only=True`` (memory-mapped when possible);
    None for a TorchScript archive (OpenAI's released CLIP files), which holds no pickle."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: checkpoint file not found (a local file is required)")
    with torch.serialization.safe_globals([(_YacsConfig, "yacs.config.CfgNode")]):
        try:
            try:
                state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as exc:
                if "mmap" not in str(exc):
                    raise
                state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            msg = str(exc)
            if "TorchScript" in msg:
                return None
            if not any(tag in msg for tag in ("Unsupported global", "Can only")):
                raise RuntimeError(f"{path}: cannot load as a checkpoint ({type(exc).__name__}: "
                                   f"{msg.splitlines()[-1] if msg else ''})") from None
            raise RuntimeError(
                f"{path}: cannot be read with torch.load(weights_only=True) ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}). The file holds Python objects that "
                "stovtal will not unpickle. If you trust it, extract the weights once in a session of your own: "
                "ck = torch.load(path, weights_only=False); torch.save(ck['model'], 'weights.pt') "
                "and pass weights.pt"
            ) from None
    if isinstance(state, Mapping):
        for key in ("model", "state_dict"):
            inner = state.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, Tensor) for v in inner.values()):
                return dict(inner)
        if state and all(isinstance(v, Tensor) for v in state.values()):
            return dict(state)
    raise RuntimeError(f"{path}: no state dict found (expected a 'model' / 'state_dict' entry of tensors)")


def _strip(key: str) -> str:
    return key[len("module."):] if key.startswith("module.") else key


def is_vificlip(state_dict: Mapping[str, Tensor]) -> bool:
    """Whether ``state_dict`` has ViFi-CLIP's layout (``image_encoder.`` / ``text_encoder.``)."""
    return any(_strip(k).startswith(("image_encoder.", "text_encoder.")) for k in state_dict)


def vificlip_to_open_clip(state_dict: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """Rename ViFi-CLIP tensors to open_clip's OpenAI-layout names.

    Returns ``(mapped, unmapped)``: ``unmapped`` lists the tensors with no open_clip
    counterpart other than the ``prompt_learner.`` buffers (which hold ViFi-CLIP's training
    prompts, not model weights, and are skipped).
    """
    mapped: dict[str, Tensor] = {}
    unmapped: list[str] = []
    for key, value in state_dict.items():
        k = _strip(key)
        if k.startswith("prompt_learner."):
            continue
        if k.startswith("image_encoder."):
            mapped["visual." + k[len("image_encoder."):]] = value
        elif k.startswith("text_encoder."):
            mapped[k[len("text_encoder."):]] = value
        elif k == "logit_scale":
            mapped[k] = value
        else:
            unmapped.append(key)
    return mapped, unmapped
