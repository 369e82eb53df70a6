"""STOV-TAL self-training: ``python -m stovtal.selftrain`` (see :mod:`stovtal.selftrain.stages`).

Stages: ``base`` -> ``pseudolabel`` -> ``retrain`` (Mean Teacher) -> ``eval`` -> ``report``.
This package only orchestrates: models and training come from ``stovtal.models`` /
``stovtal.engine``, data and metrics from ``stovtal.data`` / ``stovtal.eval``.
"""

from .config import ConfigError, SelfTrainConfig, load_config, validate
from .filtering import nested_subset, select_pseudo_labels, select_video, video_thresholds

__all__ = [
    "ConfigError",
    "SelfTrainConfig",
    "load_config",
    "nested_subset",
    "select_pseudo_labels",
    "select_video",
    "validate",
    "video_thresholds",
]
