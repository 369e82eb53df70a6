"""Localizer-like NMS candidates shared by the NMS benchmarks (CPU and CUDA)."""

from __future__ import annotations

import math

import torch


def make_candidates(seed: int, n: int = 2000, num_labels: int = 20, duration: float = 1000.0):
    """Dense localizer-like candidates: jittered copies of ~15 actions (often under several
    labels, as top-k (position, class) pairs are) plus low-scoring background.

    Heavier overlap and higher scores than the base localizer's own candidates (median
    over 60 test videos: ~37 vs ~6 other candidates at IoU > 0.5 per candidate, median
    score 0.22 vs 0.007); :func:`base_model_candidates` has the base model's statistics.
    """
    g = torch.Generator().manual_seed(seed)
    num_actions = 15
    centre = torch.rand(num_actions, generator=g) * duration
    length = 2 + torch.rand(num_actions, generator=g) * 60
    action_label = torch.randint(0, num_labels, (num_actions,), generator=g)
    confidence = 0.3 + 0.7 * torch.rand(num_actions, generator=g)
    n_fg = int(0.8 * n)
    a = torch.randint(0, num_actions, (n_fg,), generator=g)
    jitter = torch.randn(n_fg, 2, generator=g) * 0.15 * length[a, None]
    fg = torch.stack([centre[a] - length[a] / 2, centre[a] + length[a] / 2], 1) + jitter
    other = torch.randint(0, num_labels, (n_fg,), generator=g)
    fg_label = torch.where(torch.rand(n_fg, generator=g) < 0.7, action_label[a], other)
    fg_score = confidence[a] * torch.rand(n_fg, generator=g)
    n_bg = n - n_fg
    start = torch.rand(n_bg, generator=g) * duration
    bg = torch.stack([start, start + 1 + torch.rand(n_bg, generator=g) * 80], 1)
    bg_score = 0.2 * torch.rand(n_bg, generator=g)
    seg = torch.cat([fg, bg]).sort(dim=1).values.contiguous()
    scores = torch.cat([fg_score, bg_score]).contiguous()
    labels = torch.cat([fg_label, torch.randint(0, num_labels, (n_bg,), generator=g)])
    return seg, scores, labels


def base_model_candidates(seed: int, n: int = 2000, num_labels: int = 20):
    """Pre-NMS candidates with the statistics of the synthetic world's base localizer.

    Fitted to the decoded candidates (``ActionLocalizer.decode``) of a base model trained
    on the default synthetic world (seed 0), 60 test videos: about 2 candidates per
    feature step, so a "video" of ``n / 2`` grid steps; about one action per 85 steps
    (lengths log-normal, median 31 steps); 60 % background candidates (short, median
    length ~5 steps, scores ~0.007), 33 % partial ones around an action (a fraction of
    its length, low scores) and 7 % close to an action (boundary jitter ~15 % of its
    length, scores up to ~0.9). Segments in grid units, scores in (0, 1), float32;
    ``labels`` uniform in ``[0, num_labels)`` (the base localizer is class-agnostic).
    """
    g = torch.Generator().manual_seed(seed)
    steps = n / 2.0
    num_actions = max(1, round(steps / 85))
    a_len = torch.exp(torch.randn(num_actions, generator=g, dtype=torch.float64) * 0.6 + math.log(31)).clamp(8, 150)
    a_start = torch.rand(num_actions, generator=g, dtype=torch.float64) * (steps - a_len).clamp(min=0)
    kind = torch.rand(n, generator=g, dtype=torch.float64)
    a = torch.randint(0, num_actions, (n,), generator=g)
    u = torch.rand(n, 4, generator=g, dtype=torch.float64)
    z = torch.randn(n, 3, generator=g, dtype=torch.float64)
    # background: anywhere, short, scores ~0.007
    bg_len = torch.exp(z[:, 0] * 0.55 + math.log(5.0)).clamp(min=2.0)
    bg_centre = u[:, 0] * steps
    bg_score = torch.exp(z[:, 1] * 0.5 + math.log(0.006))
    # partial: inside or around an action, a fraction of its length
    part_len = a_len[a] * (0.1 + 0.5 * u[:, 1])
    part_centre = a_start[a] + a_len[a] * (1.4 * u[:, 2] - 0.2)
    part_score = torch.exp(z[:, 1] * 1.0 + math.log(0.015))
    # close to an action: jittered boundaries, high scores
    jitter = z[:, :2] * 0.15 * a_len[a, None]
    good = torch.stack([a_start[a], a_start[a] + a_len[a]], 1) + jitter
    good_score = 0.9 * u[:, 3] ** 3
    is_bg = kind < 0.60
    is_part = (kind >= 0.60) & (kind < 0.93)
    centre = torch.where(is_bg, bg_centre, part_centre)
    length = torch.where(is_bg, bg_len, part_len)
    seg = torch.stack([centre - length / 2, centre + length / 2], 1)
    seg = torch.where((is_bg | is_part)[:, None], seg, good).sort(dim=1).values
    scores = torch.where(is_bg, bg_score, torch.where(is_part, part_score, good_score)).clamp(1e-3, 0.999)
    labels = torch.randint(0, num_labels, (n,), generator=g)
    return seg.float().contiguous(), scores.float().contiguous(), labels
