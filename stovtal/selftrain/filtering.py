"""Pseudo-label selection: candidates (segments + actionness) -> pseudo-labels.

The localizer's detections of one unlabelled video (after its soft-NMS) are *candidates*.
Selection, per video, in this order:

1. clip to ``[0, duration]`` seconds and drop empty segments;
2. sort by actionness (descending; ties by original order);
3. optional de-duplication: greedy hard NMS (``stovtal.ops.temporal_nms``), a segment is
   removed if its tIoU with a better kept one is > ``dedup_iou`` (0.5 by default);
4. keep those with actionness >= the video's threshold, but at least ``min_num`` (the best
   ones, even below the threshold) and at most ``max_num`` (<= 0: no limit).

Thresholds (:func:`video_thresholds`): ``fixed`` one value; ``per_video`` ``ratio`` x the video's
best actionness (floored by the fixed value); ``quantile`` one value for the whole set, the
``q``-quantile of all candidates' actionness (floored by the fixed value).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch

__all__ = [
    "Candidates",
    "nested_subset",
    "num_selected",
    "prepare_candidates",
    "select_pseudo_labels",
    "select_video",
    "video_thresholds",
]

# per video: {"duration": s, "fps": f?, "segments": [[s, e], ...] seconds, "actionness": [...]}
Candidates = Mapping[str, Mapping[str, Any]]


def nested_subset(video_ids: Iterable[str], n: int | None, seed: int) -> list[str]:
    """``n`` videos drawn with ``seed`` (all if ``n`` is None or >= the pool), sorted.

    Each id is ranked by ``sha256(seed, id)`` and the ``n`` best-ranked are taken, so subsets of
    one seed are nested (``n=5000`` is inside ``n=10000``) and do not change when other videos
    join the pool. Input order does not matter; duplicates are an error.
    """
    ids = list(video_ids)
    if len(set(ids)) != len(ids):
        raise ValueError("nested_subset: duplicate video ids")
    if n is not None and n < 0:
        raise ValueError(f"nested_subset: n must be >= 0, got {n}")
    if n is None or n >= len(ids):
        return sorted(ids)

    def rank(v: str) -> tuple[bytes, str]:
        return hashlib.sha256(f"{seed}\x00{v}".encode()).digest(), v

    return sorted(sorted(ids, key=rank)[:n])


def _clip_sort_dedup(segments: np.ndarray, scores: np.ndarray, duration: float, dedup_iou: float | None
                     ) -> tuple[np.ndarray, np.ndarray]:
    if segments.size == 0:
        return np.zeros((0, 2)), np.zeros(0)
    segs = np.clip(segments.astype(np.float64), 0.0, float(duration))
    ok = segs[:, 1] > segs[:, 0]
    segs, sc = segs[ok], scores.astype(np.float64)[ok]
    order = np.argsort(-sc, kind="stable")
    segs, sc = segs[order], sc[order]
    if dedup_iou is not None and len(sc) > 1:
        from stovtal.ops import temporal_nms

        keep = temporal_nms(torch.from_numpy(segs), torch.from_numpy(sc), float(dedup_iou)).numpy()
        keep = np.sort(keep)  # keep the descending-score order (ties: original order)
        segs, sc = segs[keep], sc[keep]
    return segs, sc


def prepare_candidates(candidates: Candidates, dedup_iou: float | None = None
                       ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per video the clipped, sorted (and optionally de-duplicated) ``(segments, actionness)``."""
    out = {}
    for vid in sorted(candidates):
        segs, act, dur = _check_video(vid, candidates[vid])
        out[vid] = _clip_sort_dedup(segs, act, dur, dedup_iou)
    return out


def _check_video(vid: str, entry: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, float]:
    segs = np.asarray(entry["segments"], dtype=np.float64).reshape(-1, 2)
    act = np.asarray(entry["actionness"], dtype=np.float64).reshape(-1)
    if segs.shape[0] != act.shape[0]:
        raise ValueError(f"video {vid!r}: {segs.shape[0]} segments but {act.shape[0]} actionness values")
    if not (np.isfinite(segs).all() and np.isfinite(act).all()):
        raise ValueError(f"video {vid!r}: candidates contain NaN or inf")
    duration = float(entry["duration"])
    if not duration > 0:
        raise ValueError(f"video {vid!r}: duration must be > 0, got {duration}")
    return segs, act, duration


