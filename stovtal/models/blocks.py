"""Masked 1-D building blocks of the localizer (channels-first ``[B, C, T]``).

Every block takes a feature map ``x`` ``[B, C, T]`` and a validity mask
``mask`` bool ``[B, T]`` (True = a real snippet, False = padding) and returns
features that are exactly zero at padded positions, so that a video's output
does not depend on how much padding its batch added.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ChannelLayerNorm",
    "LocalMultiheadAttention",
    "MaskedConv1d",
    "MaskedDownsample",
    "PointwiseConv1d",
    "TransformerBlock",
    "local_attention",
]


class MaskedConv1d(nn.Conv1d):
    """``nn.Conv1d`` (stride 1, 'same' padding) whose output is zeroed at padded steps."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, bias: bool = True):
        if kernel_size % 2 != 1:
            raise ValueError(f"MaskedConv1d needs an odd kernel size, got {kernel_size}")
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:  # type: ignore[override]
        return super().forward(x) * mask.unsqueeze(1).to(x.dtype)


class PointwiseConv1d(nn.Linear):
    """A kernel-1 convolution on ``[B, C, T]`` computed as one batched matmul (much faster
    on CPU than ``nn.Conv1d(kernel_size=1)``, which takes a slow generic path)."""

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        out = torch.matmul(self.weight, x)
        if self.bias is not None:
            out = out + self.bias[:, None]
        return out


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of a ``[B, C, T]`` tensor (per time step)."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        mu = x.mean(dim=1, keepdim=True)
        var = (x - mu).pow(2).mean(dim=1, keepdim=True)
        x = (x - mu) * torch.rsqrt(var + self.eps)
        return x * self.weight[None, :, None] + self.bias[None, :, None]


def local_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, window: int) -> Tensor:
    """Multi-head self-attention restricted to a centred window of ``window`` steps.

    Args:
        q, k, v: ``[B, H, T, d]``.
        mask: bool ``[B, T]``; padded keys get no attention weight.
        window: odd window length; query t attends to keys ``t - window//2 .. t + window//2``.

    Returns:
        ``[B, H, T, d]``. Memory is ``O(T * window)``, not ``O(T^2)``. A query
        whose whole window is padding gets a zero output.
    """
    if window % 2 != 1 or window < 1:
        raise ValueError(f"local attention window must be odd and >= 1, got {window}")
    r = window // 2
    kw = F.pad(k, (0, 0, r, r)).unfold(2, window, 1)  # [B, H, T, d, w]
    vw = F.pad(v, (0, 0, r, r)).unfold(2, window, 1)
    mw = F.pad(mask, (r, r), value=False).unfold(1, window, 1)[:, None]  # [B, 1, T, w]
    att = torch.einsum("bhtd,bhtdw->bhtw", q, kw) / math.sqrt(q.shape[-1])
    att = att.masked_fill(~mw, torch.finfo(att.dtype).min)
    att = att.softmax(dim=-1) * mw.to(att.dtype)
    return torch.einsum("bhtw,bhtdw->bhtd", att, vw)


class LocalMultiheadAttention(nn.Module):
    """Masked multi-head self-attention over a local window of the snippet sequence."""

    def __init__(self, dim: int, num_heads: int, window: int, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"embedding dim {dim} is not divisible by num_heads {num_heads}")
        if window % 2 != 1 or window < 1:
            raise ValueError(f"local attention window must be odd and >= 1, got {window}")
        self.num_heads = num_heads
        self.window = window
        self.qkv = PointwiseConv1d(dim, 3 * dim)
        self.proj = PointwiseConv1d(dim, dim)
        self.attn_drop = attn_drop
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        b, c, t = x.shape
        h = self.num_heads
        q, k, v = self.qkv(x).view(b, 3, h, c // h, t).permute(1, 0, 2, 4, 3).unbind(0)  # [B,H,T,d]
        out = local_attention(q, k, v, mask, self.window)
        if self.attn_drop > 0 and self.training:
            out = F.dropout(out, self.attn_drop)
        out = out.permute(0, 1, 3, 2).reshape(b, c, t)
        return self.proj_drop(self.proj(out)) * mask.unsqueeze(1).to(x.dtype)


class _DropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch per sample while training."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = x.new_empty(x.shape[0], 1, 1).bernoulli_(1.0 - self.p)
        return x * keep / (1.0 - self.p)


class TransformerBlock(nn.Module):
    """Pre-norm transformer block: local masked MHA + 2-layer MLP (1x1 convs), residuals."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window: int,
        mlp_ratio: int = 4,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        path_drop: float = 0.0,
    ):
        super().__init__()
        self.norm1 = ChannelLayerNorm(dim)
        self.attn = LocalMultiheadAttention(dim, num_heads, window, attn_drop, proj_drop)
        self.norm2 = ChannelLayerNorm(dim)
        self.mlp = nn.Sequential(
            PointwiseConv1d(dim, mlp_ratio * dim),
            nn.GELU(),
            nn.Dropout(proj_drop),
            PointwiseConv1d(mlp_ratio * dim, dim),
            nn.Dropout(proj_drop),
        )
        self.drop_path = _DropPath(path_drop)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        m = mask.unsqueeze(1).to(x.dtype)
        x = x + self.drop_path(self.attn(self.norm1(x), mask))
        x = x + self.drop_path(self.mlp(self.norm2(x)) * m)
        return x * m


class MaskedDownsample(nn.Module):
    """Stride-2 max pooling (kernel 3) that ignores padded steps.

    Output step i pools input steps ``2i-1, 2i, 2i+1``; the output mask is
    ``mask[:, ::2]`` so step i of level l sits at input position ``i * 2**l``.
    """

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        neg = torch.finfo(x.dtype).min
        x = x.masked_fill(~mask.unsqueeze(1), neg)
        x = F.max_pool1d(x, kernel_size=3, stride=2, padding=1)
        out_mask = mask[:, ::2]
        x = x[..., : out_mask.shape[1]]
        return x.masked_fill(~out_mask.unsqueeze(1), 0.0), out_mask
