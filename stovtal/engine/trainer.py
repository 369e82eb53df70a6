"""The one training loop of the package: the localizer (base training, self-training),
the classifier adapter and FEEL's CoLA.

:class:`Trainer` knows nothing about what it trains: the batch source
(:mod:`stovtal.engine.batches`; a dataset is batched by ``LoaderBatches``), the loss
(``loss_fn(model, batch) -> {"loss": ..., ...}``), the EMA (e.g. a Mean Teacher initialised
from another model), the validation function and the :class:`TrainerHook` s are pluggable.
It provides AdamW or Adam (L2), a linear warm-up + cosine or a constant learning rate per
iteration, runs counted in epochs or iterations, gradient clipping, an optional EMA of the
weights, AMP on CUDA, atomic ``last.pt`` / ``best.pt`` checkpoints (when given a work
directory) and an exact resume from ``last.pt`` (with a per-epoch seeded batch source).

Distributed (``torchrun``, see :mod:`stovtal.utils.distributed`): when the batch source is
shared by W > 1 processes (``LoaderBatches`` under a process group), the model is wrapped in
``DistributedDataParallel`` and every rank reads its share of each batch. ``batch_size`` is the
**global** batch (it must be divisible by W; each rank takes ``batch_size / W`` videos per
step), so the number of steps per epoch, the learning-rate schedule and the sampled global
batches are the same as in a single process: rank r's part of step k is elements
``r, r + W, ...`` of the single-process batch k. With a loss whose gradient is the mean of the
ranks' gradients (the localizer's loss sums its positive count over ranks for that), the
weights match a single-process run with the same global batch up to float rounding, as long as
no randomness (drop-path, random crops) is involved: that is drawn per rank. Only rank 0
logs and writes checkpoints; all ranks load ``last.pt`` to resume (shared file system), so a
resume is exact for any world size that divides the batch. A source read whole by every
process (``world_size = 1``) is trained locally on each, without collectives.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from stovtal.config import TrainConfig
from stovtal.utils import distributed as D

from .batches import EpochBatches, LoaderBatches
from .checkpoint import check_state_dict, load_checkpoint, save_checkpoint
from .ema import ModelEMA
from .layout import TrainLayout
from .schedule import warmup_cosine

__all__ = ["SampleMeanLoss", "TrainConfig", "Trainer", "TrainerHook", "localizer_loss", "move_to_device",
           "resolve_device"]


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


def _param_groups(model: nn.Module, weight_decay: float, decay_1d: bool) -> list[dict[str, Any]]:
    """The trained parameters; with ``decay_1d=False`` biases, norm weights and per-level scales
    (1-D parameters) get no weight decay."""
    params = [p for p in model.parameters() if p.requires_grad]
    if decay_1d:
        return [{"params": params, "weight_decay": weight_decay}]
    decay = [p for p in params if p.dim() > 1]
    no_decay = [p for p in params if p.dim() <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class _LossModule(nn.Module):
    """``forward(batch) = loss_fn(model, batch)``: lets ``DistributedDataParallel`` see the
    loss computation (which calls ``model.loss`` / ``model(...)``, not ``model.forward``)."""

    def __init__(self, model: nn.Module, loss_fn: Callable[[nn.Module, dict[str, Any]], dict[str, torch.Tensor]]):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self.loss_fn(self.model, batch)


class TrainerHook:
    """Something done at fixed points of :meth:`Trainer.fit` (detectron2's ``HookBase`` style).

    Subclasses override what they need; ``trainer`` gives access to the model, its EMA
    (``trainer.ema.module``: e.g. a Mean Teacher), the epoch counter and the batch source
    (``trainer.batches``; ``trainer.train_set`` for a dataset).
    ``before_epoch`` runs before the epoch's RNG seeding and data loader, so what it changes
    (labels, the drawn items of an epoch) is what the epoch trains on, identically on resume.
    """

    def before_train(self, trainer: Trainer) -> None:
        """After a resume (``trainer.epoch`` = completed epochs), before the first epoch."""

    def before_epoch(self, trainer: Trainer) -> None:
        """Before epoch ``trainer.epoch`` (0-based) is trained."""

    def after_step(self, trainer: Trainer, batch: dict[str, Any], losses: dict[str, torch.Tensor]) -> None:
        """After an optimiser step on ``batch`` whose loss terms were ``losses`` (detached)."""

    def after_epoch(self, trainer: Trainer, stats: dict[str, float]) -> None:
        """After the epoch's checkpoint is written; ``stats`` is its history entry."""

    def after_train(self, trainer: Trainer) -> None:
        """After the last epoch."""


class Trainer:
    """Train ``model`` on the batches of ``train_set``; checkpoints go to ``workdir``.

    Args:
        model: module trained by gradient descent (the student); its parameters that require
            gradients are optimised.
        train_set: a map-style dataset (batched by :class:`~stovtal.engine.batches.LoaderBatches`
            with ``collate_fn``) or an :class:`~stovtal.engine.batches.EpochBatches` source.
        cfg: ``optimizer`` (``adamw`` | ``adam``: L2 weight decay in the gradient), ``lr``,
            ``weight_decay``, ``schedule`` (``cosine``: linear warm-up over ``warmup_epochs``
            then cosine to ``min_lr_ratio * lr``, per iteration; ``constant``), ``epochs`` or
            ``iterations`` (> 0: that many steps; the last epoch stops early), ``clip_grad``
            (0: off), ``ema_decay`` / ``ema_warmup``, ``amp`` (CUDA only), ``device``,
            ``eval_every``, ``progress``.
        workdir: where ``last.pt`` / ``best.pt`` are written; None: no checkpoints (no resume).
        loss_fn: ``(model, batch) -> dict`` with a scalar ``"loss"`` (other entries are logged).
        ema: the weight average to maintain; True: ``ModelEMA(model, cfg.ema_decay,
            cfg.ema_warmup)``; False: none (``evaluate`` then sees the trained model).
        evaluate: ``(ema_module) -> dict`` with a ``"score"`` entry (higher is better),
            called every ``cfg.eval_every`` epochs and after the last one; decides ``best.pt``.
            Under DDP it is called on every rank (it may split its work with
            :func:`stovtal.utils.distributed.rank_indices` / ``gather_dicts``); rank 0's
            metrics are the ones used.
        extra_state: JSON-like dict stored in every checkpoint (e.g. the run config).
        hooks: :class:`TrainerHook` s, called in order.
        decay_1d: also decay 1-D parameters (biases, norm weights); default: they get none.
        log: a ``print``-like function.
    """

    def __init__(
        self,
        model: nn.Module,
        train_set: Dataset | EpochBatches,
        cfg: TrainConfig,
        workdir: str | os.PathLike | None,
        *,
        collate_fn: Callable[[list], dict[str, Any]] | None = None,
        loss_fn: Callable[[nn.Module, dict[str, Any]], dict[str, torch.Tensor]] = localizer_loss,
        ema: ModelEMA | bool = True,
        evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
        extra_state: dict[str, Any] | None = None,
        log: Callable[[str], None] = print,
        hooks: list[TrainerHook] | None = None,
        decay_1d: bool = False,
    ):
        self.cfg = cfg
        self.workdir = None if workdir is None else os.fspath(workdir)
        self.train_set: Dataset | None = None
        if isinstance(train_set, EpochBatches):
            self.batches = train_set
        else:
            if collate_fn is None:
                raise ValueError("Trainer: a dataset needs a collate_fn")
            self.train_set = train_set
            self.batches = LoaderBatches(train_set, cfg, collate_fn)  # seeds every RNG with cfg.seed
        self.rank, self.world_size = D.get_rank(), self.batches.world_size
        self.device = D.local_device(resolve_device(cfg.device))
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
        self.loss_fn = loss_fn
        self.evaluate = evaluate
        self.extra_state = extra_state or {}
        self.hooks = list(hooks or [])
        self.ema: ModelEMA | None = None
        if ema is True:
            self.ema = ModelEMA(self.model, cfg.ema_decay, cfg.ema_warmup)
        elif ema is not False:
            self.ema = ema
        if self.ema is not None:
            self.ema.module.to(self.device)
        opt_cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
        self.optimizer = opt_cls(_param_groups(self.model, cfg.weight_decay, decay_1d), lr=cfg.lr)
        self.iters_per_epoch = len(self.batches)
        self.total_iters = cfg.iterations if cfg.iterations > 0 else cfg.epochs * self.iters_per_epoch
        self.num_epochs = math.ceil(self.total_iters / self.iters_per_epoch)
        if cfg.schedule == "constant":
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda _: 1.0)
        else:
            warmup = min(int(round(cfg.warmup_epochs * self.iters_per_epoch)), self.total_iters)
            self.scheduler = warmup_cosine(self.optimizer, warmup, self.total_iters, cfg.min_lr_ratio)
        self.use_amp = cfg.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.epoch = 0  # completed epochs
        self.best_score = -math.inf
        self.history: list[dict[str, float]] = []

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            **({"ema": self.ema.state_dict()} if self.ema is not None else {}),
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
        if self.ema is not None:
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
        return TrainLayout(self._need_workdir()).last

    @property
    def best_path(self) -> str:
        return TrainLayout(self._need_workdir()).best

    def _need_workdir(self) -> str:
        if self.workdir is None:
            raise ValueError("this Trainer has no work directory (workdir=None): no checkpoints")
        return self.workdir

    # ------------------------------------------------------------------ loop
    def train_one_epoch(self) -> dict[str, float]:
        """One epoch (the last of an iteration-counted run may be shorter); mean loss terms."""
        cfg = self.cfg
        self.model.train()
        steps = min(self.iters_per_epoch, self.total_iters - self.epoch * self.iters_per_epoch)
        sums: dict[str, float] = {}
        n = 0
        iterator: Any = itertools.islice(self.batches.epoch(self.epoch), steps)
        if cfg.progress and self.rank == 0:
            from tqdm import tqdm

            iterator = tqdm(iterator, total=steps, desc=f"epoch {self.epoch + 1}/{self.num_epochs}",
                            leave=False, dynamic_ncols=True)
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
            if self.ema is not None:
                self.ema.update(self.model)
            losses = {k: v.detach() for k, v in losses.items()}
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            n += 1
            for hook in self.hooks:
                hook.after_step(self, batch, losses)
            if cfg.progress and self.rank == 0:
                iterator.set_postfix(loss=f"{sums['loss'] / n:.4f}")
        means = {k: v / max(n, 1) for k, v in sums.items()}
        return D.all_reduce_mean(means) if self.world_size > 1 else means

    def fit(self, resume: bool = False) -> list[dict[str, float]]:
        """Train until ``cfg.epochs`` epochs (or ``cfg.iterations`` steps) are done; returns the
        per-epoch history.

        With ``resume=True`` and an existing ``last.pt``, training continues from it
        and ends with the same weights as an uninterrupted run (on CPU; for a batch source
        that re-seeds per epoch, as :class:`~stovtal.engine.batches.LoaderBatches` does).
        """
        if self.workdir is not None:
            os.makedirs(self.workdir, exist_ok=True)
        elif resume:
            raise ValueError("resume=True needs a work directory")
        if resume and self._shared(os.path.exists(self.last_path)):
            state = load_checkpoint(self.last_path, self.device)
            check_state_dict(self.model, state.get("model"), self.last_path)
            self.load_state_dict(state)
            self.log(f"resumed from {self.last_path} after epoch {self.epoch}")
        cfg = self.cfg
        for hook in self.hooks:
            hook.before_train(self)
        while self.epoch < self.num_epochs:
            t0 = time.time()
            for hook in self.hooks:
                hook.before_epoch(self)
            stats = self.train_one_epoch()
            self.epoch += 1
            stats = {"epoch": float(self.epoch), "time_s": time.time() - t0,
                     "lr": self.optimizer.param_groups[0]["lr"], **stats}
            last = self.epoch == self.num_epochs
            if self.evaluate is not None and (last or (cfg.eval_every and self.epoch % cfg.eval_every == 0)):
                evaluated = self.ema.module if self.ema is not None else self.model
                metrics = self._shared(self.evaluate(evaluated))
                stats.update({f"val_{k}": float(v) for k, v in metrics.items()})
                if float(metrics["score"]) > self.best_score:
                    self.best_score = float(metrics["score"])
                    self.history.append(stats)
                    self._save(self.best_path)
                else:
                    self.history.append(stats)
            else:
                self.history.append(stats)
            if self.workdir is not None:
                self._save(self.last_path)
            self.log(json.dumps({k: round(v, 5) for k, v in stats.items()}))
            for hook in self.hooks:
                hook.after_epoch(self, stats)
        if self.evaluate is None and self.workdir is not None:  # nothing to select on: the final weights are the best
            self._save(self.best_path)
        for hook in self.hooks:
            hook.after_train(self)
        return self.history

    def _shared(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank of a distributed trainer; ``obj`` otherwise."""
        return D.broadcast_object(obj) if self.world_size > 1 else obj

    def _save(self, path: str) -> None:
        """Rank 0 writes; every rank returns once the file is complete."""
        if self.rank == 0:
            save_checkpoint(path, self.state_dict())
        if self.world_size > 1:
            D.barrier()


class SampleMeanLoss(TrainerHook):
    """Records each epoch's training loss averaged over samples (not batches) in ``history``.

    A batch's weight is the length of ``batch[key]`` (its number of samples), so a smaller last
    batch counts for what it holds. ``log(epoch, loss)`` (optional) is called after each epoch.
    """

    def __init__(self, key: str = "labels", log: Callable[[int, float], None] | None = None):
        self.key = key
        self.log = log
        self.history: list[float] = []
        self._total, self._count = 0.0, 0

    def before_epoch(self, trainer: Trainer) -> None:
        self._total, self._count = 0.0, 0

    def after_step(self, trainer: Trainer, batch: dict[str, Any], losses: dict[str, torch.Tensor]) -> None:
        n = len(batch[self.key])
        self._total += float(losses["loss"]) * n
        self._count += n

    def after_epoch(self, trainer: Trainer, stats: dict[str, float]) -> None:
        self.history.append(self._total / self._count)
        if self.log is not None:
            self.log(trainer.epoch, self.history[-1])
