"""Exponential moving average of model weights (also the Mean Teacher's teacher)."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

__all__ = ["ModelEMA"]


class ModelEMA:
    """Keeps ``ema = d * ema + (1 - d) * model`` for floating-point parameters and
    buffers after each :meth:`update`; integer buffers are copied.

    Args:
        model: the trained (student) model; the EMA starts as a deep copy of it,
            unless ``init_state`` (a state dict, e.g. a base model's weights, as
            the Mean Teacher's teacher) is given.
        decay: d, e.g. 0.999.
        warmup: if True the effective decay is ``min(d, (1 + n) / (10 + n))`` after
            n updates, so that short runs are not dominated by the initial
            weights. Use False for a teacher that must start from ``init_state``.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = False,
                 init_state: dict[str, torch.Tensor] | None = None):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0
        self.module = copy.deepcopy(model).eval()
        if init_state is not None:
            self.module.load_state_dict(init_state)
        for p in self.module.parameters():
            p.requires_grad_(False)

    def current_decay(self) -> float:
        if self.warmup:
            return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        return self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        src = model.state_dict()
        for name, ema_v in self.module.state_dict().items():
            v = src[name].detach()
            if ema_v.dtype.is_floating_point:
                ema_v.mul_(d).add_(v.to(ema_v.dtype), alpha=1.0 - d)
            else:
                ema_v.copy_(v)
        self.num_updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "num_updates": self.num_updates, "decay": self.decay}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.num_updates = int(state["num_updates"])
