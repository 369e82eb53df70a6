"""Converters from other projects' checkpoints to stovtal's model format (``python -m stovtal.convert``)."""

from .actionformer import (
    ACTIONFORMER_DEFAULTS,
    ConversionError,
    config_from_actionformer_yaml,
    convert_state_dict,
    infer_config,
    load_actionformer_checkpoint,
)

__all__ = [
    "ACTIONFORMER_DEFAULTS",
    "ConversionError",
    "config_from_actionformer_yaml",
    "convert_state_dict",
    "infer_config",
    "load_actionformer_checkpoint",
]
