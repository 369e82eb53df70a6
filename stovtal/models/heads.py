"""Prediction heads shared across pyramid levels: actionness and boundary regression."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import ChannelLayerNorm, MaskedConv1d

__all__ = ["ActionnessHead", "RegressionHead"]


class _ConvTower(nn.Module):
    """``num_layers - 1`` x (masked conv, LayerNorm, ReLU), then a masked conv to ``out_dim``."""

    def __init__(self, dim: int, head_dim: int, out_dim: int, num_layers: int, kernel_size: int):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"a head needs at least 1 layer, got {num_layers}")
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        in_dim = dim
        for _ in range(num_layers - 1):
            self.convs.append(MaskedConv1d(in_dim, head_dim, kernel_size, bias=False))
            self.norms.append(ChannelLayerNorm(head_dim))
            in_dim = head_dim
        self.out = MaskedConv1d(in_dim, out_dim, kernel_size)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        m = mask.unsqueeze(1).to(x.dtype)
        for conv, norm in zip(self.convs, self.norms, strict=True):
            x = F.relu(norm(conv(x, mask))) * m
        return self.out(x, mask)


class ActionnessHead(nn.Module):
    """One class-agnostic actionness logit per step; bias starts at ``logit(prior_prob)``."""

    def __init__(self, dim: int, head_dim: int, num_layers: int = 3, kernel_size: int = 3, prior_prob: float = 0.01):
        super().__init__()
        self.tower = _ConvTower(dim, head_dim, 1, num_layers, kernel_size)
        nn.init.constant_(self.tower.out.bias, -math.log((1 - prior_prob) / prior_prob))

    def forward(self, feats: list[Tensor], masks: list[Tensor]) -> list[Tensor]:
        """Per level ``[B, C, T_l]`` -> logits ``[B, T_l]``."""
        return [self.tower(x, m)[:, 0] for x, m in zip(feats, masks, strict=True)]


class RegressionHead(nn.Module):
    """Non-negative (start, end) distances per step, in units of the level's stride.

    A learnable scale per level lets the shared tower serve all strides.
    """

    def __init__(self, dim: int, head_dim: int, num_levels: int, num_layers: int = 3, kernel_size: int = 3):
        super().__init__()
        self.tower = _ConvTower(dim, head_dim, 2, num_layers, kernel_size)
        self.scales = nn.Parameter(torch.ones(num_levels))

    def forward(self, feats: list[Tensor], masks: list[Tensor]) -> list[Tensor]:
        """Per level ``[B, C, T_l]`` -> offsets ``[B, T_l, 2]`` (>= 0)."""
        if len(feats) != self.scales.numel():
            raise ValueError(f"regression head built for {self.scales.numel()} levels, got {len(feats)}")
        return [
            F.relu(self.tower(x, m) * self.scales[i]).transpose(1, 2)
            for i, (x, m) in enumerate(zip(feats, masks, strict=True))
        ]
