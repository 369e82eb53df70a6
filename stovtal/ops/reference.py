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


def jaccard_distance(features: Tensor, k1: int, k2: int) -> Tensor:
    """Reference for :func:`stovtal.ops.jaccard_distance`: dense, float64, step by step.

    Written from the semantics of SpCL's ``compute_jaccard_distance`` (see
    ``stovtal/ops/jaccard.py``): exact squared Euclidean distances by direct
    differences, a stable sort for the ranking (ties to the lower index),
    Python sets for the k-reciprocal neighbourhoods, a dense ``[N, N]`` V and
    dense min-sums. O(N^2) memory and Python loops over rows: for tests.
    """
    if features.dim() == 3:
        n = features.shape[1]
        out = [jaccard_distance(f, k1, k2) for f in features]
        return torch.stack(out) if out else features.new_empty((0, n, n))
    x = features.detach().to(torch.float64)
    n = x.shape[0]
    dist = torch.empty(n, n, dtype=torch.float64)
    block = max(1, 2**22 // max(1, n * x.shape[1]))
    for r0 in range(0, n, block):
        dist[r0 : r0 + block] = ((x[r0 : r0 + block, None, :] - x[None]) ** 2).sum(-1)
    initial_rank = torch.sort(dist, dim=1, stable=True).indices[:, :k1]
    rank = initial_rank.tolist()

    def reciprocal(i: int, k: int) -> list[int]:
        return [j for j in rank[i][: k + 1] if i in rank[j][: k + 1]]

    k_half = round(k1 / 2)  # round half to even, as numpy.around
    r_full = [reciprocal(i, k1) for i in range(n)]
    r_half = [reciprocal(i, k_half) for i in range(n)]
    v = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        r = r_full[i]
        expansion = list(r)
        for c in r:
            h = r_half[c]
            if len(set(h) & set(r)) > 2 / 3 * len(h):
                expansion.extend(h)
        e = sorted(set(expansion))
        if e:
            v[i, e] = torch.softmax(-(2 - 2 * (x[e] @ x[i])), dim=0)
    if k2 != 1:
        v = v[initial_rank[:, :k2]].mean(1)
    s = torch.empty(n, n, dtype=torch.float64)
    block = max(1, 2**22 // max(1, n * n))
    for r0 in range(0, n, block):
        s[r0 : r0 + block] = torch.minimum(v[r0 : r0 + block, None, :], v[None]).sum(-1)
    return (1 - s / (2 - s)).clamp(min=0).to(features.dtype)


def jaccard_distance_topk(features: Tensor, k1: int, k2: int, m: int) -> tuple[Tensor, Tensor]:
    """Reference for :func:`stovtal.ops.jaccard_distance_topk`: the m smallest
    entries of every row of the dense reference, ties to the lower index."""
    dense = jaccard_distance(features, k1, k2)
    values, indices = torch.sort(dense, dim=-1, stable=True)
    return values[..., :m], indices[..., :m]


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
        # float64 from the compute-dtype IoU and sigma, rounded once (as the kernels)
        sigma64 = torch.tensor(sigma, dtype=compute).to(torch.float64)
        iou64 = iou.to(torch.float64)
        weight = torch.exp(-(iou64 * iou64) / sigma64).to(compute)
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
        # ActionFormer's seg_voting: score x IoU over the same-label IoU >= threshold
        w = (iou[index] >= voting_threshold) & same[index]
        w = w.to(compute) * scores.to(compute).clamp(min=0)[None, :] * iou[index]
        total = w.sum(dim=1, keepdim=True)
        voted = (w @ seg) / torch.where(total > 0, total, 1)
        out_segments = torch.where(total > 0, voted, out_segments)
    return out_segments.to(segments.dtype), out_scores.to(scores.dtype), index


def roi_align_1d(
    features: Tensor,
    rois: Tensor,
    output_size: int,
    spatial_scale: float = 1.0,
    sampling_ratio: int = 0,
    aligned: bool = True,
) -> Tensor:
    """Reference for :func:`stovtal.ops.roi_align_1d`: gather the two neighbours
    of every sample point, lerp, and average the samples of each bin.

    Differentiable in ``features`` through autograd. Rois are processed in
    chunks so that the gathered ``[samples, C]`` tensors stay bounded.
    """
    num_batch, channels, length = features.shape
    compute = torch.float32 if features.dtype in (torch.float16, torch.bfloat16) else features.dtype
    feats = features.to(compute).transpose(1, 2)  # [B, T, C]: a sample gathers one row
    r = rois.to(compute)
    out = []
    # Bound the gathered [samples, C] tensors of one chunk to ~2^24 elements.
    budget = max(1, (1 << 24) // max(1, channels))
    start_roi = 0
    grid, count, first, bin_size = _roi_bins(r, output_size, spatial_scale, sampling_ratio, aligned)
    samples_per_roi = grid * output_size
    while start_roi < r.shape[0]:
        stop = start_roi + 1
        total = int(samples_per_roi[start_roi])
        while stop < r.shape[0] and total + int(samples_per_roi[stop]) <= budget:
            total += int(samples_per_roi[stop])
            stop += 1
        sl = slice(start_roi, stop)
        out.append(
            _roi_align_1d_chunk(
                feats,
                r[sl, 0].long(),
                first[sl],
                bin_size[sl],
                grid[sl],
                count[sl],
                output_size,
                length,
            )
        )
        start_roi = stop
    if not out:
        return features.new_zeros((0, channels, output_size))
    return torch.cat(out).to(features.dtype)


def _roi_bins(
    rois: Tensor, output_size: int, spatial_scale: float, sampling_ratio: int, aligned: bool
):
    """Per roi: samples per bin, divisor, first bin start, bin size (torchvision's formulas)."""
    offset = 0.5 if aligned else 0.0
    first = rois[:, 1] * spatial_scale - offset
    width = rois[:, 2] * spatial_scale - offset - first
    if not aligned:
        width = width.clamp(min=1.0)
    bin_size = width / output_size
    if sampling_ratio > 0:
        grid = torch.full_like(bin_size, sampling_ratio, dtype=torch.long)
    else:
        grid = torch.ceil(bin_size).clamp(min=0).long()
    count = grid.clamp(min=1).to(rois.dtype)
    return grid, count, first, bin_size


def _roi_align_1d_chunk(feats, batch_index, first, bin_size, grid, count, output_size, length):
    num_rois = batch_index.shape[0]
    per_roi = grid * output_size
    roi = torch.repeat_interleave(torch.arange(num_rois, device=feats.device), per_roi)
    local = (
        torch.arange(roi.shape[0], device=feats.device) - (torch.cumsum(per_roi, 0) - per_roi)[roi]
    )
    g = grid[roi]
    bin_index, sample = local // g, local % g
    step = bin_size[roi]
    x = (first[roi] + bin_index.to(feats.dtype) * step) + (
        sample.to(feats.dtype) + 0.5
    ) * step / g.to(feats.dtype)
    valid = (x >= -1) & (x <= length)
    x = x.clamp(min=0)
    low = x.floor().long().clamp(max=length - 1)
    high = (low + 1).clamp(max=length - 1)
    frac = torch.where(low >= length - 1, torch.zeros_like(x), x - low.to(x.dtype))
    b = batch_index[roi]
    value = torch.lerp(feats[b, low], feats[b, high], frac[:, None])  # [S, C]
    value = torch.where(valid[:, None], value, torch.zeros_like(value))
    pooled = torch.zeros(
        num_rois * output_size, feats.shape[2], dtype=feats.dtype, device=feats.device
    )
    pooled = pooled.index_add(0, roi * output_size + bin_index, value)
    pooled = pooled.view(num_rois, output_size, -1) / count[:, None, None]
    return pooled.transpose(1, 2)
