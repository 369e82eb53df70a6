"""The data resolver of every app: a :class:`stovtal.config.DataConfig` -> :class:`DataSpec`.

``train``, ``infer``, ``selftrain`` and ``feel`` all call :func:`resolve_data`; it decides
where the features, annotations, unlabelled videos and text embeddings are, the snippet grid,
the classes and the subsets. For the synthetic world (``data.synthetic``) it writes the world
first, or reuses a complete one, and everything then comes from the world's ``world.json``.
The apps read the files named in the spec themselves (parsed annotations are theirs to keep).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .crop import crop_settings
from .formats import FeatureGrid

if TYPE_CHECKING:
    from stovtal.config import DataConfig
    from stovtal.data.synthetic import SyntheticConfig

__all__ = ["DataSpec", "resolve_data", "vocabulary_names"]


@dataclass
class DataSpec:
    """Where a run's data is and how to read it.

    annotation_file: ActivityNet-style JSON (seconds) of the labelled (``train_subset``),
        validation (``val_subset``, ``""``: none) and test (``test_subset``) videos.
    feature_dir: ``<video_id>.npy`` float32 ``[T, feat_dim]`` snippet features.
    grid: the snippet grid (fps, feature_stride, num_frames); feat_dim: ``D`` (None: read from
        the files); max_seq_len: training crops, in snippets.
    base, novel: the class split (empty when the run did not ask for one, e.g. FEEL).
    vocabulary: every class name of the data, in order (the world's classes, the configured
        vocabulary, or base + novel).
    vocab_npz: ``names`` + ``embeddings`` of the frozen text encoder, ``""`` if not known.
    unlabelled_file, unlabelled_subset, unlabelled_feature_dir: the unlabelled videos (their
        annotations are ignored); unlabelled_gt_file: their ground truth, for analysis only
        (``""``: none). The synthetic world's are its web videos.
    world_dir, world: the synthetic world's directory and config (``""`` / None otherwise).
    crop_ratio, trunc_thresh: the training crops (:mod:`stovtal.data.crop`).
    """

    annotation_file: str
    feature_dir: str
    grid: FeatureGrid
    feat_dim: int | None
    base: list[str]
    novel: list[str]
    train_subset: str
    val_subset: str
    test_subset: str
    max_seq_len: int
    vocab_npz: str = ""
    vocabulary: list[str] = field(default_factory=list)
    unlabelled_file: str = ""
    unlabelled_subset: str | None = None
    unlabelled_feature_dir: str = ""
    unlabelled_gt_file: str = ""
    world_dir: str = ""
    world: SyntheticConfig | None = None
    crop_ratio: tuple[float, float] | None = None
    trunc_thresh: float = 0.5

    @property
    def classes(self) -> list[str]:
        """Base + novel classes (the run's open vocabulary)."""
        return self.base + self.novel


def vocabulary_names(spec: str) -> list[str]:
    """Class names of a text file (one per line) or of a shipped vocabulary (e.g. ``thumos14``)."""
    if os.path.isfile(spec):
        with open(spec, encoding="utf-8") as f:
            names = [ln.strip() for ln in f if ln.strip()]
        if not names:
            raise ValueError(f"{spec}: no class names")
        return names
    from .vocab import load_vocabulary

    return load_vocabulary(spec)


def resolve_data(cfg: DataConfig, *, world_dir: str | Callable[[SyntheticConfig], str] = "runs/synthetic_world",
                 world_defaults: Mapping[str, Any] | None = None, min_web: int = 0, split: bool = True,
                 progress: bool = False) -> DataSpec:
    """The spec of ``cfg``'s data.

    Synthetic world: written into ``cfg.world_dir``, else ``world_dir`` (a path, or a function
    of the world's config), with ``cfg.world`` overriding ``world_defaults`` (the app's) over
    :class:`stovtal.data.synthetic.SyntheticConfig`'s, and at least ``min_web`` web videos. The user's files: ``cfg.annotations`` and ``cfg.feature_dir`` must
    exist; with ``split`` the classes are ``cfg.base_classes`` / ``novel_classes`` or the shipped
    ``cfg.split`` of ``cfg.vocabulary``; without (FEEL), ``base`` and ``novel`` stay empty and
    the vocabulary is ``cfg.vocabulary`` (a shipped name or a text file, one name per line).
    """
    if cfg.is_synthetic:
        return _synthetic(cfg, world_dir, dict(world_defaults or {}), min_web, progress)
    if not cfg.annotations:
        raise ValueError("data.annotations is required (or set data.synthetic=true)")
    if not os.path.isfile(cfg.annotations):
        raise FileNotFoundError(f"{cfg.annotations}: annotation file not found (data.annotations)")
    if not cfg.feature_dir or not os.path.isdir(cfg.feature_dir):
        raise FileNotFoundError(f"{cfg.feature_dir}: feature directory not found (data.feature_dir)")
    base, novel = _split(cfg) if split else ([], [])
    return DataSpec(
        annotation_file=cfg.annotations,
        feature_dir=cfg.feature_dir,
        grid=FeatureGrid(float(cfg.fps), int(cfg.feature_stride), int(cfg.num_frames)),
        feat_dim=None if cfg.feat_dim is None else int(cfg.feat_dim),
        base=base,
        novel=novel,
        train_subset=cfg.train_subset,
        val_subset=cfg.val_subset,
        test_subset=cfg.test_subset,
        max_seq_len=cfg.max_seq_len,
        vocab_npz=cfg.vocab or "",
        vocabulary=base + novel if split else vocabulary_names(cfg.vocabulary),
        unlabelled_file=cfg.unlabelled or "",
        unlabelled_subset=cfg.unlabelled_subset,
        unlabelled_feature_dir=cfg.unlabelled_feature_dir or cfg.feature_dir,
        unlabelled_gt_file=cfg.unlabelled_gt or "",
        **crop_settings(cfg),
    )


def _split(cfg: DataConfig) -> tuple[list[str], list[str]]:
    """(base, novel): the configured lists, or the shipped split of the vocabulary."""
    if cfg.base_classes:
        base, novel = list(cfg.base_classes), list(cfg.novel_classes)
    else:
        from .splits import class_split

        s = class_split(cfg.vocabulary, cfg.split, cfg.split_seed)
        base, novel = list(s.base), list(s.novel)
    overlap = set(base) & set(novel)
    if overlap:
        raise ValueError(f"classes both base and novel: {sorted(overlap)}")
    return base, novel


def _synthetic(cfg: DataConfig, world_dir: str | Callable[[SyntheticConfig], str], defaults: dict[str, Any],
               min_web: int, progress: bool) -> DataSpec:
    from .synthetic import SyntheticConfig, ensure_world

    try:
        wcfg = SyntheticConfig.from_dict({**defaults, **cfg.world})
    except (TypeError, ValueError) as exc:
        raise ValueError(f"data.world: {exc}") from None
    if min_web > wcfg.num_web:
        wcfg = SyntheticConfig.from_dict({**wcfg.to_dict(), "num_web": min_web})
    root = os.fspath(cfg.world_dir or (world_dir(wcfg) if callable(world_dir) else world_dir))
    meta = ensure_world(root, wcfg, progress=progress)
    files = meta["files"]
    features = os.path.join(root, files["features"])
    return DataSpec(
        annotation_file=os.path.join(root, files["annotations"]),
        feature_dir=features,
        grid=FeatureGrid(float(meta["fps"]), int(meta["feature_stride"]), int(meta["num_frames"])),
        feat_dim=int(meta["feat_dim"]),
        base=list(meta["base"]),
        novel=list(meta["novel"]),
        train_subset="train",
        val_subset="",
        test_subset="test",
        max_seq_len=cfg.max_seq_len,
        vocab_npz=os.path.join(root, files["vocab"]),
        vocabulary=list(meta["classes"]),
        unlabelled_file=os.path.join(root, files["web"]),
        unlabelled_subset=None,
        unlabelled_feature_dir=features,
        unlabelled_gt_file=os.path.join(root, files["web_gt"]),
        world_dir=root,
        world=wcfg,
        **crop_settings(cfg),
    )
