"""Typed configuration of FEEL (omegaconf structured configs: YAML file + ``key=value`` overrides)."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import OmegaConf

from stovtal.utils.finite import check_finite

__all__ = [
    "ClusterConfig",
    "DataConfig",
    "FeelConfig",
    "IISConfig",
    "ModelConfig",
    "NamingConfig",
    "SyntheticSection",
    "TrainConfig",
    "load_config",
]


@dataclass
class SyntheticSection:
    """The built-in world (``stovtal.data.synthetic``) used when ``data.annotations`` is empty.

    Sizes only; the world's generative parameters stay at their documented defaults.
    FEEL clusters the unlabelled web videos (one action class per video, the unsupervised
    TAL setting) and is evaluated on the test videos.
    """

    seed: int = 0
    vocabulary: str = "thumos14"
    profile: str = "short"
    num_web: int = 300
    num_test: int = 100
    num_train: int = 1
    web_classes_per_video: list[float] = field(default_factory=lambda: [1.0])


@dataclass
class DataConfig:
    """User features (THUMOS14 / ActivityNet v1.2 conventions). Labels are read only to evaluate.

    ``annotations``: ActivityNet-style JSON with the training videos (``train_subset``; their
    labels, if any, are used for NMI only) and the evaluation videos (``eval_subset``).
    ``classes``: a shipped vocabulary name (``thumos14``, ``activitynet12``, ...) or a path to a
    text file with one class name per line.
    """

    annotations: str = ""
    feature_dir: str = ""
    train_subset: str = "validation"
    eval_subset: str = "test"
    classes: str = "thumos14"
    fps: float = 30.0
    feature_stride: int = 4
    num_frames: int = 16
    feat_dim: int | None = None
    synthetic: SyntheticSection = field(default_factory=SyntheticSection)


@dataclass
class ClusterConfig:
    """k-means (``num_clusters``, ``n_init`` restarts, ``max_iter``) and CCI (:mod:`stovtal.feel.cci`).

    ``k1``/``k2``: the k-reciprocal Jaccard distance's neighbourhood sizes; ``lam``: weight of
    the Jaccard term in the combined distance. ``lam=0`` switches CCI off (k-means labels and
    the Euclidean margin as confidence): the ablation. Up to ``dense_limit`` videos + centroids
    the dense Jaccard op is used, beyond it the top-``topk_m`` op.
    """

    num_clusters: int = 0  # 0: the number of classes of the vocabulary
    n_init: int = 10
    max_iter: int = 300
    k1: int = 20
    k2: int = 6
    lam: float = 0.5
    dense_limit: int = 4096
    topk_m: int = 100


@dataclass
class IISConfig:
    schedule: str = "variable"  # constant | variable
    p0: float = 0.5
    gamma: float = 2.0


@dataclass
class ModelConfig:
    embed_dim: int = 128
    dropout: float = 0.5
    r_easy: int = 5
    r_hard: int = 20
    m: int = 3
    M: int = 6
    easy_drop: float = 0.6
    tau: float = 0.07
    snico_weight: float = 0.01
    # CoLA puts a ReLU after the classifier conv (the THUMOS14 config does); on a held-out
    # synthetic world (seed 7) FEEL's average mAP@0.1:0.7 after 4 iterations is 0.046 with it
    # and 0.083 without (iterations 1-4: 0.064 0.076 0.070 0.046 / 0.072 0.072 0.074 0.083)
    cas_relu: bool = False
    border: str = "replicate"  # CoLA: "zero" (see stovtal.models.cola)
    action_reduction: str = "sum"  # CoLA: "mean" (see stovtal.models.cola)


@dataclass
class TrainConfig:
    # on the default synthetic run the final training loss per iteration is 0.16-0.27 after
    # 10 epochs (still falling) and 0.073-0.077 after 30; with true labels 1.38 / 0.080 and
    # 0.070 after 40: 30 epochs is where the loss levels off
    epochs: int = 30
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 5e-4
    grad_clip: float = 1.0
    max_seq_len: int = 512  # training crops (random) of longer videos, in snippets
    optimizer: str = "adamw"  # "adamw" (decoupled weight decay) | "adam" (L2 in the gradient; CoLA's)
    schedule: str = "cosine"  # "cosine" decay to 0 | "constant" (CoLA's)
    iterations: int = 0  # > 0: train this many steps (batches) instead of ``epochs`` (CoLA: 6000)


@dataclass
class LocalizeSection:
    """See :class:`stovtal.models.cola_inference.LocalizeConfig` (same fields)."""

    thresholds: list[float] = field(default_factory=lambda: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    class_threshold: float = 0.2
    use_actionness: bool = False
    actionness_thresholds: list[float] = field(default_factory=list)
    upscale: int = 1
    min_run: int = 1
    oic_lambda: float = 0.25
    oic_gamma: float = 0.2
    oic_margins: str = "round"
    nms_iou: float = 0.6
    max_segments: int = 100


@dataclass
class NamingConfig:
    """Name each discovered cluster by the nearest class name in a text-embedding vocabulary.

    ``vocab_npz``: ``.npz`` with ``names`` + ``embeddings`` in the feature space (e.g. CLIP text
    embeddings for CLIP video features); ``"auto"`` uses the synthetic world's ``vocab.npz``
    when running on it and disables naming otherwise; empty or null disables naming.
    With ``open_clip_model`` + ``open_clip_checkpoint`` the names of ``vocabulary`` are encoded
    by ``stovtal.models.text_encoders.OpenClipTextEncoder`` instead (for CLIP video features).
    """

    vocab_npz: str | None = "auto"
    # alternatively encode the names with an open_clip text tower (local checkpoint, no download)
    open_clip_model: str = ""
    open_clip_checkpoint: str = ""
    templates: str | None = None
    vocabulary: str = ""  # names to choose from: shipped vocabulary name or text file; "" = data classes


@dataclass
class FeelConfig:
    seed: int = 0
    iterations: int = 4
    device: str = "cpu"
    # intra-op CPU threads; CoLA's small convs gain little from more, and on a shared machine
    # spinning OpenMP workers cost far more than they bring (0: torch's default)
    num_threads: int = 1
    workdir: str = "runs/feel"
    tiou_thresholds: list[float] = field(default_factory=lambda: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    progress: bool = True
    data: DataConfig = field(default_factory=DataConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    iis: IISConfig = field(default_factory=IISConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    localize: LocalizeSection = field(default_factory=LocalizeSection)
    naming: NamingConfig = field(default_factory=NamingConfig)


def load_config(path: str | None = None, overrides: list[str] | None = None) -> FeelConfig:
    """Defaults <- YAML file (optional) <- ``key=value`` overrides; unknown keys are errors."""
    cfg = OmegaConf.structured(FeelConfig)
    if path:
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.load(path))
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: config file not found") from None
        except Exception as exc:
            raise ValueError(f"{path}: invalid FEEL config ({exc})") from None
    if overrides:
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
        except Exception as exc:
            raise ValueError(f"invalid override {overrides}: {exc}") from None
    check_finite(OmegaConf.to_container(cfg, resolve=True))  # before the value checks
    obj: FeelConfig = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    _validate(obj)
    return obj


def _validate(cfg: FeelConfig) -> None:
    if cfg.iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {cfg.iterations}")
    if cfg.iis.schedule not in ("constant", "variable"):
        raise ValueError(f"iis.schedule must be 'constant' or 'variable', got {cfg.iis.schedule!r}")
    if not 0.0 < cfg.iis.p0 <= 1.0:
        raise ValueError(f"iis.p0 must be in (0, 1], got {cfg.iis.p0}")
    if not 0.0 <= cfg.cluster.lam <= 1.0:
        raise ValueError(f"cluster.lam must be in [0, 1], got {cfg.cluster.lam}")
    if cfg.cluster.k2 < 1 or cfg.cluster.k1 < cfg.cluster.k2:
        raise ValueError(f"need 1 <= cluster.k2 <= cluster.k1, got {cfg.cluster.k1}, {cfg.cluster.k2}")
    if cfg.train.epochs < 1 or cfg.train.batch_size < 1 or cfg.train.lr <= 0:
        raise ValueError("train.epochs, train.batch_size and train.lr must be positive")
    if cfg.train.iterations < 0:
        raise ValueError(f"train.iterations must be >= 0, got {cfg.train.iterations}")
    if cfg.train.optimizer not in ("adamw", "adam"):
        raise ValueError(f"train.optimizer must be 'adamw' or 'adam', got {cfg.train.optimizer!r}")
    if cfg.train.schedule not in ("cosine", "constant"):
        raise ValueError(f"train.schedule must be 'cosine' or 'constant', got {cfg.train.schedule!r}")
    if cfg.model.border not in ("replicate", "zero"):
        raise ValueError(f"model.border must be 'replicate' or 'zero', got {cfg.model.border!r}")
    if cfg.model.action_reduction not in ("sum", "mean"):
        raise ValueError(f"model.action_reduction must be 'sum' or 'mean', got {cfg.model.action_reduction!r}")
    if cfg.localize.upscale < 1 or cfg.localize.min_run < 1:
        raise ValueError("localize.upscale and localize.min_run must be >= 1")
    if cfg.localize.oic_margins not in ("round", "cola"):
        raise ValueError(f"localize.oic_margins must be 'round' or 'cola', got {cfg.localize.oic_margins!r}")
    if not cfg.tiou_thresholds or any(not 0 < t <= 1 for t in cfg.tiou_thresholds):
        raise ValueError(f"tiou_thresholds must be in (0, 1], got {cfg.tiou_thresholds}")
    loc = cfg.localize
    for key in ("thresholds", "actionness_thresholds"):
        bad = [t for t in getattr(loc, key) if not 0 <= t <= 1]
        if bad or (key == "thresholds" and not loc.thresholds and not loc.use_actionness):
            raise ValueError(f"localize.{key}: every threshold must be in [0, 1] (on the min-max normalised CAS), got "
                             f"{list(getattr(loc, key))}")
    for key in ("class_threshold", "nms_iou"):
        if not 0 <= getattr(loc, key) <= 1:
            raise ValueError(f"localize.{key} must be in [0, 1], got {getattr(loc, key)}")
