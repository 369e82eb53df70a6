"""The built-in synthetic world: the default input of every stovtal entry point.

Snippet features live in the space of real text embeddings of real action names
(all-MiniLM-L6-v2, shipped in ``stovtal/data/embeddings/``), mapped into the feature dimension by
a fixed random orthogonal map. The world writes itself to disk in the real formats, so the rest of
the package only reads the real formats:

``root/``
    ``features/<vid>.npy``   float32 ``[T, feat_dim]`` snippet features of every video
    ``annotations.json``     subsets ``"train"`` (labelled, base classes only) and ``"test"``
                             (base + novel, ground truth)
    ``web.json``             subset ``"web"``: the unlabelled web videos (``annotations: []``)
    ``web_gt.json``          the web videos' hidden ground truth (analysis only, e.g. to measure
                             pseudo-label quality; methods must not read it): Kinetics-400 labels,
                             plus ``target_label`` on an action whose Kinetics class is a target class
    ``web_shards/``          ``web_<start>_<stop>.json`` + ``web_<start>_<stop>_gt.json``: the same
                             two files per shard of ``web_shard_size`` web videos (resume unit)
    ``web-<N>.json``,        written by :meth:`SyntheticWorld.write_web` for web videos
    ``web_gt-<N>.json``      ``0..N-1`` (any N, beyond ``num_web`` too; features in ``features/``)
    ``vocab.npz``            ``names`` + ``embeddings`` (float32 ``[K, feat_dim]``): the mapped
                             class-name text embeddings, i.e. the frozen text encoder's output
    ``world.json``           fps / feature_stride / num_frames / feat_dim, base and novel
                             classes, the full config; written last (completion marker)

Generative model (per video ``v``, snippet ``t``; every vector in ``R^feat_dim``)::

    f_t = modality_gap + scene_v + a_t * A_t + (1 - a_t) * B_t + n_t

- ``a_t`` in [0, 1]: the fraction of snippet t's frame window ``[t*stride, t*stride+num_frames)``
  covered by an action instance (so boundaries are soft over ``num_frames/stride`` snippets).
- ``A_t = s_v * m_t * unit(p_c + instance_variation * u)``: action content of class ``c``.
  ``p_c = unit(W e_c + text_visual_gap * d_c)`` is the class's visual prototype: its mapped text
  embedding ``W e_c`` moved by a fixed random per-class direction ``d_c`` (video and text
  embeddings of a class never coincide). ``u`` mixes a per-(video, class) and a per-instance
  random direction (intra-class variation). ``s_v`` is the video's signal strength (log-uniform
  in ``signal_range``: variable SNR) and ``m_t`` a smooth amplitude jitter (``amplitude_jitter``).
- ``B_t``: structured background: the video switches smoothly between ``background_types_per_video``
  of ``num_background_types`` shared background "activities" (random directions) with strength
  drawn like ``s_v``; plus distractor spans (``distractors_per_minute``) where the background takes
  a weak (``distractor_strength`` x ``s_v``) component of a random class's prototype: hard,
  unlabelled negatives, drawn from all classes alike.
- ``scene_v``: a per-video scene vector of norm ``scene_norm``: a mix of one of ``num_scenes``
  shared scene prototypes and a video-specific direction. With probability ``scene_class_affinity``
  the prototype is the one preferred by the video's first class (venues correlate with actions).
- ``n_t``: Gaussian noise of expected norm ``noise_norm``, temporally smoothed by an AR(1) filter
  with coefficient ``noise_smoothness``.
- ``modality_gap``: a fixed vector of norm ``modality_gap_norm`` added to every snippet feature.

Durations: video length ``T`` in snippets is uniform in ``snippets_range``; action lengths are
log-normal in seconds (``action_median_s``/``action_sigma``, or a fraction of the video for the
ActivityNet-like ``"long"`` profile), clipped to ``action_range_s``; ``1 + Poisson(extra_instances)``
instances per class in a video, placed without overlap (at least ``min_gap_s`` apart).

The web set (``web_profile="kinetics"``, the default; :data:`WEB_SPEC`) is modelled on the
paper's web videos (untrimmed YouTube videos of Kinetics actions). It was specified before any
method was measured on it and is not tuned to results. Relative to the target (test) videos:

============================  ==============================  ==========================================
aspect                        web videos (target videos)      source / rationale
============================  ==============================  ==========================================
action vocabulary             the 400 Kinetics-400 classes,    the paper self-trains on Kinetics videos.
                              each action uniform over them    Kinetics-400 is roughly class-balanced
                              (the 20 THUMOS14 classes)        (at least 400 clips per class, Kay et al.
                                                               2017, arXiv 1705.06950), hence uniform
text encoder                  all-MiniLM-L6-v2 of the          the same frozen text encoder and the same
                              Kinetics names, the same map W   text -> feature map as the target classes
share of target classes       matched Kinetics classes / 400:  derived from the data: a Kinetics class
                              12 / 400 = 3.0% of web actions   matches a target class when its lemma set
                              for THUMOS14 (all base classes;  contains the target name's lemmas (the
                              no novel class is matched)       Kinetics split's rule, ``splits.py``;
                                                               shipped ``kinetics_matches``). A matched
                                                               action uses the target class's visual
                                                               prototype (its first match); the others
                                                               get their own prototype from their own
                                                               MiniLM embedding (built like the targets')
distinct actions per video    1 / 2 / 3 with p 0.2 / 0.4 /     an untrimmed web video shows several
                              0.4 (1 / 2 with p 0.8 / 0.2);    activities around its Kinetics clip; each
                              measured 1.50 per video (1.14)   Kinetics clip is labelled with one. After
                                                               placement in the short videos
extra instances per action    Poisson mean x 1/3 (0.5; 1.5)    repetitions are a THUMOS14 trait
                                                               (broadcast sports), not of web clips
video length                  snippets range x 0.5: 50-150     Kinetics clips are about 10 s (Kay et al.
                              snippets, mean 13.7 s (100-300,  2017) and web uploads are short; the
                              mean 28.1 s)                     world's target videos are themselves
                                                               compressed, so the ratio is kept, not
                                                               the absolute length
action length                 log-normal median x 1.0 (4 s)    the same actions' kinetics
action-vs-background share    measured 0.54 of the video       Kinetics clips are cut around the action
                              (0.39)                           (Kay et al. 2017), so web videos are mostly
                                                               action (follows from the rows above)
scene statistics              64 scene prototypes of their     user-generated footage spans many more
                              own (16 shared by train/test),   venues than THUMOS14's broadcast sports
                              norm x 1.5 (1.5; 1.0)            venues, and amateur filming varies more
noise                         norm x 1.5 (0.9; 0.6), AR(1)     hand-held cameras, low resolution and
                              coefficient 0.5 (0.7):           re-encoding; measured mean snippet-to-
                              rougher in time                  snippet feature change 0.91 (0.48)
signal strength, background,  unchanged                        the same feature extractor (modality gap)
distractors, modality gap                                      and human actions; distractors are drawn
                                                               from the web domain's own prototypes
============================  ==============================  ==========================================

The measured values are for the default config, seed 0 (300 test and 600 web videos).
Caveat on the length rows: the authors' retraining configs (HYUNJS/STOV-TAL
``configs/joint/TH_vifi_prop_K400_UKR10k-PL.yaml``) name their web set ``UK600-R10k`` (a random
10k of the untrimmed Kinetics-600 videos) and size the model's buffer for videos of up to 56,843
snippets. Those are the full uploads around the Kinetics clips, and their length distribution is
not known here. The length and action-share rows follow the Kinetics clips, not the full uploads. The web
domain's prototypes and scenes come from their own RNG stream, so the labelled and test videos
are the same with either web profile. ``web_profile="target"`` keeps the earlier web set (drawn
like the test videos with ``web_classes_per_video``); a world written before the option existed
is read as such (:meth:`SyntheticConfig.from_written`) and the config (hence its fingerprint)
differs from a default world's, so an old world directory is never reused for the new web set.
FEEL clusters target-domain videos (as the paper clusters THUMOS14's own), so its world uses
``web_profile="target"``.

Nothing here depends on a method run on the world: labels come only from the generative process.
Every video is generated from its own RNG stream ``(seed, subset, index)``, so any subset of videos
(e.g. web shard ``[start, stop)``) is reproducible on its own and nothing is held in memory.

More web videos than ``num_web`` (self-training at scale): ``write_web(root, N)`` adds web videos
``0..N-1`` to a written world in shards cut at multiples of ``web_shard_size``, one video in memory
at a time; a shard's JSON files are written after its feature files, so an interrupted run redoes
at most the shards in flight (finished feature files are kept). Shards can be split over processes
(``shard="i/n"``). Videos ``0..num_web-1`` are the world's own web videos (same files).
``python -m stovtal.data web --root DIR --num-videos N [--shard i/n]`` does the same. To stream
web videos without any disk, use :meth:`SyntheticWorld.iter_web_videos`.

Cost (default config, float32 generation; measured on the shared 2-core machine under load):
about 3 ms CPU per target video and 2 ms per Kinetics web video (half as long). Writing the
default world (200 + 200 target videos, 1,000 Kinetics web videos) took 18.6 s wall / 6.8 s CPU
and 359 MB (the rest of the wall time is fsync-ed file I/O); with ``web_profile="target"``
24.6 s wall / 8.4 s CPU and 553 MB. Memory stays flat (one video at a time).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.signal import lfilter

from stovtal.utils.fileio import atomic_open, atomic_save_npy, read_json
from stovtal.utils.resume import read_marker, write_marker
from stovtal.utils.shards import parse_shard_spec

from .formats import FeatureGrid, feature_path, write_annotations
from .splits import class_split, kinetics_matches
from .vocab import _canonical, save_embeddings, shipped_text_embeddings

__all__ = ["SyntheticConfig", "SyntheticWorld", "PROFILES", "WEB_PROFILES", "WEB_SPEC", "WebSpec",
           "ensure_world"]

_SUBSET_CODE = {"train": 1, "web": 2, "test": 3}
FORMAT_VERSION = 1
WEB_SHARD_DIR = "web_shards"
# config fields that do not change any video (counts, write granularity, notes)
_NOT_GENERATIVE = ("num_train", "num_web", "num_test", "web_shard_size", "extra")


@dataclass(frozen=True)
class DurationProfile:
    """Timing statistics of a world (see the module docstring)."""

    fps: float
    feature_stride: int
    num_frames: int
    action_median_s: float | None  # log-normal median in seconds (None: use action_median_frac)
    action_median_frac: float | None  # ... or as a fraction of the video duration
    action_sigma: float  # log-normal sigma (natural log)
    action_range_s: tuple[float, float]
    extra_instances: float  # mean of the Poisson number of extra instances per class and video
    min_gap_s: float


PROFILES = {
    # THUMOS14-like: short actions (median 4 s) in videos of 13-40 s, several per video.
    "short": DurationProfile(fps=30.0, feature_stride=4, num_frames=16, action_median_s=4.0,
                             action_median_frac=None, action_sigma=0.6, action_range_s=(0.8, 20.0),
                             extra_instances=1.5, min_gap_s=0.5),
    # ActivityNet-like: long actions (median 35% of the video) in videos of 53-160 s, 1-2 per video.
    "long": DurationProfile(fps=30.0, feature_stride=16, num_frames=16, action_median_s=None,
                            action_median_frac=0.35, action_sigma=0.5, action_range_s=(2.0, 1e9),
                            extra_instances=0.3, min_gap_s=2.0),
}


WEB_PROFILES = ("kinetics", "target")


@dataclass(frozen=True)
class WebSpec:
    """The web domain of ``web_profile="kinetics"`` (values and sources: the module docstring).

    Factors are relative to the world's target videos (its config and timing profile)."""

    vocabulary: str  # vocabulary of the web actions
    classes_per_video: tuple[float, ...]  # probabilities of 1, 2, 3 distinct actions
    length_factor: float  # video length range (snippets) x this
    action_length_factor: float  # action length median x this
    extra_instances_factor: float  # Poisson mean of extra instances per action x this
    num_scenes: int  # web scene prototypes (independent of the target videos' scenes)
    scene_norm_factor: float  # scene vector norm x this
    noise_norm_factor: float  # noise norm x this
    noise_smoothness: float  # AR(1) coefficient of the noise (target: the config's)


