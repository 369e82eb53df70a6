"""The configuration of ``python -m stovtal.selftrain``: :class:`stovtal.config.SelfTrainConfig`.

Defaults <- an optional YAML file (``--config``) <- ``key=value`` dotlist overrides, then
:func:`stovtal.config.validate` before any work starts: a negative threshold or a missing
feature directory is reported at once, naming the key.
"""

from __future__ import annotations

from stovtal.config import (
    ConfigError,
    DataConfig,
    EvalConfig,
    PseudoLabelConfig,
    RetrainConfig,
    SelfTrainConfig,
    TrainConfig,
    check_data_paths,
    fingerprint,
    load,
    retrain_train_overrides,
    to_dict,
    to_yaml,
    validate,
)

__all__ = [
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "PseudoLabelConfig",
    "RetrainConfig",
    "SelfTrainConfig",
    "TrainConfig",
    "check_data_paths",
    "fingerprint",
    "load_config",
    "retrain_train_overrides",
    "to_dict",
    "to_yaml",
    "validate",
]


def load_config(path: str | None = None, overrides: list[str] | None = None) -> SelfTrainConfig:
    """Defaults <- YAML ``path`` <- dotlist ``overrides`` (call :func:`validate` for the value
    checks, which also look at the data paths)."""
    return load(SelfTrainConfig, path, overrides)
