"""Random training crops of a video's snippet features (ActionFormer's rule).

A training video of ``T`` snippets is cut to a window of ``L`` snippets:

- ``L = max_seq_len`` when ``T > max_seq_len``;
- otherwise, with ``crop_ratio = (lo, hi)``, ``L`` is drawn uniformly from the integers
  ``[max(round(lo*T), 1), min(round(hi*T), T)]`` (Python's ``round``: halves go to the even
  integer); without ``crop_ratio``, or when the drawn ``L`` equals ``T``, the video is left whole
  (segments untouched, even those reaching past its ends).

The window start is drawn uniformly from ``[0, T - L]``, up to ``trials`` times, until at least
one segment is kept. A segment ``[s, e]`` (grid units) is kept when the part of it inside the
window widened by ``offset`` on both sides, ``[start - offset, start + L + offset]``, is at least
``trunc_thresh`` of its length; kept segments are clipped to that widened window. ``offset`` is
half a snippet's frame span in grid units (``num_frames / 2 / feature_stride``): a snippet's
features see frames up to that far beyond its grid position. When no start keeps a segment, the
last drawn start is used and no segment survives. A video without segments takes a single draw.
Zero- or negative-length segments are never kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["CropRule", "CropWindow", "crop_settings", "crop_window", "torch_randint", "window_length"]

#: ``randint(a, b)``: a uniform integer in ``[a, b]`` (both ends included).
RandInt = Callable[[int, int], int]


def torch_randint(generator: torch.Generator | None = None) -> RandInt:
    """``randint(a, b)`` drawing from ``generator`` (None: torch's global RNG)."""

    def draw(a: int, b: int) -> int:
        return int(torch.randint(a, b + 1, (1,), generator=generator))

    return draw


@dataclass(frozen=True)
class CropRule:
    """Settings of :func:`crop_window` (see the module docstring).

    max_seq_len: longest window, snippets (>= 1).
    crop_ratio: ``(lo, hi)`` with ``0 < lo <= hi <= 1``: also crop videos of at most
        ``max_seq_len`` snippets to ``lo..hi`` of their length; None: leave them whole.
    trunc_thresh: in ``(0, 1]``, fraction of a segment that must lie in the window to keep it.
    offset: widening of the window on each side when cutting segments, grid units (>= 0).
    trials: random starts tried to keep at least one segment (>= 1).
    """

    max_seq_len: int
    crop_ratio: tuple[float, float] | None = None
    trunc_thresh: float = 0.5
    offset: float = 0.0
    trials: int = 200

    def __post_init__(self) -> None:
        if self.max_seq_len < 1:
            raise ValueError(f"max_seq_len must be >= 1, got {self.max_seq_len}")
        if self.crop_ratio is not None:
            r = tuple(float(x) for x in self.crop_ratio)
            if len(r) != 2 or not (0 < r[0] <= r[1] <= 1):
                raise ValueError(f"crop_ratio must be [lo, hi] with 0 < lo <= hi <= 1, got {list(self.crop_ratio)}")
            object.__setattr__(self, "crop_ratio", r)
        if not 0 < self.trunc_thresh <= 1:
            raise ValueError(f"trunc_thresh must be in (0, 1], got {self.trunc_thresh}")
        if not self.offset >= 0:
            raise ValueError(f"offset must be >= 0, got {self.offset}")
        if self.trials < 1:
            raise ValueError(f"trials must be >= 1, got {self.trials}")


def crop_settings(data_cfg: Any) -> dict[str, Any]:
    """``crop_ratio`` (a float pair or None) and ``trunc_thresh`` of a data config section."""
    r = data_cfg.crop_ratio
    return {"crop_ratio": None if r is None else (float(r[0]), float(r[1])),
            "trunc_thresh": float(data_cfg.trunc_thresh)}


@dataclass(frozen=True)
class CropWindow:
    """A crop: snippets ``[start, stop)``; ``keep`` bool ``[N]`` selects the surviving segments
    and ``segments`` float64 ``[K, 2]`` are them, clipped, in grid units relative to ``start``."""

    start: int
    stop: int
    keep: np.ndarray
    segments: np.ndarray


def _cut(segs: np.ndarray, lo: float, hi: float, thresh: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    left = np.maximum(segs[:, 0], lo)
    right = np.minimum(segs[:, 1], hi)
    length = segs[:, 1] - segs[:, 0]
    inter = np.clip(right - left, 0.0, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        keep = (length > 0) & (inter / length >= thresh)
    return keep, left, right


def window_length(num_snippets: int, rule: CropRule, randint: RandInt) -> int:
    """Length ``L`` of the window for a video of ``num_snippets`` (draws only with ``crop_ratio``
    on a video of at most ``max_seq_len``); ``L == num_snippets`` means no crop."""
    T = num_snippets
    if T > rule.max_seq_len:
        return rule.max_seq_len
    if rule.crop_ratio is None:
        return T
    lo = max(round(rule.crop_ratio[0] * T), 1)
    hi = min(round(rule.crop_ratio[1] * T), T)
    # hi < lo only when hi * T rounds to 0 (a ratio under 0.5 / T): one snippet then
    return randint(lo, max(lo, hi))


def crop_window(num_snippets: int, segments: np.ndarray | Sequence[Sequence[float]], rule: CropRule,
                randint: RandInt) -> CropWindow:
    """The random training window of a video of ``num_snippets`` snippets.

    Args:
        num_snippets: ``T`` (>= 1).
        segments: float ``[N, 2]`` action segments in grid units (may reach past the video).
        rule: the crop settings.
        randint: the random draws (:func:`torch_randint`).
    """
    T = int(num_snippets)
    if T < 1:
        raise ValueError(f"num_snippets must be >= 1, got {T}")
    segs = np.asarray(segments, dtype=np.float64).reshape(-1, 2)
    L = window_length(T, rule, randint)
    if L >= T:
        return CropWindow(0, T, np.ones(len(segs), dtype=bool), segs.copy())
    start = 0
    keep = np.zeros(len(segs), dtype=bool)
    left = right = segs[:, 0]
    for _ in range(rule.trials if len(segs) else 1):
        start = randint(0, T - L)
        keep, left, right = _cut(segs, start - rule.offset, start + L + rule.offset, rule.trunc_thresh)
        if keep.any():
            break
    kept = np.stack([left[keep], right[keep]], axis=1) - start
    return CropWindow(start, start + L, keep, kept.reshape(-1, 2))
