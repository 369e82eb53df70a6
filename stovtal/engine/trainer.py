"""The training loop, shared by base training and self-training.

:class:`Trainer` knows nothing about what it trains: the dataset, the loss
(``loss_fn(model, batch) -> {"loss": ..., ...}``), the EMA (e.g. a Mean
Teacher initialised from another model) and the validation function are all
pluggable. It provides AdamW, linear warm-up + cosine schedule per iteration,
gradient clipping, an EMA of the weights, AMP on CUDA, per-epoch deterministic
seeding, atomic ``last.pt`` / ``best.pt`` checkpoints and an exact resume
from ``last.pt``.

Distributed (``torchrun``, see :mod:`stovtal.engine.distributed`): when a process group with
world size W > 1 is initialised, the model is wrapped in ``DistributedDataParallel`` and every
rank reads its share of each batch through a ``DistributedSampler``. ``batch_size`` is the
**global** batch (it must be divisible by W; each rank takes ``batch_size / W`` videos per
step), so the number of steps per epoch, the learning-rate schedule and the sampled global
batches are the same as in a single process: rank r's part of step k is elements
``r, r + W, ...`` of the single-process batch k. With a loss whose gradient is the mean of the
ranks' gradients (the localizer's loss sums its positive count over ranks for that), the
weights match a single-process run with the same global batch up to float rounding, as long as
no randomness (drop-path, random crops) is involved: that is drawn per rank. Only rank 0
logs and writes checkpoints; all ranks load ``last.pt`` to resume (shared file system), so a
resume is exact for any world size that divides the batch.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler
from torch.utils.data.distributed import DistributedSampler

from . import distributed as D
from .checkpoint import check_state_dict, load_checkpoint, save_checkpoint
from .ema import ModelEMA
from .schedule import warmup_cosine
from .seed import epoch_seed, seed_everything, seed_worker

__all__ = ["TrainConfig", "Trainer", "localizer_loss", "move_to_device", "resolve_device"]


@dataclass
class TrainConfig:
    """Optimisation settings (defaults: the authors' ActionFormer recipe, THUMOS14)."""

    epochs: int = 35
    batch_size: int = 2
    lr: float = 1e-4
    weight_decay: float = 0.05
    warmup_epochs: float = 5.0
    min_lr_ratio: float = 0.0
    clip_grad: float = 1.0
    ema_decay: float = 0.999
    ema_warmup: bool = False
    seed: int = 0
    num_workers: int = 0
    eval_every: int = 0
    amp: bool = True
    device: str = "auto"
    log_every: int = 20
    progress: bool = True

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"train.epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"train.batch_size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"train.lr must be > 0, got {self.lr}")
        if self.weight_decay < 0 or self.warmup_epochs < 0 or self.clip_grad < 0:
            raise ValueError("train.weight_decay, warmup_epochs and clip_grad must be >= 0")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"train.ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.num_workers < 0 or self.eval_every < 0:
            raise ValueError("train.num_workers and eval_every must be >= 0")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available")
    return dev


def move_to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Move tensors (and lists of tensors) of a collated batch to ``device``."""
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            out[k] = v.to(device, non_blocking=True)
        elif isinstance(v, list) and v and all(isinstance(x, torch.Tensor) for x in v):
            out[k] = [x.to(device, non_blocking=True) for x in v]
        else:
            out[k] = v
    return out


def localizer_loss(model: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Class-agnostic localizer loss on a collated batch (labels ignored)."""
    return model.loss(batch["feats"], batch["masks"], batch["segments"])


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on biases, norm weights and per-level scales (1-D parameters)."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.dim() <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


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


class _LossModule(nn.Module):
    """``forward(batch) = loss_fn(model, batch)``: lets ``DistributedDataParallel`` see the
    loss computation (which calls ``model.loss`` / ``model(...)``, not ``model.forward``)."""

    def __init__(self, model: nn.Module, loss_fn: Callable[[nn.Module, dict[str, Any]], dict[str, torch.Tensor]]):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self.loss_fn(self.model, batch)


