"""Where a :class:`~stovtal.engine.trainer.Trainer`'s batches come from, epoch by epoch.

A batch source owns the randomness of training: the order of the items, random crops and the
state of the global RNGs that dropout and dataset code draw from. The trainer asks it for the
batches of epoch ``e`` (:meth:`EpochBatches.epoch`) and takes ``len(source)`` of them (fewer in
the last epoch of a run counted in iterations). Sources:

- :class:`LoaderBatches`: a map-style dataset through a ``DataLoader``; every epoch re-seeds all
  RNGs from ``(seed, epoch)`` (resume-exact without stored RNG states) and, under ``torchrun``,
  every rank reads its share of the single-process batches (the localizer's training).
- :class:`TensorBatches`: rows of in-memory tensors, reshuffled every epoch by one generator
  seeded once (the classifier adapter's pooled segments).
- FEEL's CoLA videos (:class:`stovtal.feel.cola.CoLABatches`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, RandomSampler
from torch.utils.data.distributed import DistributedSampler

from stovtal.config import TrainConfig
from stovtal.utils import distributed as D

from .seed import epoch_seed, seed_everything, seed_worker

__all__ = ["EpochBatches", "LoaderBatches", "TensorBatches"]


class EpochBatches:
    """The batches of one training run, epoch by epoch.

    ``world_size``: the number of processes that train together on these batches (each gets its
    share); 1 for a source that every process reads whole, which the trainer then trains locally.
    """

    world_size: int = 1

    def __len__(self) -> int:
        """Batches per (full) epoch, >= 1."""
        raise NotImplementedError

    def epoch(self, epoch: int) -> Iterable[dict[str, Any]]:
        """The batches of epoch ``epoch`` (0-based), drawn lazily, in training order."""
        raise NotImplementedError


class _SharedPermutationSampler(DistributedSampler):
    """``DistributedSampler`` over the permutation that a single process draws.

    One process shuffles with ``DataLoader(RandomSampler(generator=g), generator=g)`` for
    ``g`` seeded with the epoch seed; that loader first draws its base seed from ``g``, then the
    sampler's permutation. Drawing the same here keeps single-process runs exactly as they
    were while DDP ranks split the very same batches (checked by tests/distributed).
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int, drop_last: bool):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=0, drop_last=drop_last)
        self.perm_seed = seed

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.perm_seed)
        torch.empty((), dtype=torch.int64).random_(generator=g)  # the loader's base seed
        indices = torch.randperm(len(self.dataset), generator=g).tolist()  # type: ignore[arg-type]
        if self.drop_last:
            indices = indices[: self.total_size]
        else:
            pad = self.total_size - len(indices)
            indices += (indices * math.ceil(pad / len(indices)))[:pad]
        return iter(indices[self.rank : self.total_size : self.num_replicas])


class LoaderBatches(EpochBatches):
    """Shuffled batches of ``cfg.batch_size`` items of ``dataset`` made by ``collate_fn``.

    Seeds python, numpy and torch with ``cfg.seed`` when made, and again from
    ``(cfg.seed, epoch)`` (plus the rank: own dropout and crops per rank) at the start of every
    epoch. The last incomplete batch is dropped when the set holds more than one batch.

    Distributed (a process group of W > 1): ``cfg.batch_size`` is the **global** batch (divisible
    by W); rank r reads elements ``r, r + W, ...`` of the single-process batch k as its part of
    step k, so steps per epoch and the sampled global batches equal a single process's.
    """

    def __init__(self, dataset: Dataset, cfg: TrainConfig, collate_fn: Callable[[list], dict[str, Any]]):
        if len(dataset) == 0:  # type: ignore[arg-type]
            raise ValueError("the training set is empty")
        self.dataset = dataset
        self.cfg = cfg
        self.collate_fn = collate_fn
        self.rank, self.world_size = D.get_rank(), D.get_world_size()
        if cfg.batch_size % self.world_size:
            raise ValueError(f"train.batch_size ({cfg.batch_size}) is the global batch and must be divisible "
                             f"by the number of processes ({self.world_size})")
        seed_everything(cfg.seed)

    def _drop_last(self) -> bool:
        return len(self.dataset) > self.cfg.batch_size  # type: ignore[arg-type]

    def __len__(self) -> int:
        n = len(self.dataset)  # type: ignore[arg-type]
        b = self.cfg.batch_size
        return n // b if self._drop_last() else math.ceil(n / b)

    def epoch(self, epoch: int) -> DataLoader:
        cfg = self.cfg
        s = (epoch_seed(cfg.seed, epoch) ^ 0x5EED) + 104_729 * self.rank
        torch.manual_seed(s)
        np.random.seed(s % 2**32)  # noqa: NPY002  (global RNG of dataset code)
        random.seed(s)
        gen = torch.Generator()
        gen.manual_seed(epoch_seed(cfg.seed, epoch))
        drop = self._drop_last()
        if self.world_size == 1:
            sampler: Any = RandomSampler(self.dataset, generator=gen)
        else:
            # The single-process permutation, the same on every rank; rank r takes elements
            # r, r+W, ... With drop_last the sampler keeps floor(n/W) per rank and the loader
            # floor(floor(n/W) / (B/W)) = floor(n/B) steps: the single-process batches, split.
            sampler = _SharedPermutationSampler(self.dataset, self.world_size, self.rank,
                                                epoch_seed(cfg.seed, epoch), drop)
        return DataLoader(
            self.dataset,
            batch_size=cfg.batch_size // self.world_size,
            sampler=sampler,
            collate_fn=self.collate_fn,
            num_workers=cfg.num_workers,
            worker_init_fn=seed_worker if cfg.num_workers > 0 else None,
            generator=gen,
            drop_last=drop,
            persistent_workers=False,
        )


class TensorBatches(EpochBatches):
    """Mini-batches of rows of equally long tensors, e.g. ``pooled [N, C]`` and ``labels [N]``.

    Every epoch is a fresh permutation of the N rows drawn from one generator seeded with
    ``seed`` (epoch e's order depends on the epochs before it: read the epochs in order); the
    last batch may be smaller. Batches are ``{name: tensor[idx]}``; the global RNGs are untouched.
    """

    def __init__(self, tensors: dict[str, Tensor], batch_size: int, seed: int):
        sizes = {k: int(v.shape[0]) for k, v in tensors.items()}
        if not sizes or len(set(sizes.values())) != 1:
            raise ValueError(f"TensorBatches needs tensors with one common first dimension, got {sizes}")
        self.n = next(iter(sizes.values()))
        if self.n == 0:
            raise ValueError("TensorBatches: no rows to train on")
        self.tensors = tensors
        self.batch_size = batch_size
        self.gen = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def epoch(self, epoch: int) -> Iterator[dict[str, Tensor]]:
        order = torch.randperm(self.n, generator=self.gen)
        first = next(iter(self.tensors.values()))
        order = order.to(first.device)
        for i in range(0, self.n, self.batch_size):
            idx = order[i:i + self.batch_size]
            yield {k: v[idx] for k, v in self.tensors.items()}
