"""Encode a vocabulary's class names into an embedding ``.npz``."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from ..models.open_clip_loading import file_sha256
from ..models.text_encoders import OpenClipTextEncoder, save_text_embeddings

__all__ = ["read_vocabulary", "encode_vocabulary"]


def read_vocabulary(vocab: str | os.PathLike) -> list[str]:
    """Class names from a text file (one per line, surrounding whitespace stripped,
    blank lines skipped) or, if no such file exists, from the vocabulary shipped
    under that name (``thumos14``, ``activitynet13``, ... see ``stovtal.data.vocab``)."""
    vocab = os.fspath(vocab)
    if os.path.isfile(vocab):
        with open(vocab, encoding="utf-8") as f:
            names = [ln.strip() for ln in f if ln.strip()]
        if not names:
            raise ValueError(f"{vocab}: the vocabulary file is empty")
    else:
        if os.sep in vocab or vocab.endswith(".txt"):
            raise FileNotFoundError(f"{vocab}: vocabulary file not found")
        try:
            from ..data.vocab import load_vocabulary
        except ImportError as exc:
            raise ValueError(
                f"{vocab!r} is not a file and shipped vocabularies are unavailable ({exc}); "
                "pass a text file with one class name per line"
            ) from None
        names = load_vocabulary(vocab)
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        raise ValueError(f"{vocab}: duplicate class names {dups[:5]!r}")
    return names


def encode_vocabulary(
    names: Sequence[str],
    model: str,
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    templates: str | Sequence[str] | None = None,
    name_style: str = "verbatim",
    device: str | torch.device = "cpu",
    batch_size: int = 256,
    base_checkpoint: str | os.PathLike | None = None,
) -> OpenClipTextEncoder:
    """Embed ``names`` with the open_clip text tower and write ``out`` (.npz) atomically.
    ``base_checkpoint``: the original CLIP weights a ViFi-CLIP ``checkpoint`` needs for its token embedding."""
    enc = OpenClipTextEncoder(model, checkpoint, templates, device, name_style, batch_size,
                              base_checkpoint=base_checkpoint)
    emb = enc.encode(list(names))
    save_text_embeddings(
        out,
        list(names),
        emb,
        logit_scale=enc.logit_scale,
        model=os.path.basename(model) if str(model).endswith(".json") else model,
        checkpoint_sha256=file_sha256(checkpoint),
        templates="\n".join(enc.templates),
        name_style=name_style,
    )
    return enc
