"""Training and inference machinery shared by base training and self-training."""

from .checkpoint import load_checkpoint, save_checkpoint
from .ema import ModelEMA
from .inference import classify_segments, predict_segments, segments_to_json
from .schedule import warmup_cosine
from .seed import epoch_seed, seed_everything
from .trainer import (
    TrainConfig,
    Trainer,
    TrainerHook,
    localizer_loss,
    move_to_device,
    resolve_device,
)

__all__ = [
    "ModelEMA",
    "TrainConfig",
    "Trainer",
    "TrainerHook",
    "classify_segments",
    "epoch_seed",
    "load_checkpoint",
    "localizer_loss",
    "move_to_device",
    "predict_segments",
    "resolve_device",
    "save_checkpoint",
    "seed_everything",
    "segments_to_json",
    "warmup_cosine",
]
