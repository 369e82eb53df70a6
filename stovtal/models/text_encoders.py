"""Text encoders: class names -> L2-normalised embeddings ``[K, E]``.

The one interface the open-vocabulary classifier talks to is :class:`TextEncoder`:
``encode(names) -> Tensor [K, E]`` (float32, unit rows, on the CPU) and a
``logit_scale`` (the factor applied to cosine similarities before the softmax;
100 for CLIP). Two implementations:

* :class:`OpenClipTextEncoder`: an open_clip text tower loaded from a local
  checkpoint. Each class name is put into every prompt template, each prompt
  is encoded and L2-normalised, the prompts of a class are averaged and the
  mean is renormalised (CLIP's prompt ensembling).
* :class:`NpzTextEncoder`: precomputed embeddings from an ``.npz`` with
  ``names`` (str array) and ``embeddings`` (float32 ``[K, E]``), as written by
  ``python -m stovtal.text encode``.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Sequence

import numpy as np
import torch

from ..data.vocab import load_embedding_extras, load_embeddings, natural_name, save_embeddings

__all__ = [
    "TextEncoder",
    "OpenClipTextEncoder",
    "NpzTextEncoder",
    "PROMPT_TEMPLATES",
    "CLIP_LOGIT_SCALE",
    "resolve_templates",
    "format_class_name",
    "save_text_embeddings",
]

CLIP_LOGIT_SCALE = 100.0

#: Named prompt-template sets; ``"{}"`` is replaced by the class name.
PROMPT_TEMPLATES: dict[str, tuple[str, ...]] = {
    "name": ("{}",),
    "video": (
        "a video of a person {}.",
        "a video of a person doing {}.",
        "a video of a person performing {}.",
        "a video of {}.",
        "a clip of a person {}.",
        "a photo of a person {}.",
        "a person is {}.",
        "{}",
    ),
}

_NAME_STYLES = ("verbatim", "natural")


def resolve_templates(templates: str | Sequence[str] | None) -> tuple[str, ...]:
    """``None`` -> the class name itself; a preset name from :data:`PROMPT_TEMPLATES`;
    or a list of templates, each containing ``"{}"`` exactly once."""
    if templates is None:
        return PROMPT_TEMPLATES["name"]
    if isinstance(templates, str):
        if templates in PROMPT_TEMPLATES:
            return PROMPT_TEMPLATES[templates]
        if "{}" not in templates:
            raise ValueError(
                f"unknown template preset {templates!r} (known: {sorted(PROMPT_TEMPLATES)}); "
                "a template must contain '{}'"
            )
        templates = [templates]
    out = tuple(templates)
    if not out:
        raise ValueError("need at least one prompt template")
    for t in out:
        if not isinstance(t, str) or t.count("{}") != 1:
            raise ValueError(f"prompt template {t!r} must contain '{{}}' exactly once")
    return out


def format_class_name(name: str, style: str = "verbatim") -> str:
    """``"verbatim"`` keeps the name; ``"natural"`` splits CamelCase and
    underscores and lowercases (``"BaseballPitch"`` -> ``"baseball pitch"``)."""
    if style == "verbatim":
        return name
    if style == "natural":
        return natural_name(name)
    raise ValueError(f"unknown name style {style!r}; use one of {_NAME_STYLES}")


def _check_names(names: Sequence[str]) -> list[str]:
    if isinstance(names, str):
        raise TypeError("encode() takes a list of class names, not one string")
    names = list(names)
    if not names:
        raise ValueError("encode() needs at least one class name")
    bad = [n for n in names if not isinstance(n, str) or not n.strip()]
    if bad:
        raise ValueError(f"class names must be non-empty strings, got {bad[:5]!r}")
    return names


def _normalise_rows(x: torch.Tensor, what: str) -> torch.Tensor:
    norms = x.norm(dim=-1, keepdim=True)
    if not torch.isfinite(x).all():
        raise ValueError(f"{what}: embeddings contain NaN or Inf")
    if (norms == 0).any():
        raise ValueError(f"{what}: some embeddings have zero norm")
    return x / norms


class TextEncoder(abc.ABC):
    """Maps class names to L2-normalised float32 embeddings ``[K, E]`` (CPU tensor)."""

    logit_scale: float = CLIP_LOGIT_SCALE

    @abc.abstractmethod
    def encode(self, names: Sequence[str]) -> torch.Tensor:
        """Embeddings of ``names`` in the given order: float32 ``[K, E]``, unit rows."""

    @property
    @abc.abstractmethod
    def embed_dim(self) -> int:
        """E."""


class OpenClipTextEncoder(TextEncoder):
    """open_clip text tower from a local checkpoint, with prompt ensembling.

    Args:
        model_name: built-in open_clip model name or a model-config .json path.
        checkpoint_path: local weights file (no hub downloads).
        templates: prompt templates (see :func:`resolve_templates`); default: the name itself.
        device: where to run the text tower.
        name_style: ``"verbatim"`` or ``"natural"`` (see :func:`format_class_name`).
        batch_size: prompts per forward pass.
        base_checkpoint: weights loaded before a ViFi-CLIP checkpoint, for its token embedding
            (the original CLIP ViT-B/16 file); see :func:`~stovtal.models.open_clip_loading.load_open_clip`.

    ``logit_scale`` is the checkpoint's learned temperature ``exp(logit_scale)``
    (100 for the released CLIP models).
    """

    def __init__(
        self,
        model_name: str,
        checkpoint_path: str | os.PathLike,
        templates: str | Sequence[str] | None = None,
        device: str | torch.device = "cpu",
        name_style: str = "verbatim",
        batch_size: int = 256,
        base_checkpoint: str | os.PathLike | None = None,
    ) -> None:
        from .open_clip_loading import load_open_clip

        self.templates = resolve_templates(templates)
        format_class_name("x", name_style)  # validates the style early
        self.name_style = name_style
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self._clip = load_open_clip(model_name, checkpoint_path, device, base_checkpoint)
        self.model_name = self._clip.model_name
        self.checkpoint_path = self._clip.checkpoint
        self.device = self._clip.device
        self.logit_scale = float(self._clip.model.logit_scale.detach().exp().item())
        self._embed_dim: int | None = None

    @property
    def embed_dim(self) -> int:
        if self._embed_dim is None:
            self._embed_dim = int(self.encode(["a"]).shape[1])
        return self._embed_dim

    def prompts(self, name: str) -> list[str]:
        formatted = format_class_name(name, self.name_style)
        return [t.format(formatted) for t in self.templates]

    @torch.inference_mode()
    def encode(self, names: Sequence[str]) -> torch.Tensor:
        names = _check_names(names)
        prompts = [p for n in names for p in self.prompts(n)]
        model, tok = self._clip.model, self._clip.tokenizer
        feats = []
        for s in range(0, len(prompts), self.batch_size):
            tokens = tok(prompts[s : s + self.batch_size]).to(self.device)
            f = model.encode_text(tokens).float()
            feats.append(_normalise_rows(f, f"text tower of {self.model_name}").cpu())
        per_prompt = torch.cat(feats).view(len(names), len(self.templates), -1)
        return _normalise_rows(per_prompt.mean(dim=1), "prompt-averaged embeddings").contiguous()


class NpzTextEncoder(TextEncoder):
    """Precomputed class-name embeddings from an ``.npz`` (``names``, ``embeddings``).

    ``logit_scale``: the argument if given, else the file's ``logit_scale`` entry if
    present, else 100 (CLIP). Rows are L2-normalised on load.
    """

    def __init__(self, path: str | os.PathLike, logit_scale: float | None = None) -> None:
        self.path = os.fspath(path)
        self.names, emb = load_embeddings(self.path)
        extras = load_embedding_extras(self.path)
        file_scale = float(extras["logit_scale"]) if "logit_scale" in extras else None
        self._index = {n: i for i, n in enumerate(self.names)}
        self._emb = _normalise_rows(torch.from_numpy(emb), self.path)
        scale = logit_scale if logit_scale is not None else file_scale
        self.logit_scale = CLIP_LOGIT_SCALE if scale is None else float(scale)
        if not np.isfinite(self.logit_scale) or self.logit_scale <= 0:
            raise ValueError(
                f"{self.path}: logit_scale must be finite and > 0, got {self.logit_scale}"
            )

    @property
    def embed_dim(self) -> int:
        return int(self._emb.shape[1])

    def encode(self, names: Sequence[str]) -> torch.Tensor:
        names = _check_names(names)
        unknown = [n for n in names if n not in self._index]
        if unknown:
            raise ValueError(
                f"{self.path}: no embedding for class name(s) {unknown!r} "
                f"(the file has {len(self.names)} names, e.g. {self.names[:3]!r})"
            )
        return self._emb[[self._index[n] for n in names]].clone()


def save_text_embeddings(
    path: str | os.PathLike,
    names: Sequence[str],
    embeddings: torch.Tensor | np.ndarray,
    logit_scale: float | None = None,
    **meta: str,
) -> None:
    """Atomically write ``names`` + float32 ``embeddings [K, E]`` (+ optional
    ``logit_scale`` and string metadata) as an ``.npz`` (see
    :func:`stovtal.data.vocab.save_embeddings`)."""
    names = _check_names(names)
    emb = (
        embeddings.detach().cpu().numpy()
        if isinstance(embeddings, torch.Tensor)
        else np.asarray(embeddings)
    )
    save_embeddings(path, list(names), emb, logit_scale=logit_scale, **meta)
