"""Mean Teacher retraining of the class-agnostic localizer.

Training set: the labelled videos (labels made class-agnostic) plus the pseudo-labelled ones.
The student is trained by gradient descent (from the base model's raw weights by default, or
from scratch as the authors do: ``retrain.student_init``); the teacher is an exponential moving average of the student,
``teacher = d * teacher + (1 - d) * student`` after every step (d = 0.999), initialised from the
base model's raw weights (the authors' choice; its EMA weights with ``retrain.teacher_init=ema``).
The teacher is what is evaluated and exported.

Beyond the authors' code:

- a consistency loss (``consistency_weight``): mean squared difference between the student's and
  the teacher's sigmoid actionness at every valid pyramid position of the pseudo-labelled videos
  of a batch (the student sees them with its dropout / drop-path active, the teacher in eval);
- online self-training (``refresh_every`` = R): every R epochs the teacher pseudo-labels the
  unlabelled videos again (sharded and resumable like the first pass, one directory per refresh)
  and the pseudo-labelled part of the training set switches to the new labels;
- a fixed labelled share per epoch (``labelled_fraction``, :class:`FixedShareEpochs`): with many
  more pseudo-labelled than labelled videos the plain union is dominated by the pseudo-labels'
  noise; this keeps the human labels' share constant whatever the number of web videos;
- a fixed epoch length (``epoch_length``, :class:`FixedShareEpochs` with ``length``): the number
  of retraining steps stays the same whatever the number of web videos.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.data import ConcatDataset, Dataset

from stovtal.engine.trainer import TrainerHook

__all__ = [
    "ConsistencyLoss",
    "DrawEpoch",
    "FixedShareEpochs",
    "PseudoLabelRefresh",
    "PseudoLabelledSet",
    "SourceTagged",
    "actionness_consistency",
    "class_agnostic",
    "make_trainer",
]

AGNOSTIC = "action"


def class_agnostic(database: Mapping[str, Any], subset: str | None = None) -> dict[str, Any]:
    """An annotation database with every label replaced by ``"action"`` (optionally one subset)."""
    out = {}
    for vid, info in database.items():
        if subset is not None and info.get("subset") != subset:
            continue
        anns = [{**a, "label": AGNOSTIC} for a in info.get("annotations", [])]
        out[vid] = {**info, "annotations": anns}
    return {"database": out}


class SourceTagged(Dataset):
    """Adds ``"pseudo": bool`` to every item of ``dataset`` (True = pseudo-labelled video)."""

    def __init__(self, dataset: Dataset, pseudo: bool):
        self.dataset = dataset
        self.pseudo = pseudo

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {**self.dataset[i], "pseudo": self.pseudo}


class PseudoLabelledSet(Dataset):
    """The pseudo-labelled videos; :meth:`set_labels` swaps in refreshed pseudo-labels.

    ``make(database)`` builds the underlying ``VideoFeatureDataset``. The video list must stay
    the same across refreshes (the trainer's epoch length depends on it).
    """

    def __init__(self, make: Callable[[Mapping[str, Any]], Dataset], database: Mapping[str, Any]):
        self.make = make
        self.dataset = make(database)
        self.video_ids = list(getattr(self.dataset, "video_ids", []))
        self.version: Any = None

    def set_labels(self, database: Mapping[str, Any], version: Any) -> None:
        ds = self.make(database)
        ids = list(getattr(ds, "video_ids", []))
        if ids != self.video_ids:
            raise ValueError("refreshed pseudo-labels cover different videos than the first pass")
        self.dataset = ds
        self.version = version

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {**self.dataset[i], "pseudo": True}


class FixedShareEpochs(Dataset):
    """Labelled + pseudo-labelled videos, redrawn every epoch with a fixed labelled share.

    An epoch has ``length`` items (default ``len(labelled) + len(pseudo)``, the plain union's
    length, so the same number of steps as the union), of which ``round(fraction * length)``
    (at least 1, at most length - 1) are labelled videos and the rest pseudo-labelled ones.
    Each source is drawn in whole shuffled passes: every video of a source appears ``floor`` or
    ``ceil`` of its mean number of times, so labelled videos are repeated and pseudo-labelled
    ones subsampled when ``fraction`` exceeds the natural share ``len(labelled) / length``.
    The draw is a function of ``(seed, epoch)`` only (:meth:`set_epoch`), so every DDP rank and
    a resumed run see the same epochs. Items carry ``"pseudo": bool`` like :class:`SourceTagged`.
    """

    def __init__(self, labelled: Dataset, pseudo: Dataset, fraction: float, seed: int,
                 length: int | None = None):
        n_l, n_p = len(labelled), len(pseudo)  # type: ignore[arg-type]
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"labelled fraction must be in (0, 1), got {fraction}")
        if n_l == 0 or n_p == 0:
            raise ValueError(f"a fixed labelled share needs labelled and pseudo-labelled videos, "
                             f"got {n_l} and {n_p}")
        if length is not None and (isinstance(length, bool) or not isinstance(length, int) or length < 2):
            raise ValueError(f"an epoch needs at least 2 videos (one of each source), got length={length!r}")
        self.labelled, self.pseudo = labelled, pseudo
        self.length = n_l + n_p if length is None else length
        self.num_labelled = min(max(round(fraction * self.length), 1), self.length - 1)
        self.seed = int(seed)
        self.epoch = -1
        self.set_epoch(0)

    @staticmethod
    def _passes(n: int, count: int, gen: torch.Generator) -> torch.Tensor:
        reps = -(-count // n)
        return torch.cat([torch.randperm(n, generator=gen) for _ in range(reps)])[:count]

    def set_epoch(self, epoch: int) -> None:
        """Draw the items of ``epoch`` (0-based)."""
        if epoch == self.epoch:
            return
        from stovtal.engine.seed import epoch_seed

        gen = torch.Generator()
        # a stream apart from the trainer's own epoch shuffle (which uses epoch_seed(seed, epoch))
        gen.manual_seed(epoch_seed(self.seed, epoch) ^ 0x5EED_F1E1D)
        lab = self._passes(len(self.labelled), self.num_labelled, gen)  # type: ignore[arg-type]
        pse = self._passes(len(self.pseudo), self.length - self.num_labelled, gen)  # type: ignore[arg-type]
        self.items = [(False, int(i)) for i in lab] + [(True, int(i)) for i in pse]
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict[str, Any]:
        is_pseudo, j = self.items[i]
        return {**(self.pseudo if is_pseudo else self.labelled)[j], "pseudo": is_pseudo}


def actionness_consistency(student: nn.Module, teacher: nn.Module, feats: torch.Tensor,
                           masks: torch.Tensor) -> torch.Tensor:
    """Mean over valid pyramid positions of ``(sigmoid(s) - sigmoid(t))^2`` (teacher detached)."""
    out_s = student(feats, masks)
    with torch.no_grad():
        out_t = teacher(feats, masks)
    num = feats.new_zeros(())
    den = 0
    for ls, lt, m in zip(out_s.logits, out_t.logits, out_s.masks, strict=True):
        d = (torch.sigmoid(ls.float()) - torch.sigmoid(lt.float())) ** 2
        num = num + (d * m).sum()
        den += int(m.sum())
    return num / max(den, 1)


class ConsistencyLoss:
    """``loss_fn`` of the trainer: the localizer loss plus ``weight`` x the teacher-student
    actionness consistency on the pseudo-labelled videos of the batch."""

    def __init__(self, teacher: Callable[[], nn.Module], weight: float):
        self.teacher = teacher
        self.weight = float(weight)

    def __call__(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        from stovtal.engine import localizer_loss

        losses = localizer_loss(model, batch)
        if self.weight <= 0:
            return losses
        idx = [i for i, p in enumerate(batch.get("pseudo", [])) if p]
        if not idx:
            cons = losses["loss"].new_zeros(())
        else:
            sel = torch.tensor(idx, device=batch["feats"].device)
            cons = actionness_consistency(model, self.teacher(), batch["feats"][sel], batch["masks"][sel])
        return {**losses, "loss": losses["loss"] + self.weight * cons, "cons_loss": cons.detach()}


class PseudoLabelRefresh(TrainerHook):
    """Online self-training: before epoch ``e`` (a multiple of ``every``, > 0) the teacher
    (the trainer's EMA) pseudo-labels the unlabelled videos again and ``pseudo`` switches to
    the new labels. ``refresh(teacher, epoch)`` returns the pseudo-label database; it must be
    idempotent (a resumed run calls it again for the last refresh epoch)."""

    def __init__(self, pseudo: PseudoLabelledSet, refresh: Callable[[nn.Module, int], Mapping[str, Any]],
                 every: int):
        self.pseudo, self.refresh, self.every = pseudo, refresh, int(every)

    def before_epoch(self, trainer: Any) -> None:
        last = (trainer.epoch // self.every) * self.every
        if last > 0 and self.pseudo.version != last:
            self.pseudo.set_labels(self.refresh(trainer.ema.module, last)["database"], last)
            trainer.model.train()


class DrawEpoch(TrainerHook):
    """Draws the items of each epoch of a :class:`FixedShareEpochs` training set."""

    def __init__(self, train_set: FixedShareEpochs):
        self.train_set = train_set

    def before_epoch(self, trainer: Any) -> None:
        self.train_set.set_epoch(trainer.epoch)


def make_trainer(student: nn.Module, base_state: Mapping[str, torch.Tensor], labelled: Dataset,
                 pseudo: PseudoLabelledSet, train_cfg: Any, workdir: str | os.PathLike, *,
                 teacher_decay: float = 0.999, consistency_weight: float = 0.0,
                 refresh_every: int = 0, refresh: Callable[[nn.Module, int], Mapping[str, Any]] | None = None,
                 labelled_fraction: float = 0.0, epoch_length: int = 0,
                 log: Callable[[str], None] = print, extra_state: dict[str, Any] | None = None):
    """A :class:`stovtal.engine.Trainer` for the Mean Teacher (see the module docstring): the
    teacher is the trainer's EMA (``teacher_decay``, initialised from ``base_state``), the
    consistency term its loss (:class:`ConsistencyLoss`), the refresh and the fixed share hooks
    (:class:`PseudoLabelRefresh`, :class:`DrawEpoch`).

    Args:
        student: the model to train (already initialised: from scratch or from the base model).
        base_state: the teacher's initial weights (the base model's raw weights, the authors'
            choice, or its EMA weights: ``retrain.teacher_init``).
        labelled: class-agnostic labelled dataset; pseudo: the pseudo-labelled videos.
        refresh: ``(teacher, epoch) -> pseudo-label database`` (used when ``refresh_every`` > 0;
            must be idempotent: a resumed run calls it again for the last refresh epoch).
        labelled_fraction: 0 trains on the plain union (each video once per epoch); in (0, 1)
            a fixed labelled share per epoch (:class:`FixedShareEpochs`, seeded by the run seed).
        epoch_length: > 0: every epoch draws this many videos (:class:`FixedShareEpochs`, with
            the labelled share ``labelled_fraction``, or the union's natural share when that is
            0); 0: the union's length.
    """
    from stovtal.data import collate_videos
    from stovtal.engine import ModelEMA, Trainer

    if refresh_every > 0 and refresh is None:
        raise ValueError("refresh_every > 0 needs a refresh function")
    teacher = ModelEMA(student, decay=teacher_decay, warmup=False, init_state=dict(base_state))
    train_set: Dataset
    n_l, n_p = len(labelled), len(pseudo)  # type: ignore[arg-type]
    hooks: list[Any] = []
    if refresh_every > 0:
        hooks.append(PseudoLabelRefresh(pseudo, refresh, refresh_every))  # type: ignore[arg-type]
    drawn = labelled_fraction > 0 or epoch_length > 0
    if drawn and n_l > 0 and n_p > 0:
        share = labelled_fraction if labelled_fraction > 0 else n_l / (n_l + n_p)
        train_set = FixedShareEpochs(labelled, pseudo, share, train_cfg.seed, length=epoch_length or None)
        hooks.append(DrawEpoch(train_set))
    else:
        if drawn:
            log(f"retraining on the plain union (each video once per epoch): no share to fix and "
                f"no epoch to draw with {n_l} labelled and {n_p} pseudo-labelled videos")
        train_set = ConcatDataset([SourceTagged(labelled, False), pseudo])
    loss_fn = ConsistencyLoss(lambda: teacher.module, consistency_weight)
    return Trainer(student, train_set, train_cfg, workdir, collate_fn=collate_videos, loss_fn=loss_fn,
                   ema=teacher, log=log, extra_state=extra_state, hooks=hooks)
