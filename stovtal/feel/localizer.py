"""Training and running the CoLA localizer inside a FEEL iteration."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch
from tqdm import tqdm

from stovtal.models.cola import CoLA, CoLAConfig, cola_losses
from stovtal.models.cola_inference import LocalizeConfig, localize_video

from .config import FeelConfig

__all__ = ["build_model", "pad_batch", "train_cola", "forward_videos", "predict"]


def build_model(cfg: FeelConfig, in_dim: int, num_classes: int) -> CoLA:
    # FEEL's model section holds exactly CoLA's hyper-parameters (with FEEL's defaults).
    return CoLA(CoLAConfig(in_dim=in_dim, num_classes=num_classes, **dataclasses.asdict(cfg.model)))


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


def train_cola(model: CoLA, feats: Sequence[torch.Tensor], labels: torch.Tensor, cfg: FeelConfig,
               seed: int, device: torch.device, desc: str = "train") -> list[float]:
    """Train ``model`` on videos ``feats`` (``[C, T]`` each) with pseudo-labels ``labels`` ``[N]``.

    ``cfg.train``: AdamW (or Adam with L2, CoLA's) at a cosine-decayed (or constant, CoLA's)
    learning rate, gradient clipping (0: none), for ``epochs`` passes over the videos or, with
    ``iterations > 0``, that many batches (a new shuffle every pass); deterministic for a
    ``seed``. Returns the mean total loss of each (possibly partial, last) pass.
    """
    if len(feats) != labels.shape[0] or len(feats) == 0:
        raise ValueError(f"train_cola: {len(feats)} videos but {labels.shape[0]} labels")
    tc = cfg.train
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # dropout
    model.to(device).train()
    opt_cls = torch.optim.Adam if tc.optimizer == "adam" else torch.optim.AdamW
    opt = opt_cls(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    steps_per_epoch = math.ceil(len(feats) / tc.batch_size)
    total_steps = tc.iterations if tc.iterations > 0 else tc.epochs * steps_per_epoch
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)
             if tc.schedule == "cosine" else None)
    history = []
    step = 0
    bar = tqdm(range(math.ceil(total_steps / steps_per_epoch)), desc=desc, disable=not cfg.progress,
               leave=False)
    for _ in bar:
        order = torch.randperm(len(feats), generator=gen)
        total, count = 0.0, 0
        for b in range(min(steps_per_epoch, total_steps - step)):
            idx = order[b * tc.batch_size : (b + 1) * tc.batch_size].tolist()
            x, mask = pad_batch([_crop(feats[i], tc.max_seq_len, gen) for i in idx])
            out = model(x.to(device), mask.to(device))
            losses = cola_losses(model, out, labels[idx].to(device), gen)
            opt.zero_grad(set_to_none=True)
            losses["total"].backward()
            if tc.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            opt.step()
            if sched is not None:
                sched.step()
            step += 1
            loss = float(losses["total"].detach())
            if not math.isfinite(loss):
                raise FloatingPointError("CoLA training diverged (non-finite loss)")
            total += loss * len(idx)
            count += len(idx)
        history.append(total / count)
        bar.set_postfix(loss=f"{history[-1]:.4f}")
    model.eval()
    return history


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
