"""CoLA inside a FEEL iteration: build it, train it on the Trainer, run it, localise with it."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn
from tqdm import tqdm

from stovtal.engine.batches import EpochBatches
from stovtal.engine.trainer import SampleMeanLoss, Trainer, TrainerHook
from stovtal.models.cola import CoLA, cola_losses
from stovtal.models.cola_inference import LocalizeConfig, localize_video

from .config import FeelConfig

__all__ = ["CoLABatches", "build_model", "cola_loss", "forward_videos", "pad_batch", "predict", "train_cola"]


def build_model(cfg: FeelConfig, in_dim: int, num_classes: int) -> CoLA:
    """CoLA of the ``model`` section for ``in_dim``-d features and ``num_classes`` clusters."""
    return CoLA(dataclasses.replace(cfg.model, in_dim=in_dim, num_classes=num_classes))


def pad_batch(feats: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """List of ``[C, T_i]`` -> zero-padded ``[B, C, T_max]`` and mask ``[B, T_max]`` (True = valid)."""
    t_max = max(f.shape[1] for f in feats)
    out = feats[0].new_zeros(len(feats), feats[0].shape[0], t_max)
    mask = torch.zeros(len(feats), t_max, dtype=torch.bool)
    for i, f in enumerate(feats):
        out[i, :, : f.shape[1]] = f
        mask[i, : f.shape[1]] = True
    return out, mask


def _crop(f: torch.Tensor, max_len: int, gen: torch.Generator) -> torch.Tensor:
    t = f.shape[1]
    if t <= max_len:
        return f
    s = int(torch.randint(t - max_len + 1, (1,), generator=gen))
    return f[:, s : s + max_len]


class CoLABatches(EpochBatches):
    """Shuffled batches of pseudo-labelled videos for CoLA: ``{"x": [B, C, T_max], "mask":
    [B, T_max], "labels": [B]}``, videos longer than ``max_len`` snippets randomly cropped.

    One generator seeded with ``seed`` draws every epoch's order, the crops and (through
    :func:`cola_loss`) the easy-snippet mining; epoch 0 also seeds torch's global RNG with
    ``seed`` (dropout). Read the epochs in order: each continues the streams of the one before.
    """

    def __init__(self, feats: Sequence[torch.Tensor], labels: torch.Tensor, batch_size: int, max_len: int,
                 seed: int):
        if len(feats) != labels.shape[0] or len(feats) == 0:
            raise ValueError(f"CoLA training: {len(feats)} videos but {labels.shape[0]} labels")
        self.feats, self.labels = feats, labels
        self.batch_size, self.max_len, self.seed = batch_size, max_len, seed
        self.gen = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return math.ceil(len(self.feats) / self.batch_size)

    def epoch(self, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        if epoch == 0:
            torch.manual_seed(self.seed)
        order = torch.randperm(len(self.feats), generator=self.gen)
        for b in range(len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size].tolist()
            x, mask = pad_batch([_crop(self.feats[i], self.max_len, self.gen) for i in idx])
            yield {"x": x, "mask": mask, "labels": self.labels[idx]}


def cola_loss(batches: CoLABatches) -> Callable[[nn.Module, dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    """The Trainer loss of CoLA on ``batches``: ``{"loss": action + w * SniCo, "action", "snico"}``."""

    def loss_fn(model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = model(batch["x"], batch["mask"])
        losses = cola_losses(model, out, batch["labels"], batches.gen)
        return {"loss": losses["total"], "action": losses["action"], "snico": losses["snico"]}

    return loss_fn


class _PassBar(TrainerHook):
    """A progress bar over the training passes (epochs) with the last pass's mean loss."""

    def __init__(self, desc: str, enabled: bool):
        self.desc, self.enabled = desc, enabled

    def before_train(self, trainer: Trainer) -> None:
        self.bar = tqdm(total=trainer.num_epochs, desc=self.desc, disable=not self.enabled, leave=False)

    def after_epoch(self, trainer: Trainer, stats: dict[str, float]) -> None:
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{stats['loss']:.4f}")

    def after_train(self, trainer: Trainer) -> None:
        self.bar.close()


def train_cola(model: CoLA, feats: Sequence[torch.Tensor], labels: torch.Tensor, cfg: FeelConfig,
               seed: int, device: torch.device, desc: str = "train") -> list[float]:
    """Train ``model`` on videos ``feats`` (``[C, T]`` each) with pseudo-labels ``labels`` ``[N]``
    on the :class:`~stovtal.engine.trainer.Trainer`.

    ``cfg.train``: AdamW (or Adam with L2, CoLA's) decaying every parameter, at a warm-up +
    cosine-decayed (or constant, CoLA's) learning rate, gradient clipping (0: none), for
    ``epochs`` passes over the videos or, with ``iterations > 0``, that many batches (a new
    shuffle every pass), in float32 without an EMA; batches from :class:`CoLABatches`
    (deterministic for a ``seed``). Returns the mean total loss over the videos of each
    (possibly partial, last) pass.
    """
    tc = dataclasses.replace(cfg.train, amp=False, device=str(device), progress=False)
    batches = CoLABatches(feats, labels, tc.batch_size, cfg.data.max_seq_len, seed)
    history = SampleMeanLoss("labels")
    trainer = Trainer(model, batches, tc, None, loss_fn=cola_loss(batches), ema=False, decay_1d=True,
                      hooks=[history, _PassBar(desc, cfg.progress)], log=lambda _: None)
    trainer.fit()
    model.eval()
    return history.history


@torch.no_grad()
def forward_videos(model: CoLA, feats: Sequence[torch.Tensor], device: torch.device, batch_size: int = 16,
                   progress: bool = False, desc: str = "forward"):
    """Yield, per video, ``(cas [T, K], actionness [T], video_scores [K], embedding [E])`` (CPU)."""
    model.to(device).eval()
    order = sorted(range(len(feats)), key=lambda i: feats[i].shape[1])  # less padding
    results: list = [None] * len(feats)
    for b in tqdm(range(0, len(order), batch_size), desc=desc, disable=not progress, leave=False):
        idx = order[b : b + batch_size]
        x, mask = pad_batch([feats[i] for i in idx])
        out = model(x.to(device), mask.to(device))
        emb = model.video_embedding(out).cpu()
        for j, i in enumerate(idx):
            t = feats[i].shape[1]
            results[i] = (out["cas"][j, :t].cpu(), out["actionness"][j, :t].cpu(),
                          out["video_scores"][j].cpu(), emb[j])
    return results


def predict(outputs, durations: Sequence[float], fps: Sequence[float], stride: int, num_frames: int,
            loc: LocalizeConfig) -> list[dict[str, torch.Tensor]]:
    """Segments (seconds) per video from :func:`forward_videos` outputs; labels = cluster ids."""
    return [
        localize_video(cas, act, vs, fps=fps[i], stride=stride, num_frames=num_frames,
                       duration=durations[i], cfg=loc)
        for i, (cas, act, vs, _) in enumerate(outputs)
    ]
