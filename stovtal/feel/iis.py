"""Incremental instance selection (IIS) of FEEL: self-paced, per-cluster selection.

At iteration ``t`` (1-based, ``1 <= t <= i_max``) the fraction of the most confident videos
kept in every cluster is

    p_t = p0 + (1 - p0) * s((t - 1) / (i_max - 1))

with ``s(x) = x`` for the constant-speed schedule (linear growth, equal steps) and
``s(x) = x ** gamma`` (``gamma > 1``) for the variable-speed schedule, which grows slower in
the first iterations and faster later. Both start at ``p0`` and reach 1 at ``i_max``.
"""

from __future__ import annotations

import math

import torch

__all__ = ["selection_fraction", "select_per_cluster", "SCHEDULES"]

SCHEDULES = ("constant", "variable")


def selection_fraction(t: int, i_max: int, p0: float, mode: str = "constant", gamma: float = 2.0) -> float:
    """The fraction p_t in [p0, 1] of videos selected per cluster at iteration ``t``."""
    if mode not in SCHEDULES:
        raise ValueError(f"unknown IIS schedule {mode!r}; choose one of {SCHEDULES}")
    if i_max < 1 or not 1 <= t <= i_max:
        raise ValueError(f"need 1 <= t <= i_max, got t={t}, i_max={i_max}")
    if not 0.0 < p0 <= 1.0:
        raise ValueError(f"p0 must be in (0, 1], got {p0}")
    if mode == "variable" and gamma <= 1.0:
        raise ValueError(f"variable speed needs gamma > 1, got {gamma}")
    if i_max == 1:
        return 1.0
    x = (t - 1) / (i_max - 1)
    s = x if mode == "constant" else x**gamma
    return min(1.0, p0 + (1.0 - p0) * s)


def select_per_cluster(labels: torch.Tensor, confidence: torch.Tensor, fraction: float) -> torch.Tensor:
    """Boolean mask ``[N]``: in each cluster, the ``ceil(fraction * n_c)`` most confident videos.

    Ties in confidence go to the lower index. Every non-empty cluster keeps at least one video.
    """
    if labels.shape != confidence.shape or labels.dim() != 1:
        raise ValueError(f"labels and confidence must both be [N], got {tuple(labels.shape)}, {tuple(confidence.shape)}")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    mask = torch.zeros(labels.shape[0], dtype=torch.bool, device=labels.device)
    for c in torch.unique(labels).tolist():
        members = torch.nonzero(labels == c).flatten()
        keep = max(1, math.ceil(fraction * members.numel() - 1e-9))
        # stable sort on -confidence keeps the lower index first among ties
        order = torch.sort(-confidence[members].double(), stable=True).indices
        mask[members[order[:keep]]] = True
    return mask
