"""Which frames make up each snippet.

The video is first resampled to the target frame rate ``fps``: target frame
``k`` (time ``k / fps`` s) shows the native frame on screen at that time,
``floor(k * native_fps / fps)``. A video of ``n`` native frames lasts
``n / native_fps`` s and has ``ceil(n * fps / native_fps)`` target frames.

Snippet ``i`` covers target frames ``[i * stride, i * stride + num_frames)``
(the feature-file contract), so a video of ``N`` target frames has
``(N - num_frames) // stride + 1`` snippets; the tail shorter than ``stride``
is not covered. A video shorter than one snippet (``0 < N < num_frames``)
still gets one snippet, padded by repeating its last frame.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["num_target_frames", "num_snippets", "target_to_native", "snippet_frame_indices"]

_EPS = 1e-6


def _check_rate(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def num_target_frames(n_native: int, native_fps: float, fps: float) -> int:
    """Frames of the video after resampling from ``native_fps`` to ``fps``."""
    _check_rate("native_fps", native_fps)
    _check_rate("fps", fps)
    if n_native < 0:
        raise ValueError(f"n_native must be >= 0, got {n_native}")
    return max(0, math.ceil(n_native * fps / native_fps - _EPS))


def num_snippets(n_target: int, stride: int, num_frames: int) -> int:
    """T for a video of ``n_target`` frames (0 only for an empty video)."""
    if stride < 1 or num_frames < 1:
        raise ValueError(f"stride and num_frames must be >= 1, got {stride}, {num_frames}")
    if n_target <= 0:
        return 0
    if n_target < num_frames:
        return 1
    return (n_target - num_frames) // stride + 1


def target_to_native(k: np.ndarray, n_native: int, native_fps: float, fps: float) -> np.ndarray:
    """Native frame index shown at target frame ``k`` (int64, clamped to the video)."""
    k = np.asarray(k, dtype=np.int64)
    j = np.floor(k * (native_fps / fps) + _EPS).astype(np.int64)
    return np.clip(j, 0, n_native - 1)


def snippet_frame_indices(
    snippets: np.ndarray | range,
    n_native: int,
    native_fps: float,
    fps: float,
    stride: int,
    num_frames: int,
) -> np.ndarray:
    """Native frame indices of ``snippets``: int64 ``[len(snippets), num_frames]``."""
    n_target = num_target_frames(n_native, native_fps, fps)
    if n_target == 0:
        raise ValueError("video has no frames")
    s = np.asarray(snippets, dtype=np.int64).reshape(-1, 1)
    k = s * stride + np.arange(num_frames, dtype=np.int64)[None, :]
    k = np.minimum(k, n_target - 1)  # only the padded single snippet of a short video hits this
    return target_to_native(k, n_native, native_fps, fps)
