"""Blocked local attention against a dense reference (full T x T scores with a band mask)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stovtal.models.blocks import local_attention


def dense_reference(q, k, v, mask, window):
    """Every query attends to the valid keys within ``window // 2`` steps; none valid -> 0."""
    r = window // 2
    t = q.shape[2]
    idx = torch.arange(t)
    band = (idx[None, :] - idx[:, None]).abs() <= r  # [T(query), T(key)]
    allowed = band[None, None] & mask[:, None, None, :]  # [B, 1, T, T]
    att = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    att = att.masked_fill(~allowed, float("-inf"))
    w = torch.nan_to_num(att.softmax(-1), nan=0.0)  # all -inf rows -> zero weights
    return torch.matmul(w, v)


@settings(max_examples=40, deadline=None)
@given(
    b=st.integers(1, 3), h=st.integers(1, 3), t=st.integers(1, 70), d=st.integers(1, 8),
    r=st.integers(0, 6), block=st.integers(1, 20), seed=st.integers(0, 2**16),
)
def test_matches_dense_reference(b, h, t, d, r, block, seed):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, h, t, d, generator=g, dtype=torch.float64) for _ in range(3))
    mask = torch.rand(b, t, generator=g) > 0.3
    mask[0, : max(1, t // 3)] = False  # a leading padded run: some windows are entirely padding
    out = local_attention(q, k, v, mask, 2 * r + 1, block=block)
    ref = dense_reference(q, k, v, mask, 2 * r + 1)
    assert out.shape == (b, h, t, d)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


def test_fully_masked_window_gives_zero():
    q, k, v = (torch.randn(1, 2, 10, 4) for _ in range(3))
    mask = torch.zeros(1, 10, dtype=torch.bool)
    mask[0, 9] = True
    out = local_attention(q, k, v, mask, 3)
    assert out[0, :, :8].abs().max() == 0  # windows of queries 0..7 hold no valid key
    assert out[0, :, 8:].abs().min() > 0


def test_gradients_match_reference():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 37, 5, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))
    mask = torch.ones(2, 37, dtype=torch.bool)
    mask[1, 30:] = False
    w = torch.randn(2, 2, 37, 5, generator=g, dtype=torch.float64)
    grads = torch.autograd.grad((local_attention(q, k, v, mask, 7, block=8) * w).sum(), (q, k, v))
    ref = torch.autograd.grad((dense_reference(q, k, v, mask, 7) * w).sum(), (q, k, v))
    for a, e in zip(grads, ref, strict=True):
        torch.testing.assert_close(a, e)


def test_bad_arguments():
    q = torch.randn(1, 1, 4, 2)
    m = torch.ones(1, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="odd"):
        local_attention(q, q, q, m, 4)
    with pytest.raises(ValueError, match="block"):
        local_attention(q, q, q, m, 3, block=0)
