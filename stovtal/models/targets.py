"""Anchor points of the feature pyramid and their training targets (ActionFormer's
``PointGenerator`` and ``label_points``).

All positions and segments here are in **feature-grid units** (snippet index
of the input sequence). Level l has stride ``2**l``: its step i sits at grid
position ``i * 2**l``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["assign_targets", "make_points"]


def make_points(
    level_lengths: Sequence[int],
    strides: Sequence[int],
    regression_ranges: Sequence[tuple[float, float]],
    device: torch.device | str = "cpu",
) -> Tensor:
    """Anchor points of all pyramid levels, concatenated level by level.

    Returns:
        ``[P, 4]`` float32 rows ``(position, range_lo, range_hi, stride)``,
        ``P = sum(level_lengths)``; ``range_hi`` may be ``inf``.
    """
    if not (len(level_lengths) == len(strides) == len(regression_ranges)):
        raise ValueError(
            f"need one stride and one regression range per level: {len(level_lengths)} levels, "
            f"{len(strides)} strides, {len(regression_ranges)} ranges"
        )
    rows = []
    for n, s, (lo, hi) in zip(level_lengths, strides, regression_ranges, strict=True):
        pos = torch.arange(n, dtype=torch.float32, device=device) * s
        rest = torch.tensor([lo, hi, s], dtype=torch.float32, device=device).expand(n, 3)
        rows.append(torch.cat([pos[:, None], rest], dim=1))
    return torch.cat(rows, dim=0)


def assign_targets(points: Tensor, gt_segments: Tensor, center_radius: float = 1.5) -> tuple[Tensor, Tensor]:
    """Label every anchor point of one video (ActionFormer's rule).

    A point is positive for a ground-truth segment when (a) it lies inside the
    segment and, if ``center_radius > 0``, within ``center_radius * stride`` of
    the segment centre (centre sampling), and (b) its larger distance to the
    segment's boundaries falls in the level's regression range. Among several
    such segments the shortest wins.

    Args:
        points: ``[P, 4]`` from :func:`make_points`.
        gt_segments: ``[N, 2]`` (start, end) in grid units; N may be 0.

    Returns:
        ``(cls_targets [P] float 0/1, reg_targets [P, 2])``; regression targets
        are the (start, end) distances divided by the level stride (zero for
        negatives).
    """
    if gt_segments.dim() != 2 or gt_segments.shape[-1] != 2:
        raise ValueError(f"gt_segments must be [N, 2], got {tuple(gt_segments.shape)}")
    num_pts = points.shape[0]
    if gt_segments.numel() == 0:
        return points.new_zeros(num_pts), points.new_zeros(num_pts, 2)
    if not torch.isfinite(gt_segments).all():
        raise ValueError("gt_segments contain NaN or inf")
    gt = gt_segments.to(points.dtype)
    pos, lo, hi, stride = points[:, 0:1], points[:, 1:2], points[:, 2:3], points[:, 3:4]
    start, end = gt[None, :, 0], gt[None, :, 1]  # [1, N]
    left = pos - start  # [P, N]
    right = end - pos
    if center_radius > 0:
        centre = 0.5 * (start + end)
        t_min = centre - stride * center_radius
        t_max = centre + stride * center_radius
        inside = torch.minimum(pos - torch.maximum(t_min, start), torch.minimum(t_max, end) - pos) > 0
    else:
        inside = torch.minimum(left, right) > 0
    reach = torch.maximum(left, right)
    in_range = (reach >= lo) & (reach <= hi)
    lengths = (end - start).expand(num_pts, -1).clone()
    lengths[~(inside & in_range)] = math.inf
    min_len, idx = lengths.min(dim=1)
    positive = torch.isfinite(min_len)
    reg = torch.stack([left.gather(1, idx[:, None])[:, 0], right.gather(1, idx[:, None])[:, 0]], dim=1)
    reg = reg / stride
    reg = torch.where(positive[:, None], reg, torch.zeros_like(reg))
    return positive.to(points.dtype), reg
