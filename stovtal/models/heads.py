"""Prediction heads shared across pyramid levels (ActionFormer's ``PtTransformerClsHead`` /
``PtTransformerRegHead``): actionness logits and boundary distances."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import ChannelLayerNorm, MaskedConv1d

__all__ = ["ActionnessHead", "RegressionHead"]


class _ConvTower(nn.Module):
    """``num_layers - 1`` x (masked conv, LayerNorm or identity, ReLU), then a masked conv to ``out_dim``.

    With ``with_ln`` the hidden convs have no bias (the LayerNorm has one).
    """

    def __init__(self, dim: int, head_dim: int, out_dim: int, num_layers: int, kernel_size: int, with_ln: bool):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"a head needs at least 1 layer, got {num_layers}")
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        in_dim = dim
        for _ in range(num_layers - 1):
            self.convs.append(MaskedConv1d(in_dim, head_dim, kernel_size, bias=not with_ln))
            self.norms.append(ChannelLayerNorm(head_dim) if with_ln else nn.Identity())
            in_dim = head_dim
        self.out = MaskedConv1d(in_dim, out_dim, kernel_size)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        for conv, norm in zip(self.convs, self.norms, strict=True):
            x = F.relu(norm(conv(x, mask)[0]))
        return self.out(x, mask)[0]


class ActionnessHead(nn.Module):
    """One class-agnostic actionness logit per step; bias starts at ``logit(prior_prob)``.

    With ``num_classes > 1`` (a converted class-aware ActionFormer head) the tower has one
    output per class and the actionness logit is their maximum, so that
    ``sigmoid(actionness) = max_c sigmoid(logit_c)``.
    """

    def __init__(self, dim: int, head_dim: int, num_layers: int = 3, kernel_size: int = 3, prior_prob: float = 0.01,
                 with_ln: bool = True, num_classes: int = 1):
        super().__init__()
        self.tower = _ConvTower(dim, head_dim, num_classes, num_layers, kernel_size, with_ln)
        nn.init.constant_(self.tower.out.bias, -math.log((1 - prior_prob) / prior_prob))

    def forward(self, feats: list[Tensor], masks: list[Tensor]) -> list[Tensor]:
        """Per level ``[B, C, T_l]`` -> logits ``[B, T_l]``."""
        return [self.tower(x, m).amax(dim=1) for x, m in zip(feats, masks, strict=True)]


class RegressionHead(nn.Module):
    """Non-negative (start, end) distances per step, in units of the level's stride:
    ``relu(scale_l * tower(x))`` with a learnable scalar ``scale_l`` per level (initialised at 1)."""

    def __init__(self, dim: int, head_dim: int, num_levels: int, num_layers: int = 3, kernel_size: int = 3,
                 with_ln: bool = True):
        super().__init__()
        self.tower = _ConvTower(dim, head_dim, 2, num_layers, kernel_size, with_ln)
        self.scales = nn.Parameter(torch.ones(num_levels))

    def forward(self, feats: list[Tensor], masks: list[Tensor]) -> list[Tensor]:
        """Per level ``[B, C, T_l]`` -> offsets ``[B, T_l, 2]`` (>= 0)."""
        if len(feats) != self.scales.numel():
            raise ValueError(f"regression head built for {self.scales.numel()} levels, got {len(feats)}")
        return [
            F.relu(self.tower(x, m) * self.scales[i]).transpose(1, 2)
            for i, (x, m) in enumerate(zip(feats, masks, strict=True))
        ]
