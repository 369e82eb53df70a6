"""Typed run configuration: dataclasses + YAML via omegaconf, with ``key=value`` overrides.

``load_config(path, overrides)`` merges, in order: the dataclass defaults, the
YAML file (``stovtal/configs/<name>.yaml`` may be given by name), and dotlist
overrides such as ``train.epochs=5 model.embed_dim=128``. Unknown keys and
wrongly typed values are errors; value checks run in the dataclasses'
``__post_init__``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from stovtal.engine.adapter import AdapterTrainConfig
from stovtal.engine.trainer import TrainConfig
from stovtal.models.classifier import ClassifierConfig
from stovtal.models.localizer import LocalizerConfig
from stovtal.utils.finite import check_finite

__all__ = ["Config", "DataConfig", "TextConfig", "config_path", "load_config", "to_yaml"]


@dataclass
class TextConfig:
    """Frozen text encoder of the open-vocabulary classifier.

    ``kind``: ``"npz"`` (precomputed embeddings, ``npz`` path; for the synthetic
    world its ``vocab.npz`` is used when ``npz`` is empty) or ``"open_clip"``
    (``model`` name + local ``checkpoint`` path, never downloaded; prompt
    ``templates``: None = the class name itself, or a template set name / list).
    """

    kind: str = "npz"
    npz: str = ""
    model: str = "ViT-B-16"
    checkpoint: str = ""
    templates: Any = None
    logit_scale: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("npz", "open_clip"):
            raise ValueError(f"text.kind must be 'npz' or 'open_clip', got {self.kind!r}")


@dataclass
class DataConfig:
    """Where the features and annotations are, and the class split.

    ``synthetic=True``: the built-in world, generated into (or reused from)
    ``world_dir`` with ``world`` overriding ``stovtal.data.synthetic.SyntheticConfig``
    fields; everything else (grid, classes, subsets, vocabulary) comes from it.
    Otherwise the user's own features: ``annotation_file``, ``feature_dir``, the
    feature grid (``fps``, ``feature_stride``, ``num_frames``), ``feat_dim``, and
    the classes: explicit ``base_classes``/``novel_classes`` lists, or a shipped
    ``vocabulary`` (e.g. ``thumos14``) with a ``split`` (``kinetics``, ``random75``,
    ``random50``) and ``split_seed``.
    """

    synthetic: bool = False
    world_dir: str = "runs/synthetic_world"
    world: dict[str, Any] = field(default_factory=dict)
    annotation_file: str = ""
    feature_dir: str = ""
    fps: float = 30.0
    feature_stride: int = 4
    num_frames: int = 16
    feat_dim: int = 512
    max_seq_len: int = 2304
    train_subset: str = "training"
    val_subset: str = ""
    test_subset: str = "testing"
    vocabulary: str = ""
    split: str = "kinetics"
    split_seed: int = 0
    base_classes: list[str] = field(default_factory=list)
    novel_classes: list[str] = field(default_factory=list)
    tiou_thresholds: list[float] = field(default_factory=lambda: [0.3, 0.4, 0.5, 0.6, 0.7])
    batch_size_eval: int = 8

    def __post_init__(self) -> None:
        if not self.synthetic:
            for name in ("annotation_file", "feature_dir"):
                if not getattr(self, name):
                    raise ValueError(f"data.{name} is required (or set data.synthetic=true)")
            if not self.vocabulary and not self.base_classes:
                raise ValueError("data.vocabulary (with data.split) or data.base_classes is required")
        if self.max_seq_len < 1 or self.batch_size_eval < 1:
            raise ValueError("data.max_seq_len and data.batch_size_eval must be >= 1")
        if not self.tiou_thresholds or not all(0 < t <= 1 for t in self.tiou_thresholds):
            raise ValueError(f"data.tiou_thresholds must be values in (0, 1], got {list(self.tiou_thresholds)}")


@dataclass
class Config:
    """A whole run: data, text encoder, localizer, classifier, optimisation, output directory.

    ``adapter``: training of the optional classifier adapter, used only when
    ``classifier.adapter=true`` (off by default: zero-shot classification).
    """

    data: DataConfig = field(default_factory=lambda: DataConfig(synthetic=True))
    text: TextConfig = field(default_factory=TextConfig)
    model: LocalizerConfig = field(default_factory=LocalizerConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    adapter: AdapterTrainConfig = field(default_factory=AdapterTrainConfig)
    workdir: str = "runs/base"
    num_threads: int = 0


def config_path(name_or_path: str) -> str:
    """A YAML path, or the name of a shipped config (``synthetic``, ``thumos14``, ...)."""
    if os.path.exists(name_or_path):
        return name_or_path
    ref = resources.files("stovtal").joinpath("configs", f"{name_or_path.removesuffix('.yaml')}.yaml")
    if ref.is_file():
        return str(ref)
    raise FileNotFoundError(f"{name_or_path}: config file not found (and not a shipped config name)")


def load_config(path: str | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults <- YAML file <- ``key=value`` overrides, validated into a :class:`Config`."""
    try:
        merged = OmegaConf.structured(Config)
        if path:
            p = config_path(path)
            try:
                loaded = OmegaConf.load(p)
            except Exception as exc:  # YAML syntax errors come from the yaml parser
                raise ValueError(f"{p}: not a valid YAML config ({exc})") from None
            try:
                merged = OmegaConf.merge(merged, loaded)
            except OmegaConfBaseException as exc:
                raise ValueError(f"{p}: {exc}") from None
        if overrides:
            bad = [o for o in overrides if "=" not in o]
            if bad:
                raise ValueError(f"overrides must look like key=value, got {bad}")
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(list(overrides)))
        check_finite(OmegaConf.to_container(merged, resolve=True))  # before the value checks
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        raise ValueError(f"bad configuration: {exc}") from None
    assert isinstance(cfg, Config)
    return cfg


def to_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