class Trainer:
    """Train ``model`` on ``train_set``; checkpoints go to ``workdir``.

    Args:
        model: module trained by gradient descent (the student).
        train_set: map-style dataset; batches are made with ``collate_fn``.
        loss_fn: ``(model, batch) -> dict`` with a scalar ``"loss"`` (other entries are logged).
        ema: the weight average to maintain; default ``ModelEMA(model, cfg.ema_decay, cfg.ema_warmup)``.
        evaluate: ``(ema_module) -> dict`` with a ``"score"`` entry (higher is better),
            called every ``cfg.eval_every`` epochs and after the last one; decides ``best.pt``.
            Under DDP it is called on every rank (it may split its work with
            :func:`stovtal.engine.distributed.rank_indices` / ``gather_dicts``); rank 0's
            metrics are the ones used.
        extra_state: JSON-like dict stored in every checkpoint (e.g. the run config).
        log: a ``print``-like function.
    """

    def __init__(
        self,
        model: nn.Module,
        train_set: Dataset,
        cfg: TrainConfig,
        workdir: str | os.PathLike,
        *,
        collate_fn: Callable[[list], dict[str, Any]],
        loss_fn: Callable[[nn.Module, dict[str, Any]], dict[str, torch.Tensor]] = localizer_loss,
        ema: ModelEMA | None = None,
        evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
        extra_state: dict[str, Any] | None = None,
        log: Callable[[str], None] = print,
    ):
        if len(train_set) == 0:  # type: ignore[arg-type]
            raise ValueError("the training set is empty")
        self.cfg = cfg
        self.workdir = os.fspath(workdir)
        self.rank, self.world_size = D.get_rank(), D.get_world_size()
        if cfg.batch_size % self.world_size:
            raise ValueError(f"train.batch_size ({cfg.batch_size}) is the global batch and must be divisible "
                             f"by the number of processes ({self.world_size})")
        self.device = D.local_device(resolve_device(cfg.device))
        seed_everything(cfg.seed)
        self.model = model.to(self.device)
        self.ddp: nn.Module | None = None
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            # DDP broadcasts rank 0's weights and buffers: all ranks start identical.
            self.ddp = DistributedDataParallel(
                _LossModule(self.model, loss_fn),
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
            )
        self.log = log if self.rank == 0 else (lambda _: None)
        self.train_set = train_set
        self.collate_fn = collate_fn
        self.loss_fn = loss_fn
        self.evaluate = evaluate
        self.extra_state = extra_state or {}
        self.ema = ema if ema is not None else ModelEMA(self.model, cfg.ema_decay, cfg.ema_warmup)
        self.ema.module.to(self.device)
        self.optimizer = torch.optim.AdamW(_param_groups(self.model, cfg.weight_decay), lr=cfg.lr)
        self.iters_per_epoch = self._num_batches()
        total = cfg.epochs * self.iters_per_epoch
        warmup = min(int(round(cfg.warmup_epochs * self.iters_per_epoch)), total)
        self.scheduler = warmup_cosine(self.optimizer, warmup, total, cfg.min_lr_ratio)
        self.use_amp = cfg.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.epoch = 0  # completed epochs
        self.best_score = -math.inf
        self.history: list[dict[str, float]] = []

    # ------------------------------------------------------------------ data
    def _drop_last(self) -> bool:
        return len(self.train_set) > self.cfg.batch_size  # type: ignore[arg-type]

    def _num_batches(self) -> int:
        n = len(self.train_set)  # type: ignore[arg-type]
        b = self.cfg.batch_size
        return n // b if self._drop_last() else math.ceil(n / b)

    def _loader(self, epoch: int) -> DataLoader:
        gen = torch.Generator()
        gen.manual_seed(epoch_seed(self.cfg.seed, epoch))
        drop = self._drop_last()
        if self.world_size == 1:
            sampler: Any = RandomSampler(self.train_set, generator=gen)
        else:
            # The single-process permutation, the same on every rank; rank r takes elements
            # r, r+W, ... With drop_last the sampler keeps floor(n/W) per rank and the loader
            # floor(floor(n/W) / (B/W)) = floor(n/B) steps: the single-process batches, split.
            sampler = _SharedPermutationSampler(self.train_set, self.world_size, self.rank,
                                                epoch_seed(self.cfg.seed, epoch), drop)
        return DataLoader(
            self.train_set,
            batch_size=self.cfg.batch_size // self.world_size,
            sampler=sampler,
            collate_fn=self.collate_fn,
            num_workers=self.cfg.num_workers,
            worker_init_fn=seed_worker if self.cfg.num_workers > 0 else None,
            generator=gen,
            drop_last=drop,
            persistent_workers=False,
        )

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "best_score": self.best_score,
            "history": self.history,
            "train_config": asdict(self.cfg),
            **self.extra_state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.epoch = int(state["epoch"])
        self.best_score = float(state["best_score"])
        self.history = list(state["history"])

    @property
    def last_path(self) -> str:
        return os.path.join(self.workdir, "last.pt")

    @property
    def best_path(self) -> str:
        return os.path.join(self.workdir, "best.pt")

    # ------------------------------------------------------------------ loop
    def train_one_epoch(self) -> dict[str, float]:
        cfg = self.cfg
        s = (epoch_seed(cfg.seed, self.epoch) ^ 0x5EED) + 104_729 * self.rank  # own dropout/crops per rank
        torch.manual_seed(s)
        np.random.seed(s % 2**32)  # noqa: NPY002  (global RNG of dataset code)
        random.seed(s)
        self.model.train()
        sums: dict[str, float] = {}
        n = 0
        loader = self._loader(self.epoch)
        iterator: Any = loader
        if cfg.progress and self.rank == 0:
            from tqdm import tqdm

            iterator = tqdm(loader, desc=f"epoch {self.epoch + 1}/{cfg.epochs}", leave=False, dynamic_ncols=True)
        for batch in iterator:
            batch = move_to_device(batch, self.device)
            with torch.autocast(self.device.type, enabled=self.use_amp):
                losses = self.ddp(batch) if self.ddp is not None else self.loss_fn(self.model, batch)
            loss = losses["loss"]
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss {loss.item()} at epoch {self.epoch + 1}, iteration {n + 1}")
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if cfg.clip_grad > 0:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_grad)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            self.ema.update(self.model)
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            n += 1
            if cfg.progress and self.rank == 0:
                iterator.set_postfix(loss=f"{sums['loss'] / n:.4f}")
        return D.all_reduce_mean({k: v / max(n, 1) for k, v in sums.items()})

    def fit(self, resume: bool = False) -> list[dict[str, float]]:
        """Train until ``cfg.epochs`` epochs are done; returns the per-epoch history.

        With ``resume=True`` and an existing ``last.pt``, training continues from it
        and ends with the same weights as an uninterrupted run (on CPU).
        """
        os.makedirs(self.workdir, exist_ok=True)
        if resume and D.broadcast_object(os.path.exists(self.last_path)):
            state = load_checkpoint(self.last_path, self.device)
            check_state_dict(self.model, state.get("model"), self.last_path)
            self.load_state_dict(state)
            self.log(f"resumed from {self.last_path} after epoch {self.epoch}")
        cfg = self.cfg
        while self.epoch < cfg.epochs:
            t0 = time.time()
            stats = self.train_one_epoch()
            self.epoch += 1
            stats = {"epoch": float(self.epoch), "time_s": time.time() - t0,
                     "lr": self.optimizer.param_groups[0]["lr"], **stats}
            last = self.epoch == cfg.epochs
            if self.evaluate is not None and (last or (cfg.eval_every and self.epoch % cfg.eval_every == 0)):
                metrics = D.broadcast_object(self.evaluate(self.ema.module))
                stats.update({f"val_{k}": float(v) for k, v in metrics.items()})
                if float(metrics["score"]) > self.best_score:
                    self.best_score = float(metrics["score"])
                    self.history.append(stats)
                    self._save(self.best_path)
                else:
                    self.history.append(stats)
            else:
                self.history.append(stats)
            self._save(self.last_path)
            self.log(json.dumps({k: round(v, 5) for k, v in stats.items()}))
        if self.evaluate is None:  # nothing to select on: the final weights are the best
            self._save(self.best_path)
        return self.history

    def _save(self, path: str) -> None:
        """Rank 0 writes; every rank returns once the file is complete."""
        if self.rank == 0:
            save_checkpoint(path, self.state_dict())
        D.barrier()
