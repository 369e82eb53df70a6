"""Localizer-like NMS candidates shared by the NMS benchmarks (CPU and CUDA)."""

from __future__ import annotations

import torch


def make_candidates(seed: int, n: int = 2000, num_labels: int = 20, duration: float = 1000.0):
    """Localizer-like candidates: jittered copies of ~15 actions (often under several
    labels, as top-k (position, class) pairs are) plus low-scoring background."""
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
