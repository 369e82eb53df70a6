"""Snippet/frame index arithmetic against a brute-force, time-based reference."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stovtal.extract.sampling import (
    num_snippets,
    num_target_frames,
    snippet_frame_indices,
    target_to_native,
)

RATES = st.sampled_from([10, 12, 15, 24, 25, 29.97, 30, 50, 59.94, 60])


def ref_frames(n_native, native_fps, fps):
    """Target frames by exact rational time: frame k (time k/fps) exists while it is
    before the end of the video, and shows the last native frame started by then."""
    nf, f = Fraction(native_fps).limit_denominator(1000), Fraction(fps).limit_denominator(1000)
    dur = Fraction(n_native) / nf
    out, k = [], 0
    while Fraction(k) / f < dur:
        t = Fraction(k) / f
        out.append(max(j for j in range(n_native) if Fraction(j) / nf <= t))
        k += 1
    return out


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 120), native=RATES, fps=RATES, stride=st.integers(1, 9), nfr=st.integers(1, 20)
)
def test_indices_match_time_based_reference(n, native, fps, stride, nfr):
    ref = ref_frames(n, native, fps)
    assert num_target_frames(n, native, fps) == len(ref)
    T = num_snippets(len(ref), stride, nfr)
    starts = [i for i in range(len(ref)) if i * stride + nfr <= len(ref)]
    expected_T = len(starts) if len(ref) >= nfr else (1 if ref else 0)
    assert T == expected_T
    if T == 0:
        return
    idx = snippet_frame_indices(range(T), n, native, fps, stride, nfr)
    assert idx.shape == (T, nfr)
    for i in range(T):
        want = [ref[min(i * stride + m, len(ref) - 1)] for m in range(nfr)]
        assert idx[i].tolist() == want


def test_identity_at_native_rate():
    k = np.arange(100)
    assert target_to_native(k, 100, 30.0, 30.0).tolist() == k.tolist()
    idx = snippet_frame_indices([0, 1, 5], 100, 30.0, 30.0, 16, 16)
    assert idx[2, 0] == 80 and idx[2, -1] == 95


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf")])
def test_bad_rates_rejected(bad):
    with pytest.raises(ValueError, match="fps"):
        num_target_frames(10, bad, 30.0)
    with pytest.raises(ValueError, match="fps"):
        num_target_frames(10, 30.0, bad)


def test_bad_window_rejected():
    with pytest.raises(ValueError, match="stride"):
        num_snippets(10, 0, 4)
    with pytest.raises(ValueError, match="no frames"):
        snippet_frame_indices([0], 0, 30.0, 30.0, 4, 4)
