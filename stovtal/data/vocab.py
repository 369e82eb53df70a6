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
    "load_embedding_extras",
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


_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def natural_name(name: str) -> str:
    """Class name as plain lower-case words: ``"CleanAndJerk" -> "clean and jerk"``,
    ``"Playing guitarra" -> "playing guitarra"``, ``"long_jump" -> "long jump"``
    (THUMOS14 names are CamelCase)."""
    return " ".join(_CAMEL.sub(" ", name.strip()).replace("_", " ").lower().split())


def load_embeddings(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """Read a vocabulary embedding ``.npz``; returns (names ``[K]``, float32 ``[K, E]``).

    Errors name the file: missing file, not an npz, missing keys, wrong shapes, empty,
    duplicate names, non-finite values. Extra arrays (e.g. ``logit_scale``) are ignored;
    :func:`load_embedding_extras` reads them.
    """
    path = os.fspath(path)
    arrays = _read_npz(path)
    missing = [k for k in ("names", "embeddings") if k not in arrays]
    if missing:
        raise ValueError(f"{path}: missing array(s) {missing}: needs 'names' and "
                         f"'embeddings', has {sorted(arrays)}")
    names, emb = arrays["names"], arrays["embeddings"]
    if names.ndim != 1 or names.dtype.kind not in "UOS":
        raise ValueError(f"{path}: 'names' must be a 1-D string array, got {names.dtype} {names.shape}")
    if emb.ndim != 2 or emb.shape[0] != names.shape[0] or emb.shape[0] == 0:
        raise ValueError(f"{path}: 'embeddings' must be [K, E] with K = len(names) > 0: "
                         f"{names.shape[0]} names but {emb.shape[0] if emb.ndim else 0} embedding "
                         f"rows (shape {emb.shape})")
    if not np.issubdtype(emb.dtype, np.floating):
        raise ValueError(f"{path}: 'embeddings' must be floating point, got {emb.dtype}")
    emb = emb.astype(np.float32)
    if not np.isfinite(emb).all():
        raise ValueError(f"{path}: 'embeddings' contains NaN or Inf")
    names_list = [str(n) for n in names.tolist()]
    if len(set(names_list)) != len(names_list):
        seen: set[str] = set()
        dups = [n for n in names_list if n in seen or seen.add(n)]
        raise ValueError(f"{path}: duplicate class names {dups[:5]!r}")
    return names_list, emb


def load_embedding_extras(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of an embedding ``.npz`` other than ``names`` and ``embeddings``
    (e.g. ``logit_scale``, ``templates``, checkpoint hash)."""
    arrays = _read_npz(os.fspath(path))
    return {k: v for k, v in arrays.items() if k not in ("names", "embeddings")}


def _read_npz(path: str) -> dict[str, np.ndarray]:
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError("a single .npy array, not an .npz archive")
        with loaded as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: vocabulary embedding file not found") from None
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable .npz file ({exc})") from None


def save_embeddings(path: str | os.PathLike, names: list[str], embeddings: np.ndarray,
                    dtype: np.dtype | type = np.float32, logit_scale: float | None = None,
                    **meta: str) -> None:
    """Write a vocabulary embedding ``.npz`` atomically: ``names``, ``embeddings`` ``[K, E]``,
    optionally ``logit_scale`` and string metadata arrays."""
    embeddings = np.asarray(embeddings)
    if embeddings.ndim != 2 or embeddings.shape[0] != len(names):
        raise ValueError(f"embeddings must be [K, E] with K = {len(names)}, got {embeddings.shape}")
    arrays: dict[str, np.ndarray] = {
        "names": np.asarray(names, dtype=str),
        "embeddings": embeddings.astype(dtype),
    }
    if logit_scale is not None:
        arrays["logit_scale"] = np.array(float(logit_scale), dtype=np.float32)
    for key, value in meta.items():
        arrays[key] = np.array(str(value))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
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
