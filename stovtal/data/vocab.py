"""Class-name vocabularies (shipped as package data) and vocabulary embedding files.

Shipped vocabularies (``stovtal/data/vocab/<name>.txt``, one class name per line, names verbatim
from their sources, see ``vocab/SOURCES.md``): ``thumos14`` (20), ``activitynet13`` (200),
``activitynet12`` (100), ``fineaction`` (106), ``kinetics400`` (400).

A vocabulary embedding file is an ``.npz`` with ``names`` (str ``[K]``) and ``embeddings``
(float32 ``[K, E]``), e.g. the text-encoder embeddings of the class names.
"""

from __future__ import annotations

import io
import os
import re
import zipfile
from importlib import resources

import numpy as np

from stovtal.utils.fileio import atomic_write_bytes

__all__ = [
    "VOCABULARIES",
    "load_vocabulary",
    "natural_name",
    "load_embeddings",
    "save_embeddings",
    "shipped_text_embeddings",
]

VOCABULARIES = ("thumos14", "activitynet13", "activitynet12", "fineaction", "kinetics400")
_ALIASES = {"thumos": "thumos14", "anet13": "activitynet13", "activitynet": "activitynet13",
            "anet12": "activitynet12", "k400": "kinetics400"}


def _canonical(name: str) -> str:
    key = name.lower()
    key = _ALIASES.get(key, key)
    if key not in VOCABULARIES:
        raise ValueError(f"unknown vocabulary {name!r}; shipped ones: {', '.join(VOCABULARIES)}")
    return key


def load_vocabulary(name: str, strip: bool = True) -> list[str]:
    """Class names of a shipped vocabulary, in the source's canonical order.

    Args:
        name: one of ``VOCABULARIES`` (aliases ``thumos``, ``anet13``, ``anet12``, ``k400``).
        strip: strip surrounding whitespace (FineAction's source spells ``"braid hair "`` with a
            trailing space; ``strip=False`` keeps it verbatim for matching raw annotations).
    """
    key = _canonical(name)
    text = resources.files("stovtal.data").joinpath("vocab", f"{key}.txt").read_text("utf-8")
    names = text.split("\n")
    if names and names[-1] == "":
        names.pop()
    return [n.strip() for n in names] if strip else names


_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def natural_name(name: str) -> str:
    """Class name as plain lower-case words: ``"CleanAndJerk" -> "clean and jerk"``,
    ``"Playing guitarra" -> "playing guitarra"`` (THUMOS14 names are CamelCase)."""
    return " ".join(_CAMEL.sub(" ", name.strip()).lower().split())


def load_embeddings(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """Read a vocabulary embedding ``.npz``; returns (names ``[K]``, float32 ``[K, E]``).

    Errors name the file: missing file, not an npz, missing keys, wrong shapes, duplicate
    names, non-finite values.
    """
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            if "names" not in z or "embeddings" not in z:
                raise ValueError(f"{path}: needs arrays 'names' and 'embeddings', has {sorted(z.files)}")
            names = z["names"]
            emb = z["embeddings"]
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: vocabulary embedding file not found") from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise ValueError(f"{path}: not a readable .npz file ({exc})") from None
    if names.ndim != 1 or names.dtype.kind not in "UO":
        raise ValueError(f"{path}: 'names' must be a 1-D string array, got {names.dtype} {names.shape}")
    if emb.ndim != 2 or emb.shape[0] != names.shape[0]:
        raise ValueError(f"{path}: 'embeddings' must be [K, E] with K = len(names) = {len(names)}, "
                         f"got {emb.shape}")
    if not np.issubdtype(emb.dtype, np.floating):
        raise ValueError(f"{path}: 'embeddings' must be floating point, got {emb.dtype}")
    emb = emb.astype(np.float32)
    if not np.isfinite(emb).all():
        raise ValueError(f"{path}: 'embeddings' contains NaN or Inf")
    names_list = [str(n) for n in names]
    if len(set(names_list)) != len(names_list):
        raise ValueError(f"{path}: duplicate class names")
    return names_list, emb


def save_embeddings(path: str | os.PathLike, names: list[str], embeddings: np.ndarray,
                    dtype: np.dtype | type = np.float32) -> None:
    """Write a vocabulary embedding ``.npz`` atomically (``embeddings`` ``[K, E]``)."""
    embeddings = np.asarray(embeddings)
    if embeddings.ndim != 2 or embeddings.shape[0] != len(names):
        raise ValueError(f"embeddings must be [K, E] with K = {len(names)}, got {embeddings.shape}")
    buf = io.BytesIO()
    np.savez(buf, names=np.asarray(names, dtype=str), embeddings=embeddings.astype(dtype))
    atomic_write_bytes(path, buf.getvalue())


def shipped_text_embeddings(name: str) -> tuple[list[str], np.ndarray]:
    """all-MiniLM-L6-v2 text embeddings (float32 ``[K, 384]``, unit norm) of a shipped
    vocabulary's natural class names, made by ``tools/make_text_embeddings.py``. Names are
    returned as in :func:`load_vocabulary` (stripped)."""
    key = _canonical(name)
    ref = resources.files("stovtal.data").joinpath("embeddings", f"minilm_{key}.npz")
    with resources.as_file(ref) as p:
        if not p.exists():
            raise FileNotFoundError(f"{p}: no shipped text embeddings for vocabulary {key!r}")
        return load_embeddings(p)
