"""Deterministic seeding: every epoch re-seeds all RNGs from (seed, epoch).

Because an epoch's randomness (shuffling, dropout, augmentation) depends only
on the base seed and the epoch number, a run resumed from an end-of-epoch
checkpoint continues exactly like an uninterrupted one, without storing RNG
states.
"""

from __future__ import annotations

import random

import numpy as np
import torch

__all__ = ["epoch_seed", "seed_everything", "seed_worker"]


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed python, numpy and torch; optionally ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002  (seeds the global RNG other code may use)
    torch.manual_seed(seed)
    if deterministic:
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed that is a fixed function of the run seed and the epoch."""
    return (seed * 1_000_003 + epoch * 7919 + 17) % (2**63 - 1)


def seed_worker(worker_id: int) -> None:
    """``DataLoader`` ``worker_init_fn``: derive numpy/python seeds from torch's per-worker seed."""
    s = torch.initial_seed() % 2**32
    np.random.seed(s)  # noqa: NPY002
    random.seed(s)
