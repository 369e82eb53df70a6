"""A check of a trained localizer's regression head: is one of its outputs dead?

The regression head predicts the distances from an anchor to a segment's start and end as
``relu(scale_l * tower(x))`` (ActionFormer's ``PtTransformerRegHead`` has the same ReLU). If
training drives one of the two outputs below zero at every position, the ReLU passes no
gradient to it and it never recovers: every predicted segment then starts (or ends) at its
anchor, the regression loss stays high and the mAP collapses. It happens with some seeds of a
narrow head; it is visible only in the outputs, not in the loss curve's shape.

:func:`regression_output_activity` measures, for each output, the share of valid pyramid
positions at which it is positive before the ReLU; :class:`RegressionHeadCheck` runs it on
training videos at the end of a training run and logs a warning when an output is dead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from .trainer import TrainerHook

__all__ = ["RegressionHeadCheck", "dead_output_warning", "regression_output_activity"]

OUTPUT_NAMES = ("start", "end")


@torch.no_grad()
def regression_output_activity(model: nn.Module, batches: Iterable[Mapping[str, Any]]) -> Tensor:
    """Share of valid positions (all pyramid levels pooled) at which each regression output is
    positive before the ReLU.

    Args:
        model: an :class:`stovtal.models.ActionLocalizer` (its ``reg_head`` is probed); run in
            eval mode, restored afterwards.
        batches: dicts with ``feats`` float ``[B, C, T]`` and ``masks`` bool ``[B, T]`` (the
            output of :func:`stovtal.data.collate_videos`).

    Returns:
        float64 ``[2]``: the shares for the start and end distances, in [0, 1]; NaN when the
        batches hold no valid position.
    """
    head = model.reg_head
    positive = torch.zeros(2, dtype=torch.float64)
    total = 0
    pre: list[tuple[Tensor, Tensor]] = []

    def record(module: nn.Module, args: tuple[Any, ...], out: Tensor) -> None:
        pre.append((out.detach(), args[1].detach()))

    handle = head.tower.register_forward_hook(record)
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        for batch in batches:
            pre.clear()
            model(batch["feats"].to(device), batch["masks"].to(device))
            for level, (out, mask) in enumerate(pre):
                valid = mask.to(torch.bool)  # [B, T_l]
                signed = out * head.scales[level]  # [B, 2, T_l]
                positive += ((signed > 0) & valid[:, None, :]).sum(dim=(0, 2)).double().cpu()
                total += int(valid.sum())
    finally:
        handle.remove()
        model.train(was_training)
    return positive / total if total else torch.full((2,), float("nan"), dtype=torch.float64)


def dead_output_warning(activity: Tensor, num_videos: int, min_share: float = 0.01) -> str | None:
    """The warning for the outputs of ``activity`` (from :func:`regression_output_activity`)
    positive at fewer than ``min_share`` of the positions, or None."""
    dead = [(name, float(a)) for name, a in zip(OUTPUT_NAMES, activity, strict=True) if float(a) < min_share]
    if not dead:
        return None
    what = " and ".join(f"{name}-distance output is positive at {100 * a:.2f}%" for name, a in dead)
    return (f"warning: the regression head's {what} of the positions of {num_videos} training videos: "
            "dead (the ReLU passes it no gradient), so the predicted segments collapse onto their "
            "anchors and the mAP with them; train again with another seed")


class RegressionHeadCheck(TrainerHook):
    """After training: probe the EMA model (what is exported) on the first ``num_videos`` items
    of ``dataset`` and log :func:`dead_output_warning`'s message when an output is dead.

    ``activity`` holds the measured shares ``[2]`` afterwards.
    """

    def __init__(self, dataset: Any, collate_fn: Callable[[list[Any]], Mapping[str, Any]],
                 log: Callable[[str], None] = print, num_videos: int = 32, batch_size: int = 8,
                 min_share: float = 0.01):
        self.dataset, self.collate_fn, self.log = dataset, collate_fn, log
        self.num_videos, self.batch_size, self.min_share = num_videos, batch_size, min_share
        self.activity: Tensor | None = None

    def after_train(self, trainer: Any) -> None:
        n = min(self.num_videos, len(self.dataset))
        if n == 0:
            return
        batches = DataLoader(Subset(self.dataset, range(n)), batch_size=self.batch_size, collate_fn=self.collate_fn)
        self.activity = regression_output_activity(trainer.ema.module, batches)
        msg = dead_output_warning(self.activity, n, self.min_share)
        if msg:
            self.log(msg)
