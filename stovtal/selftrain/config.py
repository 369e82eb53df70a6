"""Typed configuration of ``python -m stovtal.selftrain`` (omegaconf + dataclasses).

A config is built from the defaults below, then an optional YAML file (``--config``), then
``key=value`` dotlist overrides, and is validated (:func:`validate`) before any work starts:
a negative threshold or a missing feature directory is reported at once, naming the key.

Model and optimisation sections (``model``, ``train``, ``retrain.train``) are free-form dicts
of overrides of ``stovtal.models.LocalizerConfig`` and ``stovtal.engine.TrainConfig``; they
are checked by building those dataclasses.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "PseudoLabelConfig",
    "RetrainConfig",
    "SelfTrainConfig",
    "fingerprint",
    "load_config",
    "to_yaml",
    "validate",
]

THRESHOLD_MODES = ("fixed", "per_video", "quantile")
STUDENT_INITS = ("scratch", "base")
TEACHER_INITS = ("raw", "ema")
# the retraining schedule has its own keys (RetrainConfig); these may not hide in retrain.train
RETRAIN_SCHEDULE_KEYS = {"lr": "retrain.lr_scale", "epochs": "retrain.epochs",
                         "warmup_epochs": "retrain.warmup_epochs"}


class ConfigError(ValueError):
    """An invalid configuration value; the message names the key."""


@dataclass
class DataConfig:
    """Where the data is.

    With ``synthetic: true`` (the default) the built-in synthetic world is generated into
    ``<workdir>/world`` (or reused) and every path below is filled in from it; ``world`` holds
    overrides of ``stovtal.data.synthetic.SyntheticConfig``. Otherwise the paths are required.

    Attributes:
        feature_dir: ``<vid>.npy`` features (float32 ``[T, D]``) of the labelled and test videos.
        unlabelled_feature_dir: features of the unlabelled videos (default: ``feature_dir``).
        annotations: annotation JSON with the labelled (``train_subset``) and test
            (``test_subset``) videos.
        unlabelled: annotation JSON listing the unlabelled videos (their annotations are ignored).
        unlabelled_gt: optional ground truth of the unlabelled videos, read only by the report
            (pseudo-label quality); never by the method.
        vocab: ``.npz`` with ``names`` and ``embeddings`` (the frozen text encoder's output, in
            the video-language feature space).
        base_classes, novel_classes: the class split (names in ``vocab``).
        fps, feature_stride, num_frames: the snippet grid; feat_dim: D.
        logit_scale: the text encoder's logit scale (CLIP: 100).
    """

    synthetic: bool = True
    world: dict[str, Any] = field(default_factory=dict)
    feature_dir: str | None = None
    unlabelled_feature_dir: str | None = None
    annotations: str | None = None
    train_subset: str = "train"
    test_subset: str = "test"
    unlabelled: str | None = None
    unlabelled_subset: str | None = None
    unlabelled_gt: str | None = None
    vocab: str | None = None
    base_classes: list[str] = field(default_factory=list)
    novel_classes: list[str] = field(default_factory=list)
    fps: float = 30.0
    feature_stride: int = 4
    num_frames: int = 16
    feat_dim: int = 512
    logit_scale: float = 100.0
    max_seq_len: int = 2304


@dataclass
class PseudoLabelConfig:
    """Pseudo-labelling of the unlabelled videos with the base model's EMA weights.

    Attributes:
        num_videos: how many unlabelled videos to use (null: all). Subsets are drawn by a seeded
            hash rank of the video ids, so they are nested (the 1k subset is inside the 3k one)
            and stable when more videos are added to the pool.
        subset_seed: seed of that draw.
        threshold_mode: ``fixed`` (actionness >= ``threshold``), ``per_video`` (actionness >=
            ``per_video_ratio`` x the video's best actionness, and >= ``threshold``) or
            ``quantile`` (one threshold for the whole set: the ``quantile``-quantile of all
            candidates' actionness, and >= ``threshold``).
        threshold: the fixed threshold (the authors: 0.05 on THUMOS-like data, 0.3-0.5 else);
            the floor of the adaptive modes.
        min_num: keep at least this many segments per video (the best ones), whatever the
            threshold; max_num: at most this many (<= 0: no limit).
        dedup: remove segments overlapping a better one by tIoU > ``dedup_iou`` (hard NMS).
        candidate_floor: candidates below this actionness are not stored in the shards (they
            can never be selected unless needed for ``min_num``; keep it at or below
            ``threshold``); max_candidates: at most this many stored per video.
        shard_size: videos per shard (the unit of work that a kill can lose).
        batch_size, num_workers: the inference data loader.
    """

    num_videos: int | None = None
    subset_seed: int = 0
    threshold_mode: str = "fixed"
    threshold: float = 0.05
    per_video_ratio: float = 0.5
    quantile: float = 0.5
    min_num: int = 1
    max_num: int = 0
    dedup: bool = False
    dedup_iou: float = 0.5
    candidate_floor: float = 0.001
    max_candidates: int = 100
    shard_size: int = 64
    batch_size: int = 8
    num_workers: int = 0


@dataclass
class RetrainConfig:
    """Mean Teacher retraining on labelled (class-agnostic) + pseudo-labelled videos.

    The schedule is the authors' (HYUNJS/STOV-TAL ``configs/joint/TH_vifi_prop_*_UKR*-PL.yaml``):
    learning rate = the base run's ``train.lr`` x ``lr_scale`` (1e-5 against 1e-4), a linear
    warm-up of ``warmup_epochs`` epochs, then ``epochs`` epochs of cosine decay (ActionFormer
    counts them apart: 2 + 2). An epoch is one pass over the plain union of labelled and
    pseudo-labelled videos (with ``labelled_fraction``, an epoch of that length), so at a fixed
    number of epochs the step count grows linearly with the number of unlabelled videos, while
    the learning rate does not change: the authors keep 2 + 2 epochs at 5k and 10k unlabelled
    videos and use 2 + 4 at 100k (with the pseudo-label threshold lowered from 0.10 to 0.05). With
    few unlabelled videos beside many labelled ones, raise ``epochs`` so that the retraining
    still takes a few thousand steps.

    Attributes:
        train: other overrides of ``TrainConfig`` for the student (defaults: the ``train``
            section); the schedule keys ``lr``, ``epochs``, ``warmup_epochs`` are set by
            ``lr_scale``, ``epochs``, ``warmup_epochs`` below.
        lr_scale: retraining learning rate / base learning rate (the authors: 0.1).
        warmup_epochs: linear warm-up epochs (the authors: 2).
        epochs: epochs after the warm-up (the authors: 2; 4 at 100k unlabelled videos).
        teacher_decay: EMA decay of the teacher.
        teacher_init: the teacher starts from the base model's ``raw`` weights (the authors'
            choice) or from its ``ema`` weights.
        student_init: ``scratch`` (the authors' choice) or ``base``.
        consistency_weight: weight of the teacher-student consistency loss (MSE between the
            sigmoid actionness of student and teacher on the unlabelled videos of a batch); 0: off.
        refresh_every: re-pseudo-label the unlabelled videos with the teacher every R epochs
            (online self-training); 0: never.
        labelled_fraction: in (0, 1): every retraining epoch (the plain union's length) has
            this share of labelled videos, repeated as needed, and pseudo-labelled ones
            subsampled (``stovtal.selftrain.teacher.FixedShareEpochs``); 0: the plain union,
            each video once per epoch (the authors' choice), whose labelled share falls as
            unlabelled videos are added. Default 0.5 (equal shares, fixed before measuring): on
            the default synthetic run (seeds 0-2) CB +0.8 over the base model where the union
            lost 1.2 on average, CN +7.8 against +7.1.
    """

    train: dict[str, Any] = field(default_factory=dict)
    lr_scale: float = 0.1
    warmup_epochs: int = 2
    epochs: int = 2
    teacher_decay: float = 0.999
    teacher_init: str = "raw"
    student_init: str = "scratch"
    consistency_weight: float = 0.0
    refresh_every: int = 0
    labelled_fraction: float = 0.5


@dataclass
class EvalConfig:
    """tIoU thresholds of the mAP (THUMOS-like default 0.3:0.7) and the classifier options
    (overrides of ``stovtal.models.ClassifierConfig``)."""

    tiou_thresholds: list[float] = field(default_factory=lambda: [0.3, 0.4, 0.5, 0.6, 0.7])
    classifier: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 8


def _default_model() -> dict[str, Any]:
    # sized so that the default pipeline runs in minutes on 2 CPU cores: ActionFormer's
    # architecture (LocalizerConfig), narrower, with a shorter attention window, and batches
    # padded to the largest stride instead of max_seq_len (the synthetic videos are 100-300
    # snippets); the full-size localizer is LocalizerConfig's default (model.embed_dim=512 ...)
    return {"embed_dim": 64, "head_dim": 64, "num_heads": 4, "window": 9, "pad_to_max_seq_len": False}


def _default_train() -> dict[str, Any]:
    # the recipe of the shipped synthetic base config (stovtal/configs/synthetic.yaml); the EMA
    # warm-up matters: without it a 0.999-decay EMA of ~600 steps is still half random init
    return {"epochs": 12, "batch_size": 4, "warmup_epochs": 2.0, "lr": 5e-4, "ema_warmup": True}


@dataclass
class SelfTrainConfig:
    """The whole pipeline.

    ``seed`` seeds training (base and retraining); ``num_threads`` sets ``torch.set_num_threads``
    (0: torch's default, one per core; idle OpenMP workers sleep, see ``stovtal/__init__.py``,
    so this also holds up on a CPU shared with other jobs). ``model`` and
    ``train`` are overrides of ``LocalizerConfig`` / ``TrainConfig``; their defaults here are
    small, for the synthetic world on a 2-core CPU.
    """

    seed: int = 0
    device: str = "auto"
    progress: bool = True
    num_threads: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: dict[str, Any] = field(default_factory=_default_model)
    train: dict[str, Any] = field(default_factory=_default_train)
    pseudo: PseudoLabelConfig = field(default_factory=PseudoLabelConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    scale: list[int] = field(default_factory=list)


# --------------------------------------------------------------------------- load


def load_config(path: str | None = None, overrides: list[str] | None = None) -> SelfTrainConfig:
    """Defaults <- YAML ``path`` <- dotlist ``overrides``; returns a validated-typed config
    (call :func:`validate` for the value checks that need the data paths)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    base = OmegaConf.structured(SelfTrainConfig)
    try:
        if path is not None:
            if not os.path.isfile(path):
                raise ConfigError(f"{path}: config file not found")
            base = OmegaConf.merge(base, OmegaConf.load(path))
        if overrides:
            bad = [o for o in overrides if "=" not in o]
            if bad:
                raise ConfigError(f"overrides must be key=value, got {bad}")
            base = OmegaConf.merge(base, OmegaConf.from_dotlist(list(overrides)))
    except OmegaConfBaseException as exc:
        where = f" in {path}" if path else ""
        raise ConfigError(f"invalid configuration{where}: {exc}".strip()) from None
    obj = OmegaConf.to_object(base)
    assert isinstance(obj, SelfTrainConfig)
    return obj


def to_dict(cfg: SelfTrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def to_yaml(cfg: SelfTrainConfig) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def fingerprint(obj: Any) -> str:
    """Stable short hash of a JSON-able object (to tell whether a stage's inputs changed)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- validation


def _need(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {msg}")


def _prob(x: float, key: str, lo_open: bool = False) -> None:
    ok = (0.0 < x <= 1.0) if lo_open else (0.0 <= x <= 1.0)
    _need(ok, key, f"must be in {'(0' if lo_open else '[0'}, 1], got {x}")


def validate(cfg: SelfTrainConfig, check_paths: bool = True) -> None:
    """Check every value (and, with ``check_paths``, that the data files exist).

    Raises :class:`ConfigError` naming the key. Model/train sections are checked by building
    their dataclasses (which raise ``ValueError`` with the key)."""
    from stovtal.utils.finite import check_finite

    check_finite(cfg, ConfigError)
    _need(cfg.num_threads >= 0, "num_threads", f"must be >= 0, got {cfg.num_threads}")
    p = cfg.pseudo
    _need(p.threshold_mode in THRESHOLD_MODES, "pseudo.threshold_mode",
          f"must be one of {THRESHOLD_MODES}, got {p.threshold_mode!r}")
    _need(p.threshold >= 0, "pseudo.threshold", f"must be >= 0 (an actionness), got {p.threshold}")
    _need(p.threshold <= 1, "pseudo.threshold", f"must be <= 1 (an actionness), got {p.threshold}")
    _prob(p.per_video_ratio, "pseudo.per_video_ratio")
    _prob(p.quantile, "pseudo.quantile")
    _prob(p.candidate_floor, "pseudo.candidate_floor")
    _need(p.candidate_floor <= p.threshold or p.threshold_mode != "fixed", "pseudo.candidate_floor",
          f"({p.candidate_floor}) must not exceed pseudo.threshold ({p.threshold})")
    _prob(p.dedup_iou, "pseudo.dedup_iou")
    _need(p.min_num >= 0, "pseudo.min_num", f"must be >= 0, got {p.min_num}")
    _need(p.max_num <= 0 or p.max_num >= p.min_num, "pseudo.max_num",
          f"({p.max_num}) must be >= pseudo.min_num ({p.min_num}) or <= 0 (no limit)")
    _need(p.max_candidates >= max(1, p.min_num), "pseudo.max_candidates",
          f"must be >= max(1, min_num), got {p.max_candidates}")
    _need(p.num_videos is None or p.num_videos >= 1, "pseudo.num_videos", f"must be >= 1, got {p.num_videos}")
    for key in ("shard_size", "batch_size"):
        _need(getattr(p, key) >= 1, f"pseudo.{key}", f"must be >= 1, got {getattr(p, key)}")
    _need(p.num_workers >= 0, "pseudo.num_workers", f"must be >= 0, got {p.num_workers}")
    r = cfg.retrain
    _need(0.0 <= r.teacher_decay < 1.0, "retrain.teacher_decay", f"must be in [0, 1), got {r.teacher_decay}")
    _need(r.student_init in STUDENT_INITS, "retrain.student_init",
          f"must be one of {STUDENT_INITS}, got {r.student_init!r}")
    _need(r.teacher_init in TEACHER_INITS, "retrain.teacher_init",
          f"must be one of {TEACHER_INITS}, got {r.teacher_init!r}")
    _need(r.lr_scale > 0, "retrain.lr_scale", f"must be > 0, got {r.lr_scale}")
    _need(r.warmup_epochs >= 0, "retrain.warmup_epochs", f"must be >= 0, got {r.warmup_epochs}")
    _need(r.epochs >= 1, "retrain.epochs", f"must be >= 1, got {r.epochs}")
    for key, instead in RETRAIN_SCHEDULE_KEYS.items():
        _need(key not in r.train, f"retrain.train.{key}", f"is set by {instead}")
    _need(r.consistency_weight >= 0, "retrain.consistency_weight", f"must be >= 0, got {r.consistency_weight}")
    _need(r.refresh_every >= 0, "retrain.refresh_every", f"must be >= 0, got {r.refresh_every}")
    _need(0.0 <= r.labelled_fraction < 1.0, "retrain.labelled_fraction",
          f"must be in [0, 1), got {r.labelled_fraction}")
    e = cfg.eval
    _need(len(e.tiou_thresholds) > 0, "eval.tiou_thresholds", "must not be empty")
    for t in e.tiou_thresholds:
        _prob(t, "eval.tiou_thresholds", lo_open=True)
    _need(e.batch_size >= 1, "eval.batch_size", f"must be >= 1, got {e.batch_size}")
    for n in cfg.scale:
        _need(n >= 1, "scale", f"numbers of unlabelled videos must be >= 1, got {list(cfg.scale)}")
    _need(len(set(cfg.scale)) == len(cfg.scale), "scale", f"duplicate values in {list(cfg.scale)}")
    d = cfg.data
    _need(d.fps > 0, "data.fps", f"must be > 0, got {d.fps}")
    for key in ("feature_stride", "num_frames", "feat_dim", "max_seq_len"):
        _need(getattr(d, key) >= 1, f"data.{key}", f"must be >= 1, got {getattr(d, key)}")
    _need(d.logit_scale > 0, "data.logit_scale", f"must be > 0, got {d.logit_scale}")
    _check_sections(cfg)
    if d.synthetic:
        _check_world(d.world, cfg.scale)
    elif check_paths:
        check_data_paths(d)


def _check_sections(cfg: SelfTrainConfig) -> None:
    """Build the model/train/classifier dataclasses once so that bad values fail now."""
    from stovtal.engine import TrainConfig
    from stovtal.models import ClassifierConfig, LocalizerConfig

    for key, cls, value in (
        ("model", LocalizerConfig, {"input_dim": cfg.data.feat_dim, **cfg.model}),
        ("train", TrainConfig, cfg.train),
        ("retrain.train", TrainConfig, retrain_train_overrides(cfg)),
        ("eval.classifier", ClassifierConfig, cfg.eval.classifier),
    ):
        try:
            cls(**value)
        except TypeError as exc:
            raise ConfigError(f"{key}: {exc}") from None
        except ValueError as exc:
            raise ConfigError(f"{key}: {exc}") from None


def retrain_train_overrides(cfg: SelfTrainConfig) -> dict[str, Any]:
    """``TrainConfig`` overrides of the retraining: the ``train`` section, ``retrain.train``,
    and the schedule of the retrain section (lr = base lr x ``lr_scale``; ``warmup_epochs`` +
    ``epochs`` epochs in all)."""
    from stovtal.engine import TrainConfig

    r = cfg.retrain
    base_lr = float(cfg.train.get("lr", TrainConfig.lr))
    return {**cfg.train, **r.train, "lr": base_lr * r.lr_scale,
            "warmup_epochs": float(r.warmup_epochs), "epochs": r.warmup_epochs + r.epochs}


def _check_world(world: dict[str, Any], scale: list[int]) -> None:
    from stovtal.data.synthetic import SyntheticConfig

    try:
        SyntheticConfig.from_dict(dict(world))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"data.world: {exc}") from None


def check_data_paths(d: DataConfig) -> None:
    """The user's own data: every path must be given and exist (errors name key and path)."""
    for key in ("feature_dir", "annotations", "unlabelled", "vocab"):
        _need(getattr(d, key) not in (None, ""), f"data.{key}", "is required when data.synthetic is false")
    for key in ("feature_dir", "unlabelled_feature_dir"):
        path = getattr(d, key)
        if path:
            _need(os.path.isdir(path), f"data.{key}", f"feature directory {path!r} does not exist")
    for key in ("annotations", "unlabelled", "unlabelled_gt", "vocab"):
        path = getattr(d, key)
        if path:
            _need(os.path.isfile(path), f"data.{key}", f"file {path!r} does not exist")
    _need(len(d.base_classes) > 0, "data.base_classes", "must list the base classes")
    _need(len(d.novel_classes) > 0, "data.novel_classes", "must list the novel classes")
    clash = sorted(set(d.base_classes) & set(d.novel_classes))
    _need(not clash, "data.novel_classes", f"classes both base and novel: {clash[:5]}")
