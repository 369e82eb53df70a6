"""Learning-rate schedule: linear warm-up then cosine decay, stepped per iteration."""

from __future__ import annotations

import math

import torch

__all__ = ["warmup_cosine"]


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_iters: int, total_iters: int,
                  min_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """LR factor rises linearly from ~0 to 1 over ``warmup_iters``, then follows a
    half cosine down to ``min_ratio`` at ``total_iters``."""
    if total_iters < 1:
        raise ValueError(f"total_iters must be >= 1, got {total_iters}")
    if not 0 <= warmup_iters <= total_iters:
        raise ValueError(f"warmup_iters must be in [0, {total_iters}], got {warmup_iters}")

    def factor(it: int) -> float:
        if it < warmup_iters:
            return (it + 1) / (warmup_iters + 1)
        span = max(total_iters - warmup_iters, 1)
        progress = min((it - warmup_iters) / span, 1.0)
        return min_ratio + (1 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