WEB_SPEC = WebSpec(vocabulary="kinetics400", classes_per_video=(0.2, 0.4, 0.4), length_factor=0.5,
                   action_length_factor=1.0, extra_instances_factor=1 / 3, num_scenes=64,
                   scene_norm_factor=1.5, noise_norm_factor=1.5, noise_smoothness=0.5)


@dataclass(frozen=True)
class _Domain:
    """What differs between the target videos and the web videos of a world."""

    names: list[str]  # label names of the domain's classes
    prototypes: np.ndarray  # [K, D] visual prototype per class
    scene_protos: np.ndarray  # [S, D]
    class_scene: np.ndarray  # [K] preferred scene per class
    snippets_range: tuple[int, int]
    length_factor: float  # action length x this
    extra_instances: float
    scene_norm: float
    noise_norm: float
    noise_smoothness: float
    targets: dict[int, tuple[int, ...]] = field(default_factory=dict)  # class -> target classes


@dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of a synthetic world (all documented in the module docstring).

    Attributes:
        seed: master seed; the world is a pure function of this config.
        vocabulary: shipped vocabulary whose class names (and MiniLM text embeddings) are used.
        split: class split of that vocabulary (``"kinetics"``, ``"random75"``, ``"random50"``).
        split_seed: seed of a random split.
        profile: ``"short"`` (THUMOS-like) or ``"long"`` (ActivityNet-like) timing.
        feat_dim: feature dimension D.
        num_train, num_web, num_test: videos in the labelled / web / test sets.
        snippets_range: min and max video length in snippets (uniform).
        train_classes_per_video, web_classes_per_video, test_classes_per_video: probabilities of
            1, 2, ... distinct action classes in a video (e.g. ``(1.0,)``: always one class).
        signal_range: log-uniform range of the per-video action strength ``s_v``.
        amplitude_jitter: relative std of the smooth amplitude modulation ``m_t``.
        instance_variation: weight of intra-class variation ``u`` against the class prototype.
        text_visual_gap: weight of the per-class offset ``d_c`` between text and visual prototype.
        visual_confusion: weight, inside ``d_c``, of a random mixture of *other* classes' text
            embeddings (against a random direction of weight 1): visual look-alikes.
        scene_norm, num_scenes, scene_class_affinity: per-video scene context (see docstring).
        num_background_types, background_types_per_video: structured background activities.
        background_action_content: weight of a random mixture of class prototypes in each
            background activity (against a random direction of weight 1).
        distractors_per_minute, distractor_strength: hard negative spans in the background.
        noise_norm, noise_smoothness: AR(1)-smoothed Gaussian noise.
        modality_gap_norm: norm of the constant offset of all video features.
        web_shard_size: web videos per shard when writing (resume granularity).
        web_profile: ``"kinetics"`` (default): web videos of Kinetics-400 actions with a domain
            shift (:data:`WEB_SPEC`, the module docstring); ``"target"``: web videos drawn like the
            test videos (the target classes and generator; ``web_classes_per_video``), the web
            set of worlds written before ``web_profile`` existed.
    """

    seed: int = 0
    vocabulary: str = "thumos14"
    split: str = "kinetics"
    split_seed: int = 0
    profile: str = "short"
    feat_dim: int = 512
    num_train: int = 200
    num_web: int = 1000
    num_test: int = 200
    snippets_range: tuple[int, int] = (100, 300)
    train_classes_per_video: tuple[float, ...] = (0.9, 0.1)
    web_classes_per_video: tuple[float, ...] = (0.8, 0.2)
    test_classes_per_video: tuple[float, ...] = (0.8, 0.2)
    signal_range: tuple[float, float] = (0.4, 1.2)
    amplitude_jitter: float = 0.2
    instance_variation: float = 0.8
    text_visual_gap: float = 1.0
    visual_confusion: float = 2.0
    scene_norm: float = 1.0
    num_scenes: int = 16
    scene_class_affinity: float = 0.5
    num_background_types: int = 32
    background_action_content: float = 0.6
    background_types_per_video: int = 3
    distractors_per_minute: float = 2.0
    distractor_strength: tuple[float, float] = (0.2, 0.5)
    noise_norm: float = 0.6
    noise_smoothness: float = 0.7
    modality_gap_norm: float = 0.3
    web_shard_size: int = 250
    web_profile: str = "kinetics"
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes, stored in world.json

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(f"unknown profile {self.profile!r}; choose from {sorted(PROFILES)}")
        lo, hi = self.snippets_range
        if not 8 <= lo <= hi:
            raise ValueError(f"snippets_range must satisfy 8 <= min <= max, got {self.snippets_range}")
        for name in ("num_train", "num_web", "num_test"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.feat_dim < 8:
            raise ValueError(f"feat_dim must be >= 8, got {self.feat_dim}")
        for name in ("train_classes_per_video", "web_classes_per_video", "test_classes_per_video"):
            p = getattr(self, name)
            if not p or any(x < 0 for x in p) or not math.isclose(sum(p), 1.0, abs_tol=1e-6):
                raise ValueError(f"{name} must be probabilities summing to 1, got {p}")
        if not 0 <= self.noise_smoothness < 1:
            raise ValueError("noise_smoothness must be in [0, 1)")
        if self.web_shard_size < 1:
            raise ValueError("web_shard_size must be >= 1")
        if self.web_profile not in WEB_PROFILES:
            raise ValueError(f"web_profile must be one of {WEB_PROFILES}, got {self.web_profile!r}")
        if self.web_profile == "kinetics" and _canonical(self.vocabulary) == "kinetics400":
            raise ValueError("web_profile 'kinetics' needs a target vocabulary other than kinetics400")

    @property
    def timing(self) -> DurationProfile:
        return PROFILES[self.profile]

    def to_dict(self) -> dict[str, Any]:
        return json_ready(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SyntheticConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown synthetic world options: {sorted(unknown)}")
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**kw)

    @classmethod
    def from_written(cls, d: dict[str, Any]) -> SyntheticConfig:
        """The config of a written world (``world.json``'s ``config``): a world written before
        ``web_profile`` existed has the ``"target"`` web set."""
        return cls.from_dict({"web_profile": "target", **d})


def json_ready(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: json_ready(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_ready(v) for v in x]
    return x


def _unit(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


def _orthogonal_map(rng: np.random.Generator, out_dim: int, in_dim: int) -> np.ndarray:
    """``[out_dim, in_dim]`` with orthonormal columns (out >= in) or rows (out < in)."""
    q, r = np.linalg.qr(rng.standard_normal((max(out_dim, in_dim), min(out_dim, in_dim))))
    q = q * np.sign(np.diag(r))
    return q if out_dim >= in_dim else q.T


class SyntheticWorld:
    """A deterministic synthetic world; see the module docstring.

    ``SyntheticWorld(config).write(root)`` writes it (resumable); ``iter_videos(subset, start,
    stop)`` / ``iter_web_videos(start, stop)`` stream videos without touching the disk.
    """

    def __init__(self, config: SyntheticConfig | None = None) -> None:
        self.config = cfg = config or SyntheticConfig()
        t = cfg.timing
        self.grid = FeatureGrid(t.fps, t.feature_stride, t.num_frames)
        split = class_split(cfg.vocabulary, cfg.split, cfg.split_seed)
        names, text = shipped_text_embeddings(cfg.vocabulary)
        self.classes: list[str] = names
        self.base: list[str] = [c for c in names if c in set(split.base)]
        self.novel: list[str] = [c for c in names if c in set(split.novel)]
        self._base_idx = np.array([names.index(c) for c in self.base], dtype=np.int64)
        self._all_idx = np.arange(len(names))
        rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 0]))
        D, E, K = cfg.feat_dim, text.shape[1], len(names)
        self.text_map = _orthogonal_map(rng, D, E)  # [D, E]
        self.text_embeddings = _unit(text.astype(np.float64) @ self.text_map.T)  # [K, D]
        # the visual offset of a class leans towards other classes (look-alikes the text misses)
        others = rng.dirichlet(np.full(K, 0.3), size=K)
        np.fill_diagonal(others, 0.0)
        gap = _unit(cfg.visual_confusion * _unit(others @ self.text_embeddings)
                    + _unit(rng.standard_normal((K, D))))
        self.prototypes = _unit(self.text_embeddings + cfg.text_visual_gap * gap)
        self.scene_protos = _unit(rng.standard_normal((cfg.num_scenes, D)))
        self.class_scene = rng.integers(0, cfg.num_scenes, size=K)
        # background activities share some content with actions (people moving, sports gear)
        mix = rng.dirichlet(np.ones(K), size=cfg.num_background_types) @ self.prototypes
        self.background_types = _unit(cfg.background_action_content * _unit(mix)
                                      + _unit(rng.standard_normal((cfg.num_background_types, D))))
        self.modality_gap = cfg.modality_gap_norm * _unit(rng.standard_normal(D))
        self._target = _Domain(names, self.prototypes, self.scene_protos, self.class_scene,
                               tuple(cfg.snippets_range), 1.0, cfg.timing.extra_instances, cfg.scene_norm,
                               cfg.noise_norm, cfg.noise_smoothness)
        self.web_classes: list[str] = names
        self.web_targets: dict[str, tuple[str, ...]] = {c: (c,) for c in names}
        self._web = self._target if cfg.web_profile == "target" else self._kinetics_domain()

    def _kinetics_domain(self) -> _Domain:
        """The web domain of ``web_profile="kinetics"`` (:data:`WEB_SPEC`), from its own RNG stream
        (the target videos do not change with it)."""
        cfg, spec = self.config, WEB_SPEC
        rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 4]))
        names, text = shipped_text_embeddings(spec.vocabulary)
        D, K = cfg.feat_dim, len(names)
        text_emb = _unit(text.astype(np.float64) @ self.text_map.T)  # the same text -> feature map
        others = rng.dirichlet(np.full(K, 0.3), size=K)
        np.fill_diagonal(others, 0.0)
        gap = _unit(cfg.visual_confusion * _unit(others @ text_emb) + _unit(rng.standard_normal((K, D))))
        protos = _unit(text_emb + cfg.text_visual_gap * gap)
        index = {c: i for i, c in enumerate(self.classes)}
        targets: dict[int, tuple[int, ...]] = {}
        for k, hits in kinetics_matches(cfg.vocabulary).items():
            t = tuple(index[c] for c in hits)
            targets[names.index(k)] = t
            protos[names.index(k)] = self.prototypes[t[0]]  # a matched action looks like its target
        self.web_classes = names
        self.web_targets = {names[k]: tuple(self.classes[c] for c in t) for k, t in targets.items()}
        lo, hi = cfg.snippets_range
        length = (max(8, round(lo * spec.length_factor)), max(8, round(hi * spec.length_factor)))
        return _Domain(names, protos, _unit(rng.standard_normal((spec.num_scenes, D))),
                       rng.integers(0, spec.num_scenes, size=K), length, spec.action_length_factor,
                       cfg.timing.extra_instances * spec.extra_instances_factor,
                       cfg.scene_norm * spec.scene_norm_factor, cfg.noise_norm * spec.noise_norm_factor,
                       spec.noise_smoothness, targets)

    @property
    def web_target_share(self) -> float:
        """Expected share of web action classes that are target classes (each web action is drawn
        uniformly from the web vocabulary): matched web classes / web classes."""
        return sum(1 for t in self.web_targets.values() if t) / len(self.web_classes)

    # ----------------------------------------------------------------- generation
    def _rng(self, subset: str, index: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([self.config.seed, _SUBSET_CODE[subset], index]))

    @staticmethod
    def video_id(subset: str, index: int) -> str:
        return f"{subset}_{index:07d}"

    def _smooth(self, rng: np.random.Generator, shape: tuple[int, ...], coef: float) -> np.ndarray:
        """AR(1)-filtered standard normal noise along axis 0, unit marginal variance."""
        x = rng.standard_normal(shape, dtype=np.float32)
        if coef <= 0:
            return x
        x[0] /= math.sqrt(1 - coef * coef)  # start in the stationary distribution
        return lfilter(np.array([math.sqrt(1 - coef * coef)], dtype=np.float32),
                       np.array([1.0, -coef], dtype=np.float32), x, axis=0)

    def _sample_length_s(self, rng: np.random.Generator, duration: float, factor: float = 1.0) -> float:
        t = self.config.timing
        median = t.action_median_s if t.action_median_s is not None else t.action_median_frac * duration
        median *= factor
        lo, hi = t.action_range_s
        return float(np.clip(median * math.exp(t.action_sigma * rng.standard_normal()), lo,
                             min(hi, 0.95 * duration)))

    def _place(self, rng: np.random.Generator, length: float, duration: float,
               taken: list[tuple[float, float]]) -> tuple[float, float] | None:
        gap = self.config.timing.min_gap_s
        for _ in range(20):
            s = float(rng.uniform(0.0, duration - length))
            e = s + length
            if all(e + gap <= a or s >= b + gap for a, b in taken):
                return s, e
        return None

    def _coverage(self, s: float, e: float, T: int, fps: float) -> np.ndarray:
        """Fraction of each snippet's frame window inside [s, e] seconds, ``[T]``."""
        g = self.grid
        lo = np.arange(T) * g.feature_stride / fps
        hi = lo + g.num_frames / fps
        return np.clip(np.minimum(hi, e) - np.maximum(lo, s), 0, None) * fps / g.num_frames

    def generate(self, subset: str, index: int) -> dict[str, Any]:
        """One video: ``{"video_id", "subset", "duration", "fps", "feats" float32 [T, D],
        "annotations": [{"segment": [s, e], "label"}]}`` (ground truth, seconds)."""
        cfg, g = self.config, self.grid
        if subset not in _SUBSET_CODE:
            raise ValueError(f"unknown subset {subset!r}; choose from {sorted(_SUBSET_CODE)}")
        rng = self._rng(subset, index)
        dom = self._web if subset == "web" else self._target
        D, fps = cfg.feat_dim, g.fps
        T = int(rng.integers(dom.snippets_range[0], dom.snippets_range[1] + 1))
        duration = ((T - 1) * g.feature_stride + g.num_frames) / fps
        pool = (self._base_idx if subset == "train" else
                np.arange(len(dom.names)) if dom is not self._target else self._all_idx)
        probs = {"train": cfg.train_classes_per_video, "test": cfg.test_classes_per_video,
                 "web": cfg.web_classes_per_video if dom is self._target else WEB_SPEC.classes_per_video}[subset]
        n_cls = min(1 + int(rng.choice(len(probs), p=np.asarray(probs) / sum(probs))), len(pool))
        video_classes = rng.choice(pool, size=n_cls, replace=False)

        # scene context
        proto = (dom.class_scene[video_classes[0]] if rng.random() < cfg.scene_class_affinity
                 else int(rng.integers(len(dom.scene_protos))))
        scene = dom.scene_norm * _unit(0.8 * dom.scene_protos[proto] + 0.6 * _unit(rng.standard_normal(D)))
        strength = math.exp(rng.uniform(math.log(cfg.signal_range[0]), math.log(cfg.signal_range[1])))

        # action instances: at least one per chosen class, then Poisson extras
        taken: list[tuple[float, float]] = []
        instances: list[tuple[int, float, float]] = []
        for c in video_classes:
            for _ in range(1 + int(rng.poisson(dom.extra_instances))):
                seg = self._place(rng, self._sample_length_s(rng, duration, dom.length_factor), duration, taken)
                if seg is None:
                    break
                taken.append(seg)
                instances.append((int(c), *seg))
        instances.sort(key=lambda x: x[1])

        a = np.zeros(T, dtype=np.float32)
        act = np.zeros((T, D), dtype=np.float32)
        jitter = 1.0 + cfg.amplitude_jitter * self._smooth(rng, (T,), 0.9)
        class_var = {int(c): _unit(rng.standard_normal(D)) for c in video_classes}
        for c, s, e in instances:
            cov = self._coverage(s, e, T, fps)
            u = _unit(0.8 * class_var[c] + 0.6 * _unit(rng.standard_normal(D)))
            direction = _unit(dom.prototypes[c] + cfg.instance_variation * u)
            idx = np.nonzero(cov)[0]
            act[idx] += cov[idx, None] * direction
            a[idx] += cov[idx]
        a = np.clip(a, 0.0, 1.0)
        act *= (strength * jitter)[:, None]

        # structured background: smooth switching between a few background activities
        n_types = min(cfg.background_types_per_video, cfg.num_background_types)
        types = self.background_types[rng.choice(cfg.num_background_types, size=n_types, replace=False)]
        weights = np.exp(2.0 * self._smooth(rng, (T, n_types), 0.97))
        bg = (weights / weights.sum(1, keepdims=True)) @ types
        bg_strength = math.exp(rng.uniform(math.log(cfg.signal_range[0]), math.log(cfg.signal_range[1])))
        bg = (bg_strength * _unit(bg)).astype(np.float32)
        n_dis = int(rng.poisson(cfg.distractors_per_minute * duration / 60.0))
        for _ in range(n_dis):
            length = min(self._sample_length_s(rng, duration, dom.length_factor) * 0.5, 0.5 * duration)
            s = float(rng.uniform(0, duration - length))
            cov = self._coverage(s, s + length, T, fps)
            c = int(rng.integers(len(dom.names)))
            w = strength * float(rng.uniform(*cfg.distractor_strength))
            bg += (cov * w)[:, None] * dom.prototypes[c]

        noise = self._smooth(rng, (T, D), dom.noise_smoothness) * (dom.noise_norm / math.sqrt(D))
        # act already carries the coverage weights a_t: a_t * A_t == act
        noise += (self.modality_gap + scene).astype(np.float32)
        noise += act
        noise += (1.0 - a)[:, None] * bg
        feats = noise
        anns = [{"segment": [round(s, 4), round(e, 4)], "label": dom.names[c]} for c, s, e in instances]
        if dom is not self._target:  # the target class a matched web action shows (analysis only)
            for ann, (c, _, _) in zip(anns, instances, strict=True):
                if c in dom.targets:
                    ann["target_label"] = self.classes[dom.targets[c][0]]
        return {"video_id": self.video_id(subset, index), "subset": subset, "duration": duration,
                "fps": fps, "feats": np.ascontiguousarray(feats, dtype=np.float32), "annotations": anns}

    def iter_videos(self, subset: str, start: int = 0, stop: int | None = None) -> Iterator[dict[str, Any]]:
        """Videos ``start..stop-1`` of a subset (default stop: the configured count), one at a time."""
        if stop is None:
            stop = {"train": self.config.num_train, "web": self.config.num_web,
                    "test": self.config.num_test}[subset]
        for i in range(start, stop):
            yield self.generate(subset, i)

    def iter_web_videos(self, start: int, stop: int) -> Iterator[dict[str, Any]]:
        """Web videos ``start..stop-1`` (any range, beyond ``num_web`` too); each is generated
        on its own, so shards are reproducible independently."""
        return self.iter_videos("web", start, stop)

    # ----------------------------------------------------------------- writing
    def describe(self) -> dict[str, Any]:
        g = self.grid
        return {"format_version": FORMAT_VERSION, "fps": g.fps, "feature_stride": g.feature_stride,
                "num_frames": g.num_frames, "feat_dim": self.config.feat_dim,
                "vocabulary": self.config.vocabulary, "classes": self.classes, "base": self.base,
                "novel": self.novel, "counts": {"train": self.config.num_train,
                                                "web": self.config.num_web, "test": self.config.num_test},
                "files": {"features": "features", "annotations": "annotations.json",
                          "web": "web.json", "web_gt": "web_gt.json", "vocab": "vocab.npz"},
                "web": self.web_description(),
                "config": self.config.to_dict()}

    def web_description(self) -> dict[str, Any]:
        """The web set's domain: profile, vocabulary, target share and matches, spec."""
        out: dict[str, Any] = {"profile": self.config.web_profile,
                               "target_share": self.web_target_share}
        if self.config.web_profile == "kinetics":
            out.update(vocabulary=WEB_SPEC.vocabulary, num_classes=len(self.web_classes),
                       matches={k: list(v) for k, v in self.web_targets.items()},
                       spec=json_ready(dataclasses.asdict(WEB_SPEC)),
                       snippets_range=list(self._web.snippets_range))
        return out

    def _write_video(self, root: str, subset: str, index: int, db: dict, gt_db: dict | None) -> None:
        vid = self.video_id(subset, index)
        path = feature_path(os.path.join(root, "features"), vid)
        if os.path.exists(path):  # resumable: atomic writes leave only complete files
            v = self._header_only(subset, index)
        else:
            v = self.generate(subset, index)
            atomic_save_npy(path, v["feats"])
        entry = {"subset": subset, "duration": v["duration"], "fps": v["fps"]}
        db[vid] = {**entry, "annotations": [] if subset == "web" else v["annotations"]}
        if gt_db is not None:
            gt_db[vid] = {**entry, "annotations": v["annotations"]}

    def _header_only(self, subset: str, index: int) -> dict[str, Any]:
        # annotations are cheap to regenerate, but they come from the same RNG stream as the
        # features, so the whole video is regenerated and only the metadata kept
        v = self.generate(subset, index)
        v.pop("feats")
        return v

    def is_complete(self, root: str | os.PathLike) -> bool:
        """Whether this world is completely written at ``root`` (``world.json``, the completion
        marker, holds this config); a different world there is an error."""
        return self._read_world(os.path.join(os.fspath(root), "world.json"), (),
                                "a different synthetic world is already written there",
                                "; use another directory") is not None

    def _read_world(self, path: str, ignore: tuple[str, ...], mismatch: str, hint: str = "") -> dict | None:
        """The ``world.json`` record at ``path`` (None: none) if its config is this one but for the
        keys ``ignore``; else an error naming the keys that differ."""
        def differences(meta: dict[str, Any]) -> list[str]:
            return self._differences(meta.get("config") if isinstance(meta, dict) else None, ignore)

        return read_marker(path, [[]], identity=differences,
                           mismatch=lambda meta: f"{mismatch} (config differs in {differences(meta)}){hint}")

    def _differences(self, config: Any, ignore: tuple[str, ...]) -> list[str]:
        """Config keys in which a written world's ``config`` differs from this one (an old world
        without ``web_profile`` has the ``"target"`` web set)."""
        if not isinstance(config, dict):
            return ["config"]
        mine = self.config.to_dict()
        theirs = {"web_profile": "target", **config}
        return sorted(k for k in set(mine) | set(theirs)
                      if k not in ignore and mine.get(k, None) != theirs.get(k, None))

    def write(self, root: str | os.PathLike, progress: bool = False) -> str:
        """Write the world under ``root`` (see the module docstring); returns ``root``.

        Skips everything if ``root/world.json`` matches this config; resumes an interrupted write
        (finished feature files are kept). A different world already at ``root`` is an error.
        """
        root = os.fspath(root)
        if self.is_complete(root):
            return root
        os.makedirs(os.path.join(root, "features"), exist_ok=True)
        save_embeddings(os.path.join(root, "vocab.npz"), self.classes, self.text_embeddings)
        ranges = [("train", self.config.num_train), ("test", self.config.num_test),
                  ("web", self.config.num_web)]
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=sum(n for _, n in ranges), desc="synthetic world", unit="video")
        ann_db: dict[str, Any] = {}
        for subset, n in ranges[:2]:
            for i in range(n):
                self._write_video(root, subset, i, ann_db, None)
                if bar is not None:
                    bar.update(1)
        write_annotations(os.path.join(root, "annotations.json"), ann_db)
        shards = self.web_shard_ranges(self.config.num_web)
        for a, b in shards:
            self._write_web_shard(root, a, b, bar)
        if bar is not None:
            bar.close()
        self._merge_web_shards(root, shards, "web.json", "web_gt.json")
        write_marker(os.path.join(root, "world.json"), self.describe(), indent=1)
        return root

    # ----------------------------------------------------------------- web shards
    def identity(self) -> dict[str, Any]:
        """The config fields that determine the videos (all but counts, shard size, notes)."""
        return {k: v for k, v in self.config.to_dict().items() if k not in _NOT_GENERATIVE}

    @classmethod
    def from_root(cls, root: str | os.PathLike) -> SyntheticWorld:
        """The world written at ``root`` (from its ``world.json``)."""
        path = os.path.join(os.fspath(root), "world.json")
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: no synthetic world here (write it first)")
        meta = read_json(path)
        if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
            raise ValueError(f"{path}: not a synthetic world description (no 'config')")
        return cls(SyntheticConfig.from_written(meta["config"]))

    def web_shard_ranges(self, stop: int, start: int = 0) -> list[tuple[int, int]]:
        """The ``[a, b)`` web-video ranges of the shards covering ``[start, stop)``: cut at the
        multiples of ``web_shard_size`` (and at ``start``/``stop``)."""
        if not 0 <= start <= stop:
            raise ValueError(f"need 0 <= start <= stop, got start={start}, stop={stop}")
        size = self.config.web_shard_size
        cuts = [start, *range((start // size + 1) * size, stop, size), stop]
        return [(a, b) for a, b in zip(cuts, cuts[1:], strict=False) if a < b]

    @staticmethod
    def web_shard_files(root: str | os.PathLike, start: int, stop: int) -> tuple[str, str]:
        """``(web, web_gt)`` annotation files of the web shard ``[start, stop)``."""
        stem = os.path.join(os.fspath(root), WEB_SHARD_DIR, f"web_{start:09d}_{stop:09d}")
        return stem + ".json", stem + "_gt.json"

    def _check_root(self, root: str) -> None:
        path = os.path.join(root, "world.json")
        if self._read_world(path, _NOT_GENERATIVE, f"a different synthetic world is written at {root}") is None:
            raise FileNotFoundError(f"{path}: no synthetic world at {root} (write() it first)")

    def _shard_done(self, root: str, start: int, stop: int) -> bool:
        web, _ = self.web_shard_files(root, start, stop)
        return read_marker(web, [self.identity()], key="world",
                           mismatch="a web shard of a different synthetic world") is not None

    def _write_web_shard(self, root: str, start: int, stop: int, bar: Any = None) -> str:
        web, web_gt = self.web_shard_files(root, start, stop)
        if not self._shard_done(root, start, stop):
            os.makedirs(os.path.join(root, "features"), exist_ok=True)
            db: dict[str, Any] = {}
            gt_db: dict[str, Any] = {}
            for i in range(start, stop):
                self._write_video(root, "web", i, db, gt_db)
                if bar is not None:
                    bar.update(1)
            extra = {"world": self.identity(), "web_range": [start, stop]}
            write_annotations(web_gt, gt_db, **extra)
            write_annotations(web, db, **extra)  # last: marks the shard complete
        elif bar is not None:
            bar.update(stop - start)
        return web

    def write_web_shard(self, root: str | os.PathLike, start: int, stop: int) -> str:
        """Write web videos ``start..stop-1`` into the world at ``root``; returns the shard's
        annotation file (see :meth:`web_shard_files`).

        Writes ``features/web_<i>.npy`` (one video in memory at a time), then the shard's hidden
        ground truth and its annotation file (the completion marker). Any range works, beyond
        ``num_web`` too; a complete shard is skipped, an interrupted one resumed (finished feature
        files are kept). ``root`` must hold this world (same generative config; ``num_web`` and
        ``web_shard_size`` may differ).
        """
        root = os.fspath(root)
        self._check_root(root)
        if not 0 <= start < stop:
            raise ValueError(f"need 0 <= start < stop, got start={start}, stop={stop}")
        return self._write_web_shard(root, start, stop)

    def web_files(self, num_videos: int) -> tuple[str, str]:
        """Names (relative to the root) of the merged ``(web, web_gt)`` files of
        :meth:`write_web` for ``num_videos`` web videos."""
        return f"web-{num_videos}.json", f"web_gt-{num_videos}.json"

    def write_web(self, root: str | os.PathLike, num_videos: int, shard: str | None = None,
                  progress: bool = False) -> tuple[str, str] | None:
        """Write web videos ``0..num_videos-1`` into the world at ``root`` in shards of
        ``web_shard_size`` (see :meth:`write_web_shard`), then the merged annotation files
        ``web-<N>.json`` and ``web_gt-<N>.json`` (streamed shard by shard).

        Args:
            root: a written world (``write(root)`` first; its ``num_web`` may be smaller).
            num_videos: N, any count >= 0.
            shard: ``"i/n"``: write only shards ``k`` with ``k % n == i`` (parallel workers);
                the worker that finds every shard complete writes the merged files.
            progress: tqdm progress bar.

        Returns:
            The absolute paths of the merged ``(web, web_gt)`` files, or None if shards of other
            workers are still missing. Rerunning after an interruption resumes.
        """
        root = os.fspath(root)
        self._check_root(root)
        if isinstance(num_videos, bool) or not isinstance(num_videos, int) or num_videos < 0:
            raise ValueError(f"num_videos must be an int >= 0, got {num_videos!r}")
        job, num_jobs = parse_shard_spec(shard)
        shards = self.web_shard_ranges(num_videos)
        mine = shards[job::num_jobs]
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=sum(b - a for a, b in mine), desc="web videos", unit="video")
        for a, b in mine:
            self._write_web_shard(root, a, b, bar)
        if bar is not None:
            bar.close()
        if not all(self._shard_done(root, a, b) for a, b in shards):
            return None
        names = self.web_files(num_videos)
        paths = tuple(os.path.join(root, n) for n in names)
        if not all(os.path.exists(p) for p in paths):
            self._merge_web_shards(root, shards, *names)
        return paths[0], paths[1]

    def _merge_web_shards(self, root: str, shards: list[tuple[int, int]], web_name: str,
                          gt_name: str) -> None:
        """Join the shards' annotation files into one, holding one shard in memory at a time;
        ground truth first (the web file is the marker that both are complete)."""
        for name, which in ((gt_name, 1), (web_name, 0)):
            with atomic_open(os.path.join(root, name)) as f:
                f.write('{"database": {')
                sep = ""
                for a, b in shards:
                    db = read_json(self.web_shard_files(root, a, b)[which])["database"]
                    for vid, entry in db.items():
                        f.write(f"{sep}{json.dumps(vid)}: {json.dumps(entry)}")
                        sep = ", "
                f.write("}}")


def ensure_world(root: str | os.PathLike, config: SyntheticConfig | None = None,
                 progress: bool = False) -> dict[str, Any]:
    """Write the world at ``root`` unless already complete; return its ``world.json`` content."""
    world = SyntheticWorld(config)
    world.write(root, progress=progress)
    return read_json(os.path.join(os.fspath(root), "world.json"))
