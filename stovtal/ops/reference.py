"""Pure-PyTorch reference implementations of every stovtal op.

They define the semantics the kernels are tested against and are the
baselines in ``benchmarks/``. Written for clarity, not speed; vectorised
where that is the natural PyTorch formulation.
"""

from __future__ import annotations

import torch
from torch import Tensor


def segment_iou(a: Tensor, b: Tensor, aligned: bool = False) -> Tensor:
    """Reference for :func:`stovtal.ops.segment_iou` (broadcasted tensor math)."""
    if aligned:
        s1, e1, s2, e2 = a[:, 0], a[:, 1], b[:, 0], b[:, 1]
    else:
        s1, e1 = a[:, 0, None], a[:, 1, None]
        s2, e2 = b[None, :, 0], b[None, :, 1]
    compute = torch.float32 if a.dtype in (torch.float16, torch.bfloat16) else a.dtype
    s1, e1, s2, e2 = (x.to(compute) for x in (s1, e1, s2, e2))
    len1 = (e1 - s1).clamp(min=0)
    len2 = (e2 - s2).clamp(min=0)
    inter = (torch.minimum(e1, e2) - torch.maximum(s1, s2)).clamp(min=0)
    union = len1 + len2 - inter
    iou = torch.where(union > 0, inter / torch.where(union > 0, union, 1), 0)
    iou = torch.where(torch.isnan(union), union, iou)
    return iou.to(a.dtype)


def _nms_compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _same_label(labels: Tensor | None, n: int, device: torch.device) -> Tensor:
    if labels is None:
        return torch.ones(n, n, dtype=torch.bool, device=device)
    return labels[:, None] == labels[None, :]


def temporal_nms(
    segments: Tensor,
    scores: Tensor,
    iou_threshold: float,
    labels: Tensor | None = None,
    max_keep: int = -1,
) -> Tensor:
    """Reference for :func:`stovtal.ops.temporal_nms`: pairwise IoU matrix + greedy loop."""
    if torch.isnan(scores).any():
        raise ValueError("temporal_nms: scores must not contain NaN")
    n = segments.shape[0]
    compute = _nms_compute_dtype(segments.dtype)
    seg = segments.to(compute)
    iou = segment_iou(seg, seg)
    suppresses = (iou > torch.tensor(iou_threshold, dtype=compute)) & _same_label(labels, n, seg.device)
    order = torch.sort(scores.to(compute), descending=True, stable=True).indices
    removed = torch.zeros(n, dtype=torch.bool, device=seg.device)
    keep = []
    for i in order.tolist():
        if removed[i]:
            continue
        keep.append(i)
        if 0 < max_keep <= len(keep):
            break
        removed |= suppresses[i]
    return torch.tensor(keep, dtype=torch.long, device=segments.device)


def soft_nms(
    segments: Tensor,
    scores: Tensor,
    iou_threshold: float,
    sigma: float,
    min_score: float,
    method: str,
    labels: Tensor | None = None,
    max_keep: int = -1,
    voting_threshold: float | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Reference for :func:`stovtal.ops.soft_nms`: the global greedy loop, literally."""
    if not torch.isfinite(scores).all():
        raise ValueError("soft_nms: scores must be finite")
    n = segments.shape[0]
    compute = _nms_compute_dtype(segments.dtype)
    seg = segments.to(compute)
    iou = segment_iou(seg, seg)
    same = _same_label(labels, n, seg.device)
    thr = torch.tensor(iou_threshold, dtype=compute)
    if method == "linear":
        weight = torch.where(iou >= thr, 1 - iou, torch.ones_like(iou))
    elif method == "gaussian":
        weight = torch.exp(-(iou * iou) / torch.tensor(sigma, dtype=compute))
    else:
        raise ValueError(f"unknown method {method!r}")
    weight = torch.where(same, weight, torch.ones_like(weight))
    current = scores.to(compute).clone()
    remaining = torch.ones(n, dtype=torch.bool, device=seg.device)
    min_score_t = torch.tensor(min_score, dtype=compute)
    selected, selected_scores = [], []
    while bool(remaining.any()) and (max_keep <= 0 or len(selected) < max_keep):
        masked = torch.where(remaining, current, torch.tensor(float("-inf"), dtype=compute))
        best_score = masked[remaining].max()
        i = int(torch.nonzero(remaining & (current == best_score))[0])
        selected.append(i)
        selected_scores.append(current[i].clone())
        remaining[i] = False
        affected = remaining & same[i]
        current = torch.where(affected, current * weight[i], current)
        remaining &= ~(affected & (current < min_score_t))
    index = torch.tensor(selected, dtype=torch.long, device=segments.device)
    out_scores = torch.stack(selected_scores) if selected else current.new_empty(0)
    out_segments = seg[index]
    if voting_threshold is not None and len(selected) > 0:
        w = (iou[index] >= voting_threshold) & same[index]
        w = w.to(compute) * scores.to(compute).clamp(min=0)[None, :]
        total = w.sum(dim=1, keepdim=True)
        voted = (w @ seg) / torch.where(total > 0, total, 1)
        out_segments = torch.where(total > 0, voted, out_segments)
    return out_segments.to(segments.dtype), out_scores.to(scores.dtype), index
