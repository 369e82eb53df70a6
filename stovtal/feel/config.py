"""The configuration of ``python -m stovtal.feel``: :class:`stovtal.config.FeelConfig`."""

from __future__ import annotations

from stovtal.config import ClusterConfig, FeelConfig, IISConfig, NamingConfig, load, validate

__all__ = ["ClusterConfig", "FeelConfig", "IISConfig", "NamingConfig", "load_config"]


def load_config(path: str | None = None, overrides: list[str] | None = None) -> FeelConfig:
    """Defaults <- YAML file (optional) <- ``key=value`` overrides, validated; unknown keys are errors."""
    cfg = load(FeelConfig, path, overrides)
    validate(cfg)
    return cfg
