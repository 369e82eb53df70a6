"""Test oracle: CoLA's THUMOS14 inference (zhang-can/CoLA, ``core/utils.py``:
``get_pred_activations``, ``get_proposal_dict``, ``get_proposal_oic``), written from its rules
in plain NumPy loops; proposals before the NMS."""

from __future__ import annotations

import numpy as np


def _minmax(x: np.ndarray) -> np.ndarray:
    hi, lo = max(float(x.max()), 0.0), max(float(x.min()), 0.0)  # ReLU on the extremes
    delta = hi - lo if hi - lo > 0 else 1.0
    return np.clip((x - lo) / delta, 0.0, 1.0)


def _upscale(x: np.ndarray, scale: int) -> np.ndarray:
    t = len(x)
    out = []
    for j in range(t * scale):
        p = j / scale
        i0 = min(int(p), t - 2)
        out.append(x[i0] + (p - i0) * (x[i0 + 1] - x[i0]))
    return np.array(out)


def _groups(idx: list[int]) -> list[list[int]]:
    groups: list[list[int]] = []
    for i in idx:
        if groups and i == groups[-1][-1] + 1:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def cola_proposals(cas: np.ndarray, actionness: np.ndarray, video_scores: np.ndarray,
                   cas_thresholds, aness_thresholds, scale: int, fps: float,
                   lam: float = 0.25, gamma: float = 0.2, class_threshold: float = 0.2):
    """``cas [T, K]``, ``actionness [T]``, ``video_scores [K]`` -> list of
    ``(class, score, start s, end s)`` for 16-frame snippets at ``fps``."""
    pred = [int(c) for c in np.nonzero(video_scores >= class_threshold)[0]] or [int(video_scores.argmax())]
    t = cas.shape[0]
    t_factor = 16 * t / (scale * t * fps)
    wcam = {c: _upscale(_minmax(cas[:, c]), scale) for c in pred}
    aness = _upscale(_minmax(actionness), scale)
    out = []
    for signals, thresholds in ((wcam, cas_thresholds), ({c: aness for c in pred}, aness_thresholds)):
        for th in thresholds:
            for c in pred:
                sig = signals[c].copy()
                sig[sig < th] = 0
                for g in _groups([int(i) for i in np.nonzero(sig > 0)[0]]):
                    if len(g) < 2:
                        continue
                    inner = np.mean(wcam[c][g])
                    n = len(wcam[c])
                    os_ = max(0, int(g[0] - lam * len(g)))
                    oe = min(n - 1, int(g[-1] + lam * len(g)))
                    outer_idx = list(range(os_, g[0])) + list(range(g[-1] + 1, oe + 1))
                    outer = np.mean(wcam[c][outer_idx]) if outer_idx else 0.0
                    out.append((c, inner - outer + gamma * video_scores[c],
                                g[0] * t_factor, (g[-1] + 1) * t_factor))
    return out
