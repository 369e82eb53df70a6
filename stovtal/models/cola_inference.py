"""CoLA inference: class activations -> segments in seconds.

For each video, the classes whose video-level score is at least ``class_threshold`` (or the
best class if none is) are localised. For such a class c, the class activation ``cas[:, c]``,
min-max normalised per video and linearly upsampled ``upscale`` times (CoLA: 24; the last
``upscale - 1`` points extrapolate the last step), is thresholded at every value in
``thresholds``; with ``use_actionness`` the normalised, upsampled actionness is thresholded too,
at ``actionness_thresholds`` (empty: ``thresholds``), and its proposals are given class c, as
CoLA does. Each run of ``min_run`` or more consecutive points at or above a threshold (and
above 0) becomes a proposal, scored on the class's CAS with the outer-inner contrast of
CoLA/AutoLoc

    score = mean(CAS inside) - mean(CAS in the margins) + gamma * video_score[c]

where the margins extend ``oic_lambda`` x length on either side: rounded, at least 1 point, on
both sides (``oic_margins="round"``) or as CoLA computes them (``"cola"``: the left end
``int(first - lambda * length)``, the right end ``int(last + lambda * length)``, clipped to
the video). Proposals of the same class are de-duplicated with ``stovtal.ops.temporal_nms``.

Times: snippet i covers frames ``[i * stride, i * stride + num_frames)`` and is represented by
the ``stride`` frames around its centre, so a run of upsampled points ``[a, b]`` spans snippet
positions ``[a / upscale, (b + 1) / upscale)`` and the seconds
``(position * stride + (num_frames - stride) / 2) / fps``, clipped to ``[0, duration]``. With
``num_frames == stride`` (CoLA's THUMOS14 features) these are CoLA's times.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["LocalizeConfig", "localize_video", "video_proposals", "runs_above", "upsample"]


@dataclass
class LocalizeConfig:
    thresholds: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    class_threshold: float = 0.2
    # CoLA's actionness (sum of the CAS over classes) is trained only through the snippet
    # mining, and its class-agnostic proposals, given every chosen class, cost mAP: CoLA
    # trained with true video labels on a held-out synthetic world (seed 7, 30 epochs) scores
    # 0.642 average mAP@0.1:0.7 from the CAS alone and 0.600 with actionness proposals added
    use_actionness: bool = False
    actionness_thresholds: tuple[float, ...] = ()
    upscale: int = 1
    min_run: int = 1
    oic_lambda: float = 0.25
    oic_gamma: float = 0.2
    oic_margins: str = "round"
    nms_iou: float = 0.6
    max_segments: int = 100


def runs_above(signal: torch.Tensor, threshold: float) -> torch.Tensor:
    """Maximal runs of ``signal`` ``[T]`` strictly above ``threshold`` -> ``[R, 2]`` int64
    (first, last) snippet indices, inclusive."""
    above = (signal > threshold).to(torch.int8)
    padded = torch.nn.functional.pad(above, (1, 1))
    diff = padded[1:] - padded[:-1]
    starts = torch.nonzero(diff == 1).flatten()
    ends = torch.nonzero(diff == -1).flatten() - 1
    return torch.stack([starts, ends], 1)


def upsample(signal: torch.Tensor, scale: int) -> torch.Tensor:
    """``signal`` ``[T]`` at the ``T * scale`` points ``j / scale`` (linear interpolation, the
    points past ``T - 1`` extrapolated from the last step, as SciPy's ``interp1d`` with
    ``fill_value="extrapolate"``)."""
    t = signal.shape[0]
    if scale == 1:
        return signal
    if t == 1:
        return signal.repeat(scale)
    x = torch.arange(t * scale, dtype=torch.float64) / scale
    i0 = x.floor().long().clamp(max=t - 2)
    sig = signal.double()
    out = sig[i0] + (x - i0.double()) * (sig[i0 + 1] - sig[i0])
    return out.to(signal.dtype)


def _minmax(x: torch.Tensor) -> torch.Tensor:
    lo, hi = x.min(), x.max()
    if hi - lo <= 1e-12:
        return torch.zeros_like(x)
    return (x - lo) / (hi - lo)


def _runs(mask: torch.Tensor) -> torch.Tensor:
    """Maximal runs of True in ``mask`` ``[T]`` -> ``[R, 2]`` (first, last), inclusive."""
    padded = torch.nn.functional.pad(mask.to(torch.int8), (1, 1))
    diff = padded[1:] - padded[:-1]
    return torch.stack([torch.nonzero(diff == 1).flatten(), torch.nonzero(diff == -1).flatten() - 1], 1)


def _oic_scores(signal: torch.Tensor, runs: torch.Tensor, lam: float, margins: str) -> torch.Tensor:
    t = signal.shape[0]
    csum = torch.nn.functional.pad(signal.double().cumsum(0), (1, 0))
    s, e = runs[:, 0], runs[:, 1] + 1  # [s, e) half-open
    length = (e - s).double()
    inner = (csum[e] - csum[s]) / length
    if margins == "cola":
        os_ = (s.double() - lam * length).trunc().long().clamp_min(0)
        oe = ((e - 1).double() + lam * length).trunc().long().clamp_max(t - 1) + 1
    else:
        margin = torch.clamp((lam * length).round().long(), min=1)
        os_, oe = (s - margin).clamp_min(0), (e + margin).clamp_max(t)
    outer_sum = (csum[s] - csum[os_]) + (csum[oe] - csum[e])
    outer_len = ((s - os_) + (oe - e)).double()
    outer = torch.where(outer_len > 0, outer_sum / outer_len.clamp_min(1), torch.zeros_like(outer_sum))
    return (inner - outer).to(signal.dtype)


def video_proposals(
    cas: torch.Tensor,
    actionness: torch.Tensor,
    video_scores: torch.Tensor,
    *,
    fps: float,
    stride: float,
    num_frames: float,
    duration: float,
    cfg: LocalizeConfig | None = None,
    classes: Sequence[int] | None = None,
) -> dict[str, torch.Tensor]:
    """All proposals of one video before NMS (see the module docstring): ``segments``
    ``[S, 2]`` (seconds), ``scores`` ``[S]``, ``labels`` ``[S]`` int64, in the order made
    (class, CAS thresholds then actionness thresholds, runs in time order).

    Args: ``cas`` ``[T, K]``, ``actionness`` ``[T]`` and ``video_scores`` ``[K]`` of the
    valid snippets; ``fps``, ``stride`` and ``num_frames`` place snippet ``i`` at frames
    ``i * stride + (num_frames - stride) / 2`` (seconds: / ``fps``), clipped to ``[0,
    duration]``; ``cfg`` the thresholds and scoring; ``classes`` overrides the class choice
    (default: the classes with ``video_scores >= cfg.class_threshold``, else the top one).
    """
    cfg = cfg or LocalizeConfig()
    if cas.dim() != 2 or actionness.shape != cas.shape[:1] or video_scores.shape != cas.shape[1:]:
        raise ValueError(
            f"localize_video: need cas [T, K], actionness [T], video_scores [K]; got "
            f"{tuple(cas.shape)}, {tuple(actionness.shape)}, {tuple(video_scores.shape)}"
        )
    if fps <= 0 or stride <= 0 or duration <= 0:
        raise ValueError(f"localize_video: fps, stride and duration must be > 0, got {fps}, {stride}, {duration}")
    if cfg.upscale < 1 or cfg.min_run < 1 or cfg.oic_margins not in ("round", "cola"):
        raise ValueError(f"localize_video: need upscale >= 1, min_run >= 1, oic_margins 'round' or "
                         f"'cola'; got {cfg.upscale}, {cfg.min_run}, {cfg.oic_margins!r}")
    cas, actionness, video_scores = cas.detach().float().cpu(), actionness.detach().float().cpu(), video_scores.detach().float().cpu()
    if classes is None:
        chosen = torch.nonzero(video_scores >= cfg.class_threshold).flatten().tolist()
        if not chosen:
            chosen = [int(video_scores.argmax())]
    else:
        chosen = list(classes)
    scale = cfg.upscale
    aness = upsample(_minmax(actionness), scale)
    a_thresholds = tuple(cfg.actionness_thresholds) or tuple(cfg.thresholds)
    offset = (num_frames - stride) / 2
    segs, scores, labels = [], [], []
    for c in chosen:
        wcas = upsample(_minmax(cas[:, c]), scale)
        tries = [(wcas, th) for th in cfg.thresholds]
        if cfg.use_actionness:
            tries += [(aness, th) for th in a_thresholds]
        for sig, th in tries:
            runs = _runs((sig >= th) & (sig > 0))
            runs = runs[runs[:, 1] - runs[:, 0] + 1 >= cfg.min_run]
            if runs.numel() == 0:
                continue
            sc = _oic_scores(wcas, runs, cfg.oic_lambda, cfg.oic_margins) + cfg.oic_gamma * video_scores[c]
            pos = torch.stack([runs[:, 0], runs[:, 1] + 1], 1).double() / scale
            seg = ((pos * stride + offset) / fps).clamp(0.0, duration).float()
            segs.append(seg)
            scores.append(sc)
            labels.append(torch.full((runs.shape[0],), c, dtype=torch.long))
    if not segs:
        return {"segments": torch.zeros(0, 2), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}
    return {"segments": torch.cat(segs), "scores": torch.cat(scores), "labels": torch.cat(labels)}


def localize_video(cas: torch.Tensor, actionness: torch.Tensor, video_scores: torch.Tensor,
                   **kwargs: Any) -> dict[str, torch.Tensor]:
    """Segments of one video: the proposals of :func:`video_proposals` (same arguments:
    ``cas`` ``[T, K]``, ``actionness`` ``[T]``, ``video_scores`` ``[K]`` of the valid snippets,
    the keyword-only grid, ``cfg`` and ``classes``) after per-class NMS at ``cfg.nms_iou``.

    Returns ``segments`` ``[S, 2]`` (seconds), ``scores`` ``[S]``, ``labels`` ``[S]`` int64,
    sorted by descending score, at most ``cfg.max_segments``.
    """
    from stovtal.ops import temporal_nms

    cfg = kwargs.get("cfg") or LocalizeConfig()
    p = video_proposals(cas, actionness, video_scores, **kwargs)
    seg, sc, lab = p["segments"], p["scores"], p["labels"]
    if seg.shape[0] == 0:
        return p
    keep = temporal_nms(seg.contiguous(), sc.contiguous(), cfg.nms_iou, labels=lab, max_keep=cfg.max_segments)
    return {"segments": seg[keep], "scores": sc[keep], "labels": lab[keep]}
