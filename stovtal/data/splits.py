"""Base/novel class splits and the video partition they induce.

Kinetics-based split (STOV-TAL): each class name is turned into plain words
(:func:`~stovtal.data.vocab.natural_name`: CamelCase split, lower case), split on spaces, each
word stripped of surrounding punctuation (``"(in game)"`` -> ``in``, ``game``) and lemmatised
(as a verb, then the result as a noun). A class is **base** if the lemma set of some
Kinetics-400 class contains *all* of its lemmas, otherwise **novel**. The split is computed once
by ``tools/make_splits.py`` with ``lemminflect`` and shipped as ``split_tables/<dataset>.json``, so no
lemmatiser is needed at run time.

Kinetics matches (the synthetic world's web set): the Kinetics-400 classes whose lemma set contains
all lemmas of some class, with the most specific such classes (``"diving cliff"`` -> ``CliffDiving``,
not also ``Diving``, whose lemmas are a strict subset; ``"canoeing or kayaking"`` -> ``Canoeing``,
``Kayaking``). Every matched class is a base class. Shipped
in the same JSON under ``"kinetics_matches"``; :func:`kinetics_matches` reads it.

Random splits (prior OV-TAL work): for seeds 0..9, a random permutation of the classes; the
first 75% (or 50%) of it, rounded down, are the base ("train") classes. Also precomputed and
shipped in the same JSON (so they never depend on a numpy version).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np

from stovtal.utils.fileio import read_json

from .vocab import VOCABULARIES, _canonical, load_vocabulary, natural_name

__all__ = [
    "ClassSplit",
    "SPLIT_KINDS",
    "class_split",
    "compute_kinetics_matches",
    "compute_kinetics_split",
    "kinetics_matches",
    "lemma_words",
    "random_class_split",
    "partition_videos",
]

SPLIT_KINDS = ("kinetics", "random75", "random50")
NUM_RANDOM_SEEDS = 10
_PUNCT = re.compile(r"^[^\w]+|[^\w]+$")


@dataclass(frozen=True)
class ClassSplit:
    """A base/novel partition of a vocabulary (names in vocabulary order)."""

    dataset: str
    kind: str
    seed: int | None
    base: tuple[str, ...]
    novel: tuple[str, ...]

    @property
    def classes(self) -> tuple[str, ...]:
        return self.base + self.novel

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "kind": self.kind, "seed": self.seed,
                "base": list(self.base), "novel": list(self.novel)}


def lemma_words(name: str, lemmatize: Callable[[str], str]) -> frozenset[str]:
    """Set of lemmatised words of a class name (see the module docstring)."""
    words = (_PUNCT.sub("", w) for w in natural_name(name).split(" "))
    return frozenset(lemmatize(w) for w in words if w)


def _lemminflect_lemmatizer() -> Callable[[str], str]:
    import lemminflect

    def lemmatize(word: str) -> str:
        verb = lemminflect.getLemma(word, upos="VERB")
        word = verb[0] if verb else word
        noun = lemminflect.getLemma(word, upos="NOUN")
        return noun[0] if noun else word

    return lemmatize


def compute_kinetics_split(classes: Iterable[str], kinetics_classes: Iterable[str],
                           lemmatize: Callable[[str], str] | None = None) -> tuple[list[str], list[str]]:
    """(base, novel) class names by the Kinetics rule; ``lemmatize`` defaults to lemminflect."""
    lemmatize = lemmatize or _lemminflect_lemmatizer()
    kinetics_sets = [lemma_words(k, lemmatize) for k in kinetics_classes]
    base, novel = [], []
    for c in classes:
        words = lemma_words(c, lemmatize)
        (base if any(words <= k for k in kinetics_sets) else novel).append(c)
    return base, novel


def compute_kinetics_matches(classes: Iterable[str], kinetics_classes: Iterable[str],
                             lemmatize: Callable[[str], str] | None = None) -> dict[str, list[str]]:
    """``{kinetics_class: [classes whose lemmas it contains]}``: only Kinetics classes with a match,
    and only the most specific matches (a class whose lemmas are a strict subset of another
    match's is dropped); both in vocabulary order. ``lemmatize`` defaults to lemminflect."""
    lemmatize = lemmatize or _lemminflect_lemmatizer()
    targets = [(c, lemma_words(c, lemmatize)) for c in classes]
    out: dict[str, list[str]] = {}
    for k in kinetics_classes:
        kw = lemma_words(k, lemmatize)
        hits = [(c, words) for c, words in targets if words <= kw]
        # the most specific matches: "diving cliff" is CliffDiving, not also Diving
        best = [c for c, words in hits if not any(words < other for _, other in hits)]
        if best:
            out[k] = best
    return out


def random_class_split(classes: Iterable[str], base_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(base, novel): a seeded random permutation, the first ``floor(base_fraction*K)`` are base.
    Both lists keep the vocabulary order."""
    classes = list(classes)
    if not 0.0 < base_fraction < 1.0:
        raise ValueError(f"base_fraction must be in (0, 1), got {base_fraction}")
    perm = np.random.default_rng(seed).permutation(len(classes))
    n_base = int(np.floor(base_fraction * len(classes)))
    is_base = np.zeros(len(classes), dtype=bool)
    is_base[perm[:n_base]] = True
    return ([c for c, b in zip(classes, is_base, strict=True) if b],
            [c for c, b in zip(classes, is_base, strict=True) if not b])


def _shipped(dataset: str) -> dict[str, Any]:
    ref = resources.files("stovtal.data").joinpath("split_tables", f"{dataset}.json")
    with resources.as_file(ref) as p:
        return read_json(p)


def class_split(dataset: str, kind: str = "kinetics", seed: int = 0) -> ClassSplit:
    """The shipped split of a dataset's vocabulary.

    Args:
        dataset: a shipped vocabulary other than ``kinetics400`` (see ``VOCABULARIES``).
        kind: ``"kinetics"``, ``"random75"`` (75% base / 25% novel) or ``"random50"``.
        seed: 0..9, for the random splits (ignored for ``kinetics``).
    """
    key = _canonical(dataset)
    if key == "kinetics400":
        raise ValueError("kinetics400 is the reference vocabulary of the split, it has no split")
    if kind not in SPLIT_KINDS:
        raise ValueError(f"unknown split kind {kind!r}; choose from {SPLIT_KINDS}")
    data = _shipped(key)
    if kind == "kinetics":
        entry = data["kinetics"]
        seed_out = None
    else:
        if not 0 <= seed < NUM_RANDOM_SEEDS:
            raise ValueError(f"seed must be in 0..{NUM_RANDOM_SEEDS - 1}, got {seed}")
        entry = data[kind][seed]
        seed_out = seed
    return ClassSplit(key, kind, seed_out, tuple(entry["base"]), tuple(entry["novel"]))


def kinetics_matches(dataset: str) -> dict[str, tuple[str, ...]]:
    """The shipped Kinetics matches of a dataset's vocabulary (see the module docstring):
    ``{kinetics_class: (classes of the dataset it contains, ...)}``, Kinetics classes without a
    match left out."""
    key = _canonical(dataset)
    if key == "kinetics400":
        raise ValueError("kinetics400 is the reference vocabulary of the split, it has no matches")
    data = _shipped(key)
    if "kinetics_matches" not in data:
        raise ValueError(f"split_tables/{key}.json: no 'kinetics_matches' (rerun tools/make_splits.py)")
    return {k: tuple(v) for k, v in data["kinetics_matches"].items()}


def build_split_table(dataset: str, lemmatize: Callable[[str], str] | None = None) -> dict[str, Any]:
    """The JSON content shipped as ``split_tables/<dataset>.json`` (used by ``tools/make_splits.py``)."""
    lemmatize = lemmatize or _lemminflect_lemmatizer()
    names = load_vocabulary(dataset)
    kinetics = load_vocabulary("kinetics400")
    base, novel = compute_kinetics_split(names, kinetics, lemmatize)
    table: dict[str, Any] = {"dataset": dataset, "classes": names,
                             "kinetics": {"base": base, "novel": novel},
                             "kinetics_matches": compute_kinetics_matches(names, kinetics, lemmatize)}
    for kind, frac in (("random75", 0.75), ("random50", 0.5)):
        table[kind] = []
        for seed in range(NUM_RANDOM_SEEDS):
            b, n = random_class_split(names, frac, seed)
            table[kind].append({"seed": seed, "base": b, "novel": n})
    return table


SPLIT_DATASETS = tuple(v for v in VOCABULARIES if v != "kinetics400")


def partition_videos(database: Mapping[str, Mapping[str, Any]], base: Iterable[str],
                     novel: Iterable[str]) -> dict[str, list[str]]:
    """Partition video ids of an annotation ``database`` by the classes of their annotations.

    Returns ``{"base": [...], "novel": [...], "mixed": [...], "empty": [...]}``: all annotations
    base / all novel / both / no annotations. Labels in neither set raise ``ValueError``.
    """
    base, novel = set(base), set(novel)
    out: dict[str, list[str]] = {"base": [], "novel": [], "mixed": [], "empty": []}
    for vid, info in database.items():
        labels = {a["label"] for a in info.get("annotations", [])}
        unknown = labels - base - novel
        if unknown:
            raise ValueError(f"video {vid!r}: labels {sorted(unknown)} are in neither the base nor "
                             "the novel classes")
        has_b, has_n = bool(labels & base), bool(labels & novel)
        key = "mixed" if has_b and has_n else "base" if has_b else "novel" if has_n else "empty"
        out[key].append(vid)
    return out
