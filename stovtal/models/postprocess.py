"""Post-processing of detections: soft-NMS with boundary voting, grid units <-> seconds."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

import stovtal.ops as ops

__all__ = ["NMSConfig", "grid_to_seconds", "nms_with_voting", "seconds_to_grid"]


@dataclass
class NMSConfig:
    """Soft-NMS settings (the authors' THUMOS-style defaults).

    ``method``: ``"gaussian"`` (decay ``exp(-iou^2 / sigma)``) or ``"linear"``
    (decay ``1 - iou`` when ``iou >= iou_threshold``). ``max_keep``: at most this
    many segments per video (<= 0: all). ``voting_threshold``: after NMS each
    kept segment's boundaries become the (score x IoU)-weighted mean of the
    pre-NMS segments (same label) with IoU >= this value with it (ActionFormer's
    seg_voting); <= 0 disables voting.
    """

    method: str = "gaussian"
    iou_threshold: float = 0.1
    sigma: float = 0.5
    min_score: float = 0.001
    max_keep: int = 200
    voting_threshold: float = 0.7

    def __post_init__(self) -> None:
        if self.method not in ("gaussian", "linear"):
            raise ValueError(f"NMS method must be 'gaussian' or 'linear', got {self.method!r}")
        if not 0.0 <= self.iou_threshold <= 1.0:
            raise ValueError(f"NMS iou_threshold must be in [0, 1], got {self.iou_threshold}")
        if self.sigma <= 0:
            raise ValueError(f"NMS sigma must be > 0, got {self.sigma}")
        if not 0.0 <= self.min_score < 1.0:  # a score floor; >= 1 would keep nothing
            raise ValueError(f"NMS min_score must be in [0, 1), got {self.min_score}")
        if self.voting_threshold > 1.0:
            raise ValueError(f"NMS voting_threshold must be <= 1, got {self.voting_threshold}")


def nms_with_voting(
    segments: Tensor, scores: Tensor, cfg: NMSConfig, labels: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Soft-NMS (per label when ``labels`` is given) with boundary voting (``stovtal.ops.soft_nms``).

    Args:
        segments: ``[N, 2]`` float, any unit; scores ``[N]``; labels int64 ``[N]`` or None.

    Returns:
        ``(segments [K, 2], scores [K], indices [K])`` in selection order (descending
        decayed score), ``indices`` pointing into the inputs.
    """
    if segments.shape[0] == 0:
        return segments.new_zeros(0, 2), scores.new_zeros(0), torch.zeros(0, dtype=torch.long, device=segments.device)
    scores = scores.to(segments.dtype)
    return ops.soft_nms(
        segments.contiguous(), scores.contiguous(), cfg.iou_threshold, cfg.sigma, cfg.min_score, cfg.method,
        labels=labels, max_keep=cfg.max_keep,
        voting_threshold=cfg.voting_threshold if cfg.voting_threshold > 0 else None,
    )


def grid_to_seconds(segments: Tensor, fps: float, stride: float, num_frames: float) -> Tensor:
    """Feature-grid units (snippet index, centre-aligned) -> seconds: ``(g * stride + num_frames / 2) / fps``."""
    return (segments * stride + 0.5 * num_frames) / fps


def seconds_to_grid(segments: Tensor, fps: float, stride: float, num_frames: float) -> Tensor:
    """Seconds -> feature-grid units: ``(t * fps - num_frames / 2) / stride`` (inverse of :func:`grid_to_seconds`)."""
    return (segments * fps - 0.5 * num_frames) / stride
