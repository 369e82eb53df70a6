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
