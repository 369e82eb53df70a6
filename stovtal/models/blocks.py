"""Masked 1-D building blocks of the localizer (channels-first ``[B, C, T]``), ActionFormer's.

Every block takes a feature map ``x`` ``[B, C, T]`` and a validity mask ``mask`` bool
``[B, T]`` (True = a real snippet, False = padding). As in ActionFormer
(happyharrycn/actionformer_release, ``libs/modeling/blocks.py``), convolutions and
attention zero their outputs at padded steps, while LayerNorms and activations are applied
everywhere (a LayerNorm turns a zero padded column into its bias). The value a padded
column takes therefore does not depend on how much padding a batch added, and neither do
the outputs at valid steps (the padding-invariance tests check this).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "AffineDropPath",
    "ChannelLayerNorm",
    "ConvAttention",
    "MaskedConv1d",
    "PointwiseConv1d",
    "TransformerBlock",
    "global_attention",
    "local_attention",
    "sinusoid_encoding",
]


class MaskedConv1d(nn.Conv1d):
    """``nn.Conv1d`` with 'same' padding and an optional stride, zeroed at padded outputs.

    ``forward(x [B, C_in, T], mask [B, T]) -> (y [B, C_out, T // stride], mask[:, ::stride])``.
    ``T`` must be divisible by ``stride``; the output mask keeps every ``stride``-th step
    (ActionFormer's nearest-neighbour mask downsampling).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 groups: int = 1, bias: bool = True):
        if kernel_size % 2 != 1:
            raise ValueError(f"MaskedConv1d needs an odd kernel size, got {kernel_size}")
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2,
                         groups=groups, bias=bias)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        s = self.stride[0]
        if x.shape[-1] % s != 0:
            raise ValueError(f"MaskedConv1d: length {x.shape[-1]} is not divisible by the stride {s}")
        out_mask = mask[:, ::s] if s > 1 else mask
        return super().forward(x) * out_mask.unsqueeze(1).to(x.dtype), out_mask


class PointwiseConv1d(nn.Linear):
    """A kernel-1 convolution on ``[B, C, T]`` computed as one batched matmul (much faster
    on CPU than ``nn.Conv1d(kernel_size=1)``). Weight ``[C_out, C_in]``, bias zero-initialised."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__(in_features, out_features, bias)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        out = torch.matmul(self.weight, x)
        if self.bias is not None:
            out = out + self.bias[:, None]
        return out


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of a ``[B, C, T]`` tensor (per time step), eps 1e-5."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        mu = x.mean(dim=1, keepdim=True)
        res = x - mu
        var = res.pow(2).mean(dim=1, keepdim=True)
        return res / torch.sqrt(var + self.eps) * self.weight[None, :, None] + self.bias[None, :, None]


def sinusoid_encoding(length: int, dim: int) -> Tensor:
    """Sinusoidal position table ``[dim, length]`` (float32): channel ``2i`` is
    ``sin(t / 10000^(2i/dim))``, channel ``2i+1`` the cosine of the same angle."""
    pos = torch.arange(length, dtype=torch.float64)[None, :]
    j = torch.arange(dim, dtype=torch.float64)[:, None]
    angle = pos / torch.pow(10000.0, 2 * torch.div(j, 2, rounding_mode="floor") / dim)
    table = torch.where(j.long() % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.float()


def global_attention(q: Tensor, k: Tensor, v: Tensor, kv_mask: Tensor, dropout: float = 0.0,
                     training: bool = False) -> Tensor:
    """Masked multi-head attention over all valid keys.

    Args:
        q: ``[B, H, Tq, d]``; k, v: ``[B, H, Tk, d]``; kv_mask: bool ``[B, Tk]``.
        dropout: dropout on the attention probabilities (applied when ``training``).

    Returns ``[B, H, Tq, d]``. A video needs at least one valid key.
    """
    att = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    att = att.masked_fill(~kv_mask[:, None, None, :], float("-inf")).softmax(dim=-1)
    if dropout > 0 and training:
        att = F.dropout(att, dropout)
    return torch.matmul(att, v * kv_mask[:, None, :, None].to(v.dtype))


def local_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, window: int, block: int = 16,
                    bias: Tensor | None = None, dropout: float = 0.0, training: bool = False) -> Tensor:
    """Multi-head self-attention restricted to a centred window of ``window`` steps.

    Args:
        q, k, v: ``[B, H, T, d]``.
        mask: bool ``[B, T]``; padded keys get no attention weight.
        window: odd window length; query t attends to keys ``t - window//2 .. t + window//2``.
        block: queries are processed in blocks of this many steps (a tuning knob only: the
            result does not depend on it beyond float rounding).
        bias: optional ``[H, window]`` added to the scores, indexed by the key's offset
            ``-window//2 .. window//2`` from the query (ActionFormer's relative position encoding).
        dropout: dropout on the attention probabilities (applied when ``training``).

    Returns:
        ``[B, H, T, d]``. A query whose whole window is padding gets a zero output.

    Each block of ``block`` queries attends to the ``block + window - 1`` keys that cover all
    their windows, as two batched matrix products, with a band mask removing the keys outside
    each query's own window; memory is ``O(T * (block + window))``.
    """
    if window % 2 != 1 or window < 1:
        raise ValueError(f"local attention window must be odd and >= 1, got {window}")
    if block < 1:
        raise ValueError(f"local attention block must be >= 1, got {block}")
    r = window // 2
    b, h, t, d = q.shape
    nb = -(-t // block)
    extra = nb * block - t
    span = block + 2 * r
    qb = F.pad(q, (0, 0, 0, extra)).view(b, h, nb, block, d)
    kb = F.pad(k, (0, 0, r, extra + r)).unfold(2, span, block)  # [B, H, nb, d, span]
    vb = F.pad(v, (0, 0, r, extra + r)).unfold(2, span, block)
    mb = F.pad(mask, (r, extra + r), value=False).unfold(1, span, block)  # [B, nb, span]
    j = torch.arange(block, device=q.device)[:, None]
    m = torch.arange(span, device=q.device)[None, :]
    band = (m >= j) & (m <= j + 2 * r)  # key m of the block's span is in query j's window
    allowed = (band[None, None] & mb[:, :, None, :])[:, None]  # [B, 1, nb, block, span]
    att = torch.matmul(qb, kb) / math.sqrt(d)  # [B, H, nb, block, span]
    if bias is not None:
        if bias.shape != (h, window):
            raise ValueError(f"local attention bias must be [H, window] = {(h, window)}, got {tuple(bias.shape)}")
        # key m of the span is at offset m - j - r from query j: gather bias[:, m - j]
        rel = (m - j).clamp(0, 2 * r)  # [block, span]
        att = att + bias[:, rel][None, :, None].to(att.dtype)
    att = att.masked_fill(~allowed, torch.finfo(att.dtype).min)
    att = att.softmax(dim=-1) * allowed.to(att.dtype)
    if dropout > 0 and training:
        att = F.dropout(att, dropout)
    out = torch.matmul(att, vb.transpose(-1, -2))  # [B, H, nb, block, d]
    return out.reshape(b, h, nb * block, d)[:, :, :t]


class ConvAttention(nn.Module):
    """ActionFormer's ``MaskedMHCA`` (``window <= 1``: global) / ``LocalMaskedMHCA`` (``window > 1``).

    q, k and v each come from a depthwise :class:`MaskedConv1d` (kernel 3, or ``stride + 1``
    with that stride when downsampling) followed by a LayerNorm and a 1x1 projection; the
    attention is masked to valid keys (and, for ``window > 1``, to the centred window), then
    an output projection with dropout, zeroed at padded outputs.

    ``forward(x [B, C, T], mask [B, T]) -> (out [B, C, T // stride], out_mask [B, T // stride])``.
    """

    def __init__(self, dim: int, num_heads: int, window: int = -1, stride: int = 1, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, use_rel_pe: bool = False):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"embedding dim {dim} is not divisible by num_heads {num_heads}")
        if stride != 1 and stride % 2 != 0:
            raise ValueError(f"attention downsampling stride must be 1 or even, got {stride}")
        if window > 1 and window % 2 != 1:
            raise ValueError(f"local attention window must be odd, got {window}")
        if use_rel_pe and window <= 1:
            raise ValueError("use_rel_pe needs local attention (window > 1), as in ActionFormer")
        self.num_heads = num_heads
        self.window = window
        self.attn_drop = attn_drop
        kernel = stride + 1 if stride > 1 else 3
        self.q_conv = MaskedConv1d(dim, dim, kernel, stride=stride, groups=dim, bias=False)
        self.k_conv = MaskedConv1d(dim, dim, kernel, stride=stride, groups=dim, bias=False)
        self.v_conv = MaskedConv1d(dim, dim, kernel, stride=stride, groups=dim, bias=False)
        self.q_norm = ChannelLayerNorm(dim)
        self.k_norm = ChannelLayerNorm(dim)
        self.v_norm = ChannelLayerNorm(dim)
        self.q_proj = PointwiseConv1d(dim, dim)
        self.k_proj = PointwiseConv1d(dim, dim)
        self.v_proj = PointwiseConv1d(dim, dim)
        self.out_proj = PointwiseConv1d(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        if use_rel_pe:
            self.rel_pe = nn.Parameter(torch.zeros(num_heads, window))
            nn.init.trunc_normal_(self.rel_pe, std=(2.0 / dim) ** 0.5)
        else:
            self.rel_pe = None

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        b, c, _ = x.shape
        h = self.num_heads
        q, out_mask = self.q_conv(x, mask)
        k, kv_mask = self.k_conv(x, mask)
        v, _ = self.v_conv(x, mask)
        q = self.q_proj(self.q_norm(q))
        k = self.k_proj(self.k_norm(k))
        v = self.v_proj(self.v_norm(v))
        q, k, v = (z.view(b, h, c // h, -1).transpose(2, 3) for z in (q, k, v))  # [B, H, T', d]
        if self.window > 1:
            out = local_attention(q, k, v, kv_mask, self.window, bias=self.rel_pe, dropout=self.attn_drop,
                                  training=self.training)
        else:
            out = global_attention(q, k, v, kv_mask, self.attn_drop, self.training)
        out = out.transpose(2, 3).reshape(b, c, -1)
        return self.proj_drop(self.out_proj(out)) * out_mask.unsqueeze(1).to(x.dtype), out_mask


class AffineDropPath(nn.Module):
    """A per-channel scale (initialised at ``init_scale``) followed by stochastic depth
    (the whole residual branch of a sample dropped with probability ``p`` while training)."""

    def __init__(self, dim: int, p: float, init_scale: float = 1e-4):
        super().__init__()
        self.p = p
        self.scale = nn.Parameter(torch.full((dim,), init_scale))

    def forward(self, x: Tensor) -> Tensor:
        x = x * self.scale[None, :, None]
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        sample = torch.floor(keep + torch.rand(x.shape[0], 1, 1, dtype=x.dtype, device=x.device))
        return x / keep * sample


class TransformerBlock(nn.Module):
    """ActionFormer's pre-LN transformer block, optionally downsampling by ``stride``.

    ``out = skip(x) + drop_path(attn(LN(x)))``, then ``out += drop_path(MLP(LN(out)))``;
    ``skip`` is a max-pool (kernel ``stride + 1``, zero-padded input included) when
    ``stride > 1``; the MLP is 1x1 conv -> GELU -> dropout -> 1x1 conv -> dropout with
    ``mlp_ratio * dim`` hidden channels; drop-path is :class:`AffineDropPath` when
    ``path_drop > 0`` and the identity otherwise.
    """

    def __init__(self, dim: int, num_heads: int, window: int = -1, stride: int = 1, mlp_ratio: int = 4,
                 attn_drop: float = 0.0, proj_drop: float = 0.0, path_drop: float = 0.0, use_rel_pe: bool = False):
        super().__init__()
        self.stride = stride
        self.norm1 = ChannelLayerNorm(dim)
        self.attn = ConvAttention(dim, num_heads, window, stride, attn_drop, proj_drop, use_rel_pe)
        self.norm2 = ChannelLayerNorm(dim)
        self.mlp = nn.Sequential(
            PointwiseConv1d(dim, mlp_ratio * dim),
            nn.GELU(),
            nn.Dropout(proj_drop),
            PointwiseConv1d(mlp_ratio * dim, dim),
            nn.Dropout(proj_drop),
        )
        if path_drop > 0:
            self.drop_path_attn: nn.Module = AffineDropPath(dim, path_drop)
            self.drop_path_mlp: nn.Module = AffineDropPath(dim, path_drop)
        else:
            self.drop_path_attn = nn.Identity()
            self.drop_path_mlp = nn.Identity()

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        out, out_mask = self.attn(self.norm1(x), mask)
        m = out_mask.unsqueeze(1).to(x.dtype)
        s = self.stride
        skip = F.max_pool1d(x, s + 1, stride=s, padding=(s + 1) // 2) if s > 1 else x
        out = skip * m + self.drop_path_attn(out)
        out = out + self.drop_path_mlp(self.mlp(self.norm2(out)) * m)
        return out, out_mask
