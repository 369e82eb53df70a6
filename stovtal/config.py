"""Every run configuration of stovtal: one module of dataclasses, read with omegaconf.

The three applications compose the same component configs by type:

==================  =====================================================================
section             type (this module, or the model's own config dataclass)
==================  =====================================================================
``data``            :class:`DataConfig` (one for all apps; defaults differ per app)
``train``           :class:`TrainConfig` (``feel`` reads epochs, batch_size, lr,
                    weight_decay, clip_grad)
``eval``            :class:`EvalConfig` (tIoU thresholds, inference batch size)
``classifier``      ``stovtal.models.ClassifierConfig`` (``train``, ``selftrain``)
``model``           ``stovtal.models.LocalizerConfig`` (``train``, ``selftrain``) or
                    ``stovtal.models.cola.CoLAConfig`` (``feel``)
``text``            :class:`TextConfig` (``train``, ``infer``)
``adapter``         :class:`AdapterTrainConfig` (``train`` with ``classifier.adapter=true``)
``base``            :class:`BaseModelConfig` (``selftrain``: train the base model or read it)
``pseudo``,         :class:`PseudoLabelConfig`, :class:`RetrainConfig` (``selftrain``)
``retrain``
``cluster``,        :class:`ClusterConfig`, :class:`IISConfig`,
``iis``,            ``stovtal.models.cola_inference.LocalizeConfig``,
``localize``,       :class:`NamingConfig` (``feel``)
``naming``
==================  =====================================================================

:class:`Config` (``python -m stovtal.train`` / ``infer``), :class:`SelfTrainConfig` and
:class:`FeelConfig` are the whole runs. :func:`load` merges, in order, the dataclass defaults,
a YAML file and ``key=value`` dotlist overrides; unknown keys and wrongly typed values are
errors. Keys of earlier versions (e.g. ``data.annotation_file``, ``train.grad_clip``, FEEL's
``data.synthetic.num_web``) are mapped to the current ones with a ``FutureWarning`` naming both.
:func:`validate` checks the values of a whole config, naming the dotted key of the first bad
one; its per-field rules live in :data:`FIELD_RULES`.

This module imports no engine, data or app code (only the models' config dataclasses and
``stovtal.utils.finite``). Every number must be finite (NaN / inf refused, naming the key).
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from stovtal.models.classifier import ClassifierConfig
from stovtal.models.cola import CoLAConfig
from stovtal.models.cola_inference import LocalizeConfig
from stovtal.models.localizer import LocalizerConfig
from stovtal.utils.finite import check_finite
from stovtal.utils.resume import fingerprint
from stovtal.utils.threads import check_setting as check_thread_setting

__all__ = [
    "FIELD_RULES",
    "AdapterTrainConfig",
    "BaseModelConfig",
    "ClusterConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "FeelConfig",
    "IISConfig",
    "NamingConfig",
    "PseudoLabelConfig",
    "RetrainConfig",
    "SelfTrainConfig",
    "TextConfig",
    "TrainConfig",
    "config_path",
    "retrain_train_overrides",
    "fingerprint",
    "load",
    "load_config",
    "to_dict",
    "to_yaml",
    "validate",
]

T = TypeVar("T")


class ConfigError(ValueError):
    """An invalid configuration value; the message names the dotted key."""


# --------------------------------------------------------------------------- components


@dataclass
class DataConfig:
    """Where the features and annotations are, the feature grid and the class split.

    ``synthetic``: use the built-in world (``stovtal.data.synthetic``), generated into
    ``world_dir`` (empty: ``<workdir>/world``) or reused, with ``world`` overriding
    ``SyntheticConfig`` fields; grid, classes, subsets and vocabulary then come from the world.
    ``None`` (FEEL's default): synthetic when ``annotations`` is empty.

    Otherwise the user's files:
        annotations: ActivityNet-style JSON (seconds) with the ``train_subset``,
            ``val_subset`` (optional) and ``test_subset`` videos.
        feature_dir: ``<video_id>.npy`` float32 ``[T, D]`` features.
        unlabelled, unlabelled_subset, unlabelled_feature_dir, unlabelled_gt (``selftrain``):
            the unlabelled videos' annotation JSON (annotations ignored), an optional subset of
            it, their features (default ``feature_dir``) and optional ground truth read only by
            the report.
        vocab (``selftrain``): ``.npz`` of ``names`` + ``embeddings`` (the frozen text encoder's
            output); logit_scale: the text encoder's logit scale (CLIP: 100).
        fps, feature_stride, num_frames: the snippet grid; feat_dim: D (``None``: from the
            files); max_seq_len: training crops, in snippets.
        crop_ratio, trunc_thresh: ActionFormer's training crops (``stovtal.data.crop``): with
            ``crop_ratio = [lo, hi]`` (``0 < lo <= hi <= 1``) videos of at most ``max_seq_len``
            snippets are also cropped, to a random ``lo..hi`` of their length (``null``: left
            whole); a segment cut by a crop is kept if at least ``trunc_thresh`` (in ``(0, 1]``)
            of it lies in the window. Localizer training only (``train``, ``selftrain``).
        classes: explicit ``base_classes``/``novel_classes``, or a shipped ``vocabulary`` (e.g.
            ``thumos14``; FEEL also takes a text file with one name per line) with a ``split``
            (``kinetics``, ``random75``, ``random50``) and ``split_seed``.
    """

    synthetic: bool | None = False
    world_dir: str = ""
    world: dict[str, Any] = field(default_factory=dict)
    annotations: str | None = None
    feature_dir: str | None = None
    unlabelled: str | None = None
    unlabelled_subset: str | None = None
    unlabelled_feature_dir: str | None = None
    unlabelled_gt: str | None = None
    vocab: str | None = None
    logit_scale: float = 100.0
    fps: float = 30.0
    feature_stride: int = 4
    num_frames: int = 16
    feat_dim: int | None = 512
    max_seq_len: int = 2304
    crop_ratio: list[float] | None = None
    trunc_thresh: float = 0.5
    train_subset: str = "training"
    val_subset: str = ""
    test_subset: str = "testing"
    vocabulary: str = ""
    split: str = "kinetics"
    split_seed: int = 0
    base_classes: list[str] = field(default_factory=list)
    novel_classes: list[str] = field(default_factory=list)

    @property
    def is_synthetic(self) -> bool:
        return bool(self.synthetic) if self.synthetic is not None else not self.annotations


@dataclass
class TrainConfig:
    """Optimisation settings (defaults: the authors' ActionFormer recipe, THUMOS14).

    AdamW (``lr``, ``weight_decay``), linear warm-up over ``warmup_epochs`` then cosine decay
    to ``min_lr_ratio * lr``, gradient clipping at norm ``clip_grad`` (0: off), an EMA of the
    weights (``ema_decay``; ``ema_warmup``: decay ramped up over the first steps), AMP on CUDA.

    ``optimizer`` (``adamw`` | ``adam``: L2 in the gradient, CoLA's), ``schedule`` (``cosine`` |
    ``constant``, CoLA's) and ``iterations`` (> 0: that many steps instead of ``epochs``) are
    FEEL's CoLA recipe; ``train`` and ``selftrain`` keep the localizer's (their defaults).
    """

    epochs: int = 35
    batch_size: int = 2
    lr: float = 1e-4
    weight_decay: float = 0.05
    warmup_epochs: float = 5.0
    min_lr_ratio: float = 0.0
    clip_grad: float = 1.0
    ema_decay: float = 0.999
    ema_warmup: bool = False
    seed: int = 0
    num_workers: int = 0
    eval_every: int = 0
    amp: bool = True
    device: str = "auto"
    log_every: int = 20
    progress: bool = True
    optimizer: str = "adamw"
    schedule: str = "cosine"
    iterations: int = 0

    def __post_init__(self) -> None:
        check_fields(self, "train")


@dataclass
class AdapterTrainConfig:
    """Optimisation of the classifier adapter (used only with ``classifier.adapter=true``).

    AdamW with a cosine learning-rate decay over ``epochs`` passes over the pooled ground-truth
    segments of the labelled base-class videos, in shuffled mini-batches of ``batch_size``
    segments; ``seed`` fixes the adapter's initialisation and the shuffling (the global RNG is
    left as it was, so the localizer's training does not depend on whether an adapter is trained).
    """

    epochs: int = 50
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.01
    seed: int = 0

    def __post_init__(self) -> None:
        check_fields(self, "adapter")


@dataclass
class TextConfig:
    """Frozen text encoder of the open-vocabulary classifier.

    ``kind``: ``"npz"`` (precomputed embeddings, ``npz`` path; for the synthetic world its
    ``vocab.npz`` is used when ``npz`` is empty) or ``"open_clip"`` (``model`` name + local
    ``checkpoint`` path, never downloaded; prompt ``templates``: None = the class name itself,
    or a template set name / list).
    """

    kind: str = "npz"
    npz: str = ""
    model: str = "ViT-B-16"
    checkpoint: str = ""
    templates: Any = None
    logit_scale: float | None = None

    def __post_init__(self) -> None:
        check_fields(self, "text")


@dataclass
class EvalConfig:
    """Evaluation: the tIoU thresholds of the mAP and the inference batch size."""

    tiou_thresholds: list[float] = field(default_factory=lambda: [0.3, 0.4, 0.5, 0.6, 0.7])
    batch_size: int = 8


@dataclass
class BaseModelConfig:
    """The base model of ``python -m stovtal.selftrain``: trained, or read from a file.

    ``checkpoint``: empty (default): the ``base`` stage trains the class-agnostic localizer on
    the labelled base-class videos. Else a stovtal model file of a class-agnostic localizer
    (``head_num_classes`` 1) whose ``input_dim`` is the features' dimension, e.g. an
    ActionFormer / STOV-TAL checkpoint converted with ``python -m stovtal.convert actionformer
    CKPT --out model.pt``, or another run's ``base/model.pt``: the ``base`` stage copies its
    weights to the work directory's ``base/model.pt`` instead of training (its ``stage.json``
    records the file's path and SHA-256, which enters the fingerprints of every later stage).
    The run's ``model`` section is then the file's model config, with the ``model.*`` keys the
    run sets (those differing from selftrain's defaults, e.g. decoding or dropout settings) on
    top; keys that change the weights' shapes are errors. The file holds one set of weights, so
    the retraining's teacher starts from them whatever ``retrain.teacher_init`` says.
    """

    checkpoint: str = ""


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
        threshold_by_n: ``{N: threshold}``: the threshold of a run on N unlabelled videos is the
            value of the largest key <= N (``threshold`` below the smallest key; empty: always
            ``threshold``). The authors set it per scale (HYUNJS/STOV-TAL
            ``configs/joint/TH_vifi_prop_*_UKR*-PL.yaml``): 0.05 at 5k, 0.10 at 10k, 0.05 at
            100k unlabelled videos, i.e. ``pseudo.threshold_by_n={10000: 0.10, 100000: 0.05}``
            with ``pseudo.threshold=0.05``.
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
    threshold_by_n: dict[int, float] = field(default_factory=dict)
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

    def threshold_for(self, n: int) -> float:
        """The threshold of a run on ``n`` unlabelled videos (see ``threshold_by_n``)."""
        keys = [k for k in self.threshold_by_n if k <= n]
        return float(self.threshold_by_n[max(keys)]) if keys else float(self.threshold)

    def for_n(self, n: int) -> PseudoLabelConfig:
        """This section with ``threshold`` set for a run on ``n`` unlabelled videos."""
        return dataclasses.replace(self, threshold=self.threshold_for(n))


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
            choice: STOV-TAL's ``train.py`` loads the base checkpoint's ``state_dict`` into the
            EMA model unless ``load_ema_as_all_flag``, ``False`` by default) or from its ``ema``
            weights.
        student_init: ``base`` (the student starts from the base model's raw weights) or
            ``scratch`` (the authors' choice: a fresh initialisation). Default ``base``, chosen on
            a held-out synthetic world (``data.world.seed=7``, training seed 0, 1k unlabelled
            videos, 1 thread): base model CB / CN / GZSL avg mAP 79.65 / 36.44 / 58.42;
            self-trained from ``scratch`` 54.83 / 35.43 / 43.43 (at this schedule, ~1200 steps at
            a peak lr of 5e-5, a fresh student does not relearn the labelled classes), from
            ``base`` 79.51 / 40.21 / 60.05 (CB within 1 point of the base model, GZSL +1.6).
        consistency_weight: weight of the teacher-student consistency loss (MSE between the
            sigmoid actionness of student and teacher on the unlabelled videos of a batch); 0: off.
        refresh_every: re-pseudo-label the unlabelled videos with the teacher every R epochs
            (online self-training); 0: never.
        rounds: self-training rounds (>= 1). Round r > 1 pseudo-labels the same unlabelled
            videos again with round r-1's self-trained teacher (same ``pseudo`` settings) and
            retrains with them, from the same initialisation and schedule as round 1 (the
            authors' ``*-PL-ST2.yaml`` configs: labels from the first self-trained model, the
            teacher initialised from the base model again). Every round is a resumable stage of
            its own and is evaluated and reported.
        labelled_fraction: in (0, 1): every retraining epoch (the plain union's length) has
            this share of labelled videos, repeated as needed, and pseudo-labelled ones
            subsampled (``stovtal.selftrain.teacher.FixedShareEpochs``); 0: the plain union,
            each video once per epoch (the authors' choice), whose labelled share falls as
            unlabelled videos are added. Default 0.5 (equal shares, fixed before measuring): on
            the default synthetic run (seeds 0-2) CB +0.8 over the base model where the union
            lost 1.2 on average, CN +7.8 against +7.1.
        epoch_length: videos per retraining epoch. 0: the plain union's length (labelled +
            pseudo-labelled videos, the authors' epochs), so the step count grows with the
            number of unlabelled videos. > 0 (at least 2): every epoch draws this many videos
            (the labelled share as ``labelled_fraction`` sets it, or the union's natural share
            when that is 0; each source in whole shuffled passes, :class:`FixedShareEpochs`), so
            ``warmup_epochs + epochs`` epochs take the same number of steps whatever the number
            of unlabelled videos, and a larger pool brings more distinct videos rather than more
            steps. Default 0, the authors' epochs; on the default synthetic run (200 labelled +
            1000 unlabelled videos) 1200 gives the same draws. For a curve over the number of
            unlabelled videos, set it to the union's length at the smallest one. Measured on a
            held-out synthetic world (``data.world.seed=7``, training seed 0, the smaller
            localizer of the README's scale study, pseudo-label threshold 0.05, 0.10 at 10k),
            teacher CB / CN at 1k / 3k / 10k unlabelled videos: with 0 (1200 / 3200 / 10200
            steps) 74.37 / 40.84, 72.88 / 39.07, 71.63 / 35.95; with 1200 (1200 steps each)
            74.37 / 40.84, 75.06 / 41.20, 73.49 / 39.83 (74.67 / 39.94 at threshold 0.05 at
            10k); base model 74.66 / 38.57. The fall with 0 is not the pseudo-labels' errors:
            with the web videos' ground truth as labels it is 75.28 / 43.15, 75.86 / 44.63,
            74.54 / 37.62 (more steps on web videos pull the localizer towards their domain).
    """

    train: dict[str, Any] = field(default_factory=dict)
    lr_scale: float = 0.1
    warmup_epochs: int = 2
    epochs: int = 2
    teacher_decay: float = 0.999
    teacher_init: str = "raw"
    student_init: str = "base"
    consistency_weight: float = 0.0
    refresh_every: int = 0
    labelled_fraction: float = 0.5
    rounds: int = 1
    epoch_length: int = 0


@dataclass
class ClusterConfig:
    """k-means (``num_clusters``, ``n_init`` restarts, ``max_iter``) and CCI (:mod:`stovtal.feel.cci`).

    ``num_clusters``: 0 = the number of classes of the vocabulary. ``k1``/``k2``: the
    k-reciprocal Jaccard distance's neighbourhood sizes; ``lam``: weight of the Jaccard term in
    the combined distance. ``lam=0`` switches CCI off (k-means labels and the Euclidean margin
    as confidence): the ablation. Up to ``dense_limit`` videos + centroids the dense Jaccard op
    is used, beyond it the top-``topk_m`` op.
    """

    num_clusters: int = 0
    n_init: int = 10
    max_iter: int = 300
    k1: int = 20
    k2: int = 6
    lam: float = 0.5
    dense_limit: int = 4096
    topk_m: int = 100


@dataclass
class IISConfig:
    """Self-paced instance selection: the share ``p0`` of each cluster selected in the first
    iteration, grown to 1 by the last (``schedule`` ``constant`` or ``variable`` with ``gamma``)."""

    schedule: str = "variable"
    p0: float = 0.5
    gamma: float = 2.0


@dataclass
class NamingConfig:
    """Name each discovered cluster by the nearest class name in a text-embedding vocabulary.

    ``vocab_npz``: ``.npz`` with ``names`` + ``embeddings`` in the feature space (e.g. CLIP text
    embeddings for CLIP video features); ``"auto"`` uses the synthetic world's ``vocab.npz``
    when running on it and disables naming otherwise; empty or null disables naming.
    With ``open_clip_model`` + ``open_clip_checkpoint`` (local, never downloaded) the names of
    ``vocabulary`` (a shipped vocabulary name or a text file; empty: the data's classes) are
    encoded by ``stovtal.models.text_encoders.OpenClipTextEncoder`` instead.
    """

    vocab_npz: str | None = "auto"
    open_clip_model: str = ""
    open_clip_checkpoint: str = ""
    templates: str | None = None
    vocabulary: str = ""


# --------------------------------------------------------------------------- whole runs


@dataclass
class Config:
    """``python -m stovtal.train`` / ``infer``: data, text encoder, localizer, classifier,
    optimisation, output directory. ``num_threads``: intra-op CPU threads, ``"auto"`` (the
    free cores), a count, or 0 (torch's own) (:mod:`stovtal.utils.threads`).

    ``adapter``: training of the optional classifier adapter, used only when
    ``classifier.adapter=true`` (off by default: zero-shot classification).
    """

    data: DataConfig = field(default_factory=lambda: DataConfig(synthetic=True, world_dir="runs/synthetic_world"))
    text: TextConfig = field(default_factory=TextConfig)
    model: LocalizerConfig = field(default_factory=LocalizerConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    adapter: AdapterTrainConfig = field(default_factory=AdapterTrainConfig)
    workdir: str = "runs/base"
    num_threads: int | str = "auto"


def _selftrain_data() -> DataConfig:
    # ActionFormer's crops of 90-100% of every training video (the authors' configs), chosen on a
    # held-out synthetic world (data.world.seed=7, training seed 0): base model CB / CN / GZSL avg
    # mAP 80.64 / 44.81 / 62.20 with them, 79.65 / 36.44 / 58.42 without (self-trained 81.06 /
    # 47.68 / 63.43 vs 79.51 / 40.21 / 60.05, the earlier web set)
    return DataConfig(synthetic=True, train_subset="train", test_subset="test", crop_ratio=[0.9, 1.0])


def _selftrain_model() -> LocalizerConfig:
    # sized so that the default pipeline runs in minutes on 2 CPU cores: ActionFormer's
    # architecture (LocalizerConfig), narrower, with a shorter attention window, and batches
    # padded to the largest stride instead of max_seq_len (the synthetic videos are 100-300
    # snippets); the full-size localizer is LocalizerConfig's default (model.embed_dim=512 ...)
    return LocalizerConfig(embed_dim=64, head_dim=64, num_heads=4, window=9, pad_to_max_seq_len=False)


def _selftrain_train() -> TrainConfig:
    # the recipe of the shipped synthetic base config (stovtal/configs/synthetic.yaml); the EMA
    # warm-up matters: without it a 0.999-decay EMA of ~600 steps is still half random init
    return TrainConfig(epochs=12, batch_size=4, warmup_epochs=2.0, lr=5e-4, ema_warmup=True)


@dataclass
class SelfTrainConfig:
    """``python -m stovtal.selftrain``: the whole pipeline.

    ``seed`` seeds training (base and retraining); ``device`` and ``progress`` apply to every
    stage (they take the place of ``train.seed``/``train.device``/``train.progress``, which must
    stay at their defaults); ``num_threads``: intra-op CPU threads, ``"auto"`` (the free
    cores), a count, or 0 (torch's own) (:mod:`stovtal.utils.threads`). The ``model`` and
    ``train`` defaults are small, for the synthetic world on a 2-core CPU. ``scale``: numbers of
    unlabelled videos, one self-training run each (``--scale``). ``base.checkpoint``: start
    from a given base model (e.g. a converted ActionFormer checkpoint) instead of training one
    (:class:`BaseModelConfig`).
    """

    seed: int = 0
    device: str = "auto"
    progress: bool = True
    num_threads: int | str = "auto"
    data: DataConfig = field(default_factory=_selftrain_data)
    model: LocalizerConfig = field(default_factory=_selftrain_model)
    train: TrainConfig = field(default_factory=_selftrain_train)
    base: BaseModelConfig = field(default_factory=BaseModelConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    pseudo: PseudoLabelConfig = field(default_factory=PseudoLabelConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    scale: list[int] = field(default_factory=list)


def _feel_data() -> DataConfig:
    return DataConfig(
        synthetic=None, train_subset="validation", test_subset="test", vocabulary="thumos14", feat_dim=None,
        max_seq_len=512,
        world={"seed": 0, "vocabulary": "thumos14", "profile": "short", "num_web": 300, "num_test": 100,
               "num_train": 1, "web_classes_per_video": [1.0], "web_profile": "target"},
    )


def _feel_train() -> TrainConfig:
    # on the default synthetic run the final training loss per iteration is 0.16-0.27 after
    # 10 epochs (still falling) and 0.073-0.077 after 30; with true labels 1.38 / 0.080 and
    # 0.070 after 40: 30 epochs is where the loss levels off
    return TrainConfig(epochs=30, batch_size=8, lr=2e-3, weight_decay=5e-4, clip_grad=1.0, warmup_epochs=0.0)


def _feel_model() -> CoLAConfig:
    # in_dim and num_classes are set by the pipeline (feature dim, number of clusters).
    # CoLA puts a ReLU after the classifier conv (the THUMOS14 config does); on a held-out
    # synthetic world (seed 7) FEEL's average mAP@0.1:0.7 after 4 iterations is 0.046 with it
    # and 0.083 without (iterations 1-4: 0.064 0.076 0.070 0.046 / 0.072 0.072 0.074 0.083)
    return CoLAConfig(embed_dim=128, dropout=0.5, cas_relu=False)


@dataclass
class FeelConfig:
    """``python -m stovtal.feel``: k-means -> CCI -> IIS -> CoLA, ``iterations`` rounds.

    ``data.max_seq_len``: training crops (random) of longer videos, in snippets. ``train``:
    CoLA's training on the one trainer (epochs or iterations, batch_size, optimizer, lr,
    weight_decay, schedule with warmup_epochs and min_lr_ratio, clip_grad; CoLA trains in
    float32 without an EMA, so ``amp`` and ``ema_*`` are not used, nor are ``seed`` (the
    iteration's seed is), ``device`` (the run's) and ``eval_every``).
    ``num_threads``: intra-op CPU threads (``"auto"``: the free cores, 0: torch's own; see
    :mod:`stovtal.utils.threads`); 1 by default: CoLA's small convs gain little from more.
    """

    seed: int = 0
    iterations: int = 4
    device: str = "cpu"
    num_threads: int | str = 1
    workdir: str = "runs/feel"
    progress: bool = True
    data: DataConfig = field(default_factory=_feel_data)
    eval: EvalConfig = field(default_factory=lambda: EvalConfig(
        tiou_thresholds=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]))
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    iis: IISConfig = field(default_factory=IISConfig)
    model: CoLAConfig = field(default_factory=_feel_model)
    train: TrainConfig = field(default_factory=_feel_train)
    localize: LocalizeConfig = field(default_factory=LocalizeConfig)
    naming: NamingConfig = field(default_factory=NamingConfig)


# --------------------------------------------------------------------------- keys of earlier versions

#: (old dotted key, new dotted key) per run type; a key ending in ``.*`` moves a whole section.
RENAMED_KEYS: dict[type, list[tuple[str, str]]] = {
    Config: [
        ("data.annotation_file", "data.annotations"),
        ("data.tiou_thresholds", "eval.tiou_thresholds"),
        ("data.batch_size_eval", "eval.batch_size"),
        ("train.grad_clip", "train.clip_grad"),
    ],
    SelfTrainConfig: [
        ("data.annotation_file", "data.annotations"),
        ("eval.classifier.*", "classifier.*"),
        ("train.grad_clip", "train.clip_grad"),
        ("retrain.train.grad_clip", "retrain.train.clip_grad"),
    ],
    FeelConfig: [
        ("data.annotation_file", "data.annotations"),
        ("data.eval_subset", "data.test_subset"),
        ("data.classes", "data.vocabulary"),
        ("data.synthetic.*", "data.world.*"),
        ("tiou_thresholds", "eval.tiou_thresholds"),
        ("train.grad_clip", "train.clip_grad"),
        ("train.max_seq_len", "data.max_seq_len"),
    ],
}


def _rename(key: str, renames: list[tuple[str, str]], section: bool = False) -> str | None:
    """The current name of ``key`` (None: unchanged); ``section``: ``key``'s value is a mapping."""
    for old, new in renames:
        if old.endswith(".*"):
            if key.startswith(old[:-1]):
                return new[:-1] + key[len(old) - 1:]
            if section and key == old[:-2]:
                return new[:-2]
        elif key == old:
            return new
    return None


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict) or not d:
        return {prefix: d} if prefix else {}
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        # dict-valued fields stay whole (their keys are data, not config keys; int keys stay ints)
        if isinstance(v, dict) and v and not key.endswith(("world", "retrain.train", "threshold_by_n")):
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out


def _set(d: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    for p in parts[:-1]:
        d = d.setdefault(p, {})
    d[parts[-1]] = value


def migrate(schema: type, raw: dict[str, Any], where: str, warn: bool = True) -> dict[str, Any]:
    """``raw`` (a YAML config or stored config as a plain dict) with the keys of earlier
    versions of ``schema`` renamed (``RENAMED_KEYS``), each announced by a ``FutureWarning``."""
    renames = RENAMED_KEYS.get(schema, [])
    if not renames:
        return raw
    out: dict[str, Any] = {}
    for key, value in _flatten(raw).items():
        new = _rename(key, renames, section=isinstance(value, dict))
        if new is not None:
            if warn:
                warnings.warn(f"{where}: the key {key!r} is deprecated, use {new!r}", FutureWarning, stacklevel=3)
            key = new
        _set(out, key, value)
    return out


def _migrate_overrides(schema: type, overrides: list[str]) -> list[str]:
    renames = RENAMED_KEYS.get(schema, [])
    out = []
    for o in overrides:
        key, _, value = o.partition("=")
        new = _rename(key.strip(), renames)
        if new is not None:
            warnings.warn(f"override {key!r} is deprecated, use {new!r}", FutureWarning, stacklevel=3)
            o = f"{new}={value}"
        out.append(o)
    return out


# --------------------------------------------------------------------------- loading


def config_path(name_or_path: str) -> str:
    """A YAML path, or the name of a shipped config (``synthetic``, ``thumos14``, ...)."""
    if os.path.exists(name_or_path):
        return name_or_path
    ref = resources.files("stovtal").joinpath("configs", f"{name_or_path.removesuffix('.yaml')}.yaml")
    if ref.is_file():
        return str(ref)
    raise FileNotFoundError(f"{name_or_path}: config file not found (and not a shipped config name)")


def _read_yaml(path: str) -> dict[str, Any]:
    try:
        loaded = OmegaConf.load(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: config file not found") from None
    except Exception as exc:  # YAML syntax errors come from the yaml parser
        raise ConfigError(f"{path}: not a valid YAML config ({exc})") from None
    raw = OmegaConf.to_container(loaded, resolve=False) if loaded is not None else {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config must be a mapping of sections, got {type(raw).__name__}")
    return raw


def load(schema: type[T], path: str | None = None, overrides: list[str] | None = None,
         stored: dict[str, Any] | None = None) -> T:
    """Defaults of ``schema`` <- YAML ``path`` <- ``stored`` (a config dict, e.g. from a
    checkpoint) <- ``key=value`` ``overrides``, as an instance of ``schema``.

    Keys of earlier versions are renamed with a ``FutureWarning``; unknown keys and wrongly
    typed values raise :class:`ConfigError` naming the file or the override. Value checks:
    :func:`validate` (the component dataclasses also check their own fields when built).
    """
    merged = OmegaConf.structured(schema)
    layers: list[tuple[str, dict[str, Any]]] = []
    if path:
        p = config_path(path) if schema is Config else path
        if not os.path.isfile(p):
            raise FileNotFoundError(f"{p}: config file not found")
        layers.append((p, migrate(schema, _read_yaml(p), p)))
    if stored:
        layers.append(("stored config", migrate(schema, stored, "stored config", warn=False)))
    for where, raw in layers:
        try:
            merged = OmegaConf.merge(merged, raw)
        except OmegaConfBaseException as exc:
            raise ConfigError(f"{where}: {exc}") from None
    if overrides:
        bad = [o for o in overrides if "=" not in o]
        if bad:
            raise ConfigError(f"overrides must look like key=value, got {bad}")
        try:
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(_migrate_overrides(schema, list(overrides))))
        except OmegaConfBaseException as exc:
            raise ConfigError(f"invalid override: {exc}") from None
    check_finite(OmegaConf.to_container(merged, resolve=True), ConfigError)  # before the value checks
    try:
        obj = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"bad configuration: {exc}") from None
    except ValueError as exc:  # a component's own check (its __post_init__): name the section
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{_failing_section(merged) or 'config'}: {exc}") from None
    assert isinstance(obj, schema)
    return obj


def _failing_section(merged: Any) -> str | None:
    """The top-level section of ``merged`` whose dataclass refuses its values."""
    for key in merged:
        node = merged[key]
        if OmegaConf.is_config(node) and OmegaConf.get_type(node) not in (dict, list, None):
            try:
                OmegaConf.to_object(node)
            except (ValueError, OmegaConfBaseException):
                return str(key)
    return None


def load_config(path: str | None = None, overrides: list[str] | None = None) -> Config:
    """A :class:`Config` (``train`` / ``infer``): defaults <- YAML (a path or a shipped config
    name) <- overrides, validated."""
    cfg = load(Config, path, overrides)
    validate(cfg)
    return cfg


def to_dict(cfg: Any) -> dict[str, Any]:
    """A config as a plain dict (what checkpoints and ``config.yaml`` store)."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)  # type: ignore[return-value]


def to_yaml(cfg: Any) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


# --------------------------------------------------------------------------- validation

Check = Callable[[Any], "str | None"]


def ge(lo: float) -> Check:
    return lambda x: None if x >= lo else f"must be >= {lo}, got {x}"


def gt(lo: float) -> Check:
    return lambda x: None if x > lo else f"must be > {lo}, got {x}"


def within(lo: float, hi: float, lo_open: bool = False, hi_open: bool = False) -> Check:
    def check(x: Any) -> str | None:
        ok = (lo < x if lo_open else lo <= x) and (x < hi if hi_open else x <= hi)
        return None if ok else f"must be in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}, got {x}"
    return check


def integer(check: Check) -> Check:
    """``check`` on a whole number (an int, not a bool or a float)."""
    return lambda x: (check(x) if isinstance(x, int) and not isinstance(x, bool)
                      else f"must be an integer, got {x!r}")


def one_of(*choices: str) -> Check:
    return lambda x: None if x in choices else f"must be one of {choices}, got {x!r}"


def zero_or(check: Check) -> Check:
    """0 (the option is off) or a value passing ``check``."""
    return lambda x: None if x == 0 else check(x)


def optional(check: Check) -> Check:
    return lambda x: None if x is None else check(x)


def ratio_range() -> Check:
    """``[lo, hi]`` with ``0 < lo <= hi <= 1``."""
    def check(x: Any) -> str | None:
        r = list(x)
        if len(r) == 2 and 0 < r[0] <= r[1] <= 1:
            return None
        return f"must be [lo, hi] with 0 < lo <= hi <= 1, got {r}"
    return check


def each(check: Check, nonempty: bool = True) -> Check:
    def run(xs: Any) -> str | None:
        if nonempty and not len(xs):
            return "must not be empty"
        for x in xs:
            msg = check(x)
            if msg:
                return f"{msg} (in {list(xs)})"
        return None
    return run


#: Per-field checks of every config dataclass: ``{class: {field: check}}``; a check returns
#: None or the message. :func:`validate` applies them to every nested section of a run with
#: the field's dotted key; the dataclasses of this module also apply theirs when built.
FIELD_RULES: dict[type, dict[str, Check]] = {
    TrainConfig: {
        "epochs": ge(1), "batch_size": ge(1), "lr": gt(0), "weight_decay": ge(0), "warmup_epochs": ge(0),
        "min_lr_ratio": within(0, 1), "clip_grad": ge(0), "ema_decay": within(0, 1, hi_open=True),
        "num_workers": ge(0), "eval_every": ge(0), "log_every": ge(1),
        "optimizer": one_of("adamw", "adam"), "schedule": one_of("cosine", "constant"), "iterations": ge(0),
    },
    AdapterTrainConfig: {"epochs": ge(1), "batch_size": ge(1), "lr": gt(0), "weight_decay": ge(0)},
    TextConfig: {"kind": one_of("npz", "open_clip"), "logit_scale": optional(gt(0))},
    DataConfig: {
        "fps": gt(0), "feature_stride": ge(1), "num_frames": ge(1), "feat_dim": optional(ge(1)),
        "max_seq_len": ge(1), "logit_scale": gt(0), "split_seed": ge(0),
        "crop_ratio": optional(ratio_range()), "trunc_thresh": within(0, 1, lo_open=True),
    },
    EvalConfig: {"tiou_thresholds": each(within(0, 1, lo_open=True)), "batch_size": ge(1)},
    PseudoLabelConfig: {
        "num_videos": optional(ge(1)), "threshold_mode": one_of("fixed", "per_video", "quantile"),
        "threshold": within(0, 1), "per_video_ratio": within(0, 1), "quantile": within(0, 1),
        "min_num": ge(0), "dedup_iou": within(0, 1), "candidate_floor": within(0, 1),
        "shard_size": ge(1), "batch_size": ge(1), "num_workers": ge(0),
    },
    RetrainConfig: {
        "lr_scale": gt(0), "warmup_epochs": ge(0), "epochs": ge(1),
        "teacher_decay": within(0, 1, hi_open=True), "teacher_init": one_of("raw", "ema"),
        "student_init": one_of("scratch", "base"),
        "consistency_weight": ge(0), "refresh_every": ge(0), "labelled_fraction": within(0, 1, hi_open=True),
        "rounds": integer(ge(1)), "epoch_length": integer(zero_or(ge(2))),
    },
    ClusterConfig: {
        "num_clusters": ge(0), "n_init": ge(1), "max_iter": ge(1), "k1": ge(1), "k2": ge(1),
        "lam": within(0, 1), "dense_limit": ge(1), "topk_m": ge(1),
    },
    IISConfig: {"schedule": one_of("constant", "variable"), "p0": within(0, 1, lo_open=True), "gamma": gt(0)},
    CoLAConfig: {"border": one_of("replicate", "zero"), "action_reduction": one_of("sum", "mean")},
    LocalizeConfig: {
        "upscale": ge(1), "min_run": ge(1), "oic_margins": one_of("round", "cola"),
        "thresholds": each(within(0, 1), nonempty=False), "actionness_thresholds": each(within(0, 1), nonempty=False),
        "class_threshold": within(0, 1), "nms_iou": within(0, 1),
    },
    Config: {"num_threads": check_thread_setting},
    SelfTrainConfig: {"num_threads": check_thread_setting, "scale": each(ge(1), nonempty=False)},
    FeelConfig: {"iterations": ge(1), "num_threads": check_thread_setting},
}


def check_fields(obj: Any, prefix: str = "") -> None:
    """Apply :data:`FIELD_RULES` of ``obj``'s class to its own fields (not nested sections)."""
    for name, check in FIELD_RULES.get(type(obj), {}).items():
        value = getattr(obj, name)
        if isinstance(value, float) and math.isnan(value):
            msg: str | None = f"must be a number, got {value}"
        else:
            msg = check(value)
        if msg:
            raise ConfigError(f"{prefix + '.' if prefix else ''}{name}: {msg}")


def _need(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {msg}")


def _walk(obj: Any, prefix: str = "") -> None:
    check_fields(obj, prefix)
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            _walk(value, f"{prefix}.{f.name}" if prefix else f.name)


def validate(cfg: Any, check_paths: bool = True) -> None:
    """Check every value of a run config (``Config``, ``SelfTrainConfig``, ``FeelConfig``).

    Raises :class:`ConfigError` naming the dotted key of the first bad value. With
    ``check_paths`` the user's data files must exist (``selftrain``; ``train`` and ``feel``
    check theirs when they read them).
    """
    check_finite(cfg, ConfigError)
    _walk(cfg)
    if isinstance(cfg, Config):
        _validate_train(cfg)
    elif isinstance(cfg, SelfTrainConfig):
        _validate_selftrain(cfg, check_paths)
    elif isinstance(cfg, FeelConfig):
        _validate_feel(cfg)


def _check_localizer_train(t: TrainConfig, key: str) -> None:
    default = TrainConfig()
    for name in ("optimizer", "schedule", "iterations"):
        _need(getattr(t, name) == getattr(default, name), f"{key}.{name}",
              f"the localizer's trainer uses {getattr(default, name)!r} (AdamW, warm-up + cosine, epochs)")


#: the retraining schedule has its own keys (RetrainConfig); these may not hide in retrain.train
RETRAIN_SCHEDULE_KEYS = {"lr": "retrain.lr_scale", "epochs": "retrain.epochs", "warmup_epochs": "retrain.warmup_epochs"}


def retrain_train_overrides(cfg: SelfTrainConfig) -> dict[str, Any]:
    """``TrainConfig`` overrides of the retraining: ``retrain.train`` and the schedule of the
    retrain section (lr = base lr x ``lr_scale``; ``warmup_epochs`` + ``epochs`` epochs in all)."""
    r = cfg.retrain
    return {**r.train, "lr": cfg.train.lr * r.lr_scale,
            "warmup_epochs": float(r.warmup_epochs), "epochs": r.warmup_epochs + r.epochs}


def _validate_train(cfg: Config) -> None:
    _check_localizer_train(cfg.train, "train")
    d = cfg.data
    if not d.is_synthetic:
        for key in ("annotations", "feature_dir"):
            _need(bool(getattr(d, key)), f"data.{key}", "is required (or set data.synthetic=true)")
        _need(bool(d.vocabulary or d.base_classes), "data.vocabulary",
              "data.vocabulary (with data.split) or data.base_classes is required")
        _need(d.feat_dim is not None, "data.feat_dim", "is required")


def _validate_selftrain(cfg: SelfTrainConfig, check_paths: bool) -> None:
    p = cfg.pseudo
    _need(p.candidate_floor <= p.threshold or p.threshold_mode != "fixed", "pseudo.candidate_floor",
          f"({p.candidate_floor}) must not exceed pseudo.threshold ({p.threshold})")
    for n, t in p.threshold_by_n.items():
        _need(isinstance(n, int) and n >= 1, "pseudo.threshold_by_n", f"keys are numbers of videos >= 1, got {n!r}")
        _need(isinstance(t, (int, float)) and 0 <= t <= 1, f"pseudo.threshold_by_n.{n}", f"must be in [0, 1], got {t!r}")
        _need(p.candidate_floor <= t or p.threshold_mode != "fixed", f"pseudo.threshold_by_n.{n}",
              f"({t}) must not be below pseudo.candidate_floor ({p.candidate_floor})")
    _need(p.max_num <= 0 or p.max_num >= p.min_num, "pseudo.max_num",
          f"({p.max_num}) must be >= pseudo.min_num ({p.min_num}) or <= 0 (no limit)")
    _need(p.max_candidates >= max(1, p.min_num), "pseudo.max_candidates",
          f"must be >= max(1, min_num), got {p.max_candidates}")
    _need(len(set(cfg.scale)) == len(cfg.scale), "scale", f"duplicate values in {list(cfg.scale)}")
    default = TrainConfig()
    for key in ("seed", "device", "progress"):
        _need(getattr(cfg.train, key) == getattr(default, key), f"train.{key}",
              f"set the run's {key} with the top-level key {key}= instead")
    _check_localizer_train(cfg.train, "train")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(cfg.retrain.train) - known)
    _need(not unknown, "retrain.train", f"unknown keys {unknown} (TrainConfig keys only)")
    for key, instead in RETRAIN_SCHEDULE_KEYS.items():
        _need(key not in cfg.retrain.train, f"retrain.train.{key}", f"is set by {instead}")
    try:
        retrain = TrainConfig(**{**dataclasses.asdict(cfg.train), **retrain_train_overrides(cfg)})
    except ConfigError as exc:
        raise ConfigError(f"retrain.{exc}") from None
    _check_localizer_train(retrain, "retrain.train")
    ckpt = cfg.base.checkpoint
    if ckpt and check_paths:  # its contents are checked against the data by stovtal.selftrain.basemodel
        _need(os.path.isfile(ckpt), "base.checkpoint", f"file {ckpt!r} does not exist")
    d = cfg.data
    if d.is_synthetic:
        _check_world(d.world)
    elif check_paths:
        check_data_paths(d)


def _check_world(world: dict[str, Any]) -> None:
    from stovtal.data.synthetic import SyntheticConfig

    try:
        SyntheticConfig.from_dict(dict(world))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"data.world: {exc}") from None


def check_data_paths(d: DataConfig) -> None:
    """``selftrain`` on the user's data: every path must be given and exist (errors name key and path)."""
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


def _validate_feel(cfg: FeelConfig) -> None:
    c = cfg.cluster
    _need(c.k1 >= c.k2, "cluster.k2", f"need 1 <= cluster.k2 <= cluster.k1, got {c.k1}, {c.k2}")
    loc = cfg.localize
    _need(bool(loc.thresholds) or loc.use_actionness, "localize.thresholds",
          "must not be empty (or set localize.use_actionness=true)")
    default = DataConfig()
    for key in ("crop_ratio", "trunc_thresh"):  # CoLA's training crops are FEEL's own
        _need(getattr(cfg.data, key) == getattr(default, key), f"data.{key}",
              "is a localizer training setting, not used by feel (its crops: data.max_seq_len)")
