"""Random temporal-NMS candidates shared by the ops tests."""

import torch


def clustered_candidates(n, generator, num_labels=None, dtype=torch.float64):
    """Candidates around a few "actions" (so that suppression happens), plus noise."""
    centres = torch.rand(8, generator=generator, dtype=dtype) * 100
    widths = 2 + torch.rand(8, generator=generator, dtype=dtype) * 20
    which = torch.randint(0, 8, (n,), generator=generator)
    jitter = (torch.rand(n, 2, generator=generator, dtype=dtype) - 0.5) * widths[which, None] * 0.6
    seg = torch.stack([centres[which] - widths[which] / 2, centres[which] + widths[which] / 2], 1)
    seg = seg + jitter
    seg = torch.stack([seg.min(1).values, seg.max(1).values], 1)
    scores = torch.rand(n, generator=generator, dtype=dtype)
    labels = None if num_labels is None else torch.randint(0, num_labels, (n,), generator=generator)
    return seg, scores, labels