def select_video(segments: np.ndarray, actionness: np.ndarray, duration: float, threshold: float,
                 min_num: int = 1, max_num: int = 0, dedup_iou: float | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Pseudo-labels of one video (see the module docstring).

    Args:
        segments: ``[K, 2]`` seconds; actionness ``[K]`` in [0, 1]; duration seconds.
        threshold: keep actionness >= this; min_num / max_num: at least / at most this many.
        dedup_iou: tIoU of the optional de-duplication (None: off).

    Returns:
        ``(segments [M, 2] float64 seconds, actionness [M])`` by descending actionness.
    """
    segs, sc = _clip_sort_dedup(np.asarray(segments).reshape(-1, 2), np.asarray(actionness).reshape(-1),
                                duration, dedup_iou)
    n = num_selected(sc, threshold, min_num, max_num)
    return segs[:n], sc[:n]


def num_selected(sorted_actionness: np.ndarray, threshold: float, min_num: int, max_num: int) -> int:
    """How many of the (descending) actionness values are kept: those >= ``threshold``, at least
    ``min_num`` (if available), at most ``max_num`` (<= 0: no limit)."""
    n = int((sorted_actionness >= threshold).sum())
    n = max(n, min(min_num, len(sorted_actionness)))
    if max_num > 0:
        n = min(n, max_num)
    return n


def video_thresholds(candidates: Candidates, mode: str, threshold: float, ratio: float = 0.5,
                     quantile: float = 0.5, dedup_iou: float | None = None) -> dict[str, float]:
    """The actionness threshold of every video under ``mode`` (see the module docstring)."""
    if mode == "fixed":
        return {vid: float(threshold) for vid in candidates}
    if mode == "per_video":
        out = {}
        for vid, entry in candidates.items():
            _, act, _ = _check_video(vid, entry)
            best = float(act.max()) if act.size else 0.0
            out[vid] = max(float(threshold), ratio * best)
        return out
    if mode == "quantile":
        pools = []
        for vid, entry in candidates.items():
            segs, act, dur = _check_video(vid, entry)
            pools.append(_clip_sort_dedup(segs, act, dur, dedup_iou)[1])
        allv = np.concatenate(pools) if pools else np.zeros(0)
        q = float(np.quantile(allv, quantile)) if allv.size else 0.0
        t = max(float(threshold), q)
        return {vid: t for vid in candidates}
    raise ValueError(f"unknown threshold mode {mode!r}; choose from fixed, per_video, quantile")


def select_pseudo_labels(candidates: Candidates, mode: str = "fixed", threshold: float = 0.05,
                         min_num: int = 1, max_num: int = 0, dedup_iou: float | None = None,
                         ratio: float = 0.5, quantile: float = 0.5, label: str = "action",
                         subset: str = "pseudo") -> dict[str, Any]:
    """Candidates of many videos -> a pseudo-label database (annotation format + actionness).

    Returns ``{"database": {vid: {"subset", "duration", "fps"?, "annotations": [{"segment",
    "label", "actionness"}]}}}`` with videos in sorted order. Videos left without a pseudo-label
    (possible only with ``min_num=0``) are kept with empty annotations.
    """
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    if min_num < 0:
        raise ValueError(f"min_num must be >= 0, got {min_num}")
    thr = video_thresholds(candidates, mode, threshold, ratio, quantile, dedup_iou)
    db: dict[str, Any] = {}
    for vid in sorted(candidates):
        entry = candidates[vid]
        segs, act, duration = _check_video(vid, entry)
        s, a = select_video(segs, act, duration, thr[vid], min_num, max_num, dedup_iou)
        info: dict[str, Any] = {"subset": subset, "duration": duration}
        if entry.get("fps") is not None:
            info["fps"] = float(entry["fps"])
        info["annotations"] = [
            {"segment": [float(x), float(y)], "label": label, "actionness": float(z)}
            for (x, y), z in zip(s.tolist(), a.tolist(), strict=True)
        ]
        db[vid] = info
    return {"database": db}
