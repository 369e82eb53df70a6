"""extract_video's blocking/caching against brute force, with a fake decoder and encoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stovtal.extract.extractor import extract_video
from stovtal.extract.sampling import snippet_frame_indices


class FakeReader:
    """Frame j is a 1x1 image whose pixel stores j; records every request."""

    backend = "fake"
    path = "fake.mp4"

    def __init__(self, n, fps):
        self.num_frames, self.fps, self.requests = n, fps, []

    def get_frames(self, idx):
        idx = np.asarray(idx)
        assert idx.min() >= 0 and idx.max() < self.num_frames
        self.requests.append(idx.copy())
        out = np.zeros((len(idx), 1, 1, 3), np.uint8)
        out[:, 0, 0, 0], out[:, 0, 0, 1] = idx % 256, idx // 256
        return out


def fake_embedding(j, dim=6):
    g = torch.Generator().manual_seed(int(j))
    return torch.randn(dim, generator=g, dtype=torch.float64) + 0.5


def fake_encode(frames):
    j = frames[:, 0, 0, 0].astype(np.int64) + 256 * frames[:, 0, 0, 1].astype(np.int64)
    return torch.stack([fake_embedding(x) for x in j]).float()


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 300),
    native=st.sampled_from([15.0, 25.0, 30.0, 60.0]),
    fps=st.sampled_from([None, 10.0, 30.0]),
    stride=st.integers(1, 20),
    nfr=st.integers(1, 20),
    batch=st.integers(1, 50),
)
def test_pooling_blocks_and_memory_bound(n, native, fps, stride, nfr, batch):
    reader = FakeReader(n, native)
    feats, info = extract_video(reader, fake_encode, fps, stride, nfr, batch)
    T = info["num_snippets"]
    assert feats.shape == (T, 6) and feats.dtype == np.float32
    idx = snippet_frame_indices(range(T), n, native, fps or native, stride, nfr)
    for i in range(T):  # brute force: mean of the window's frame embeddings, normalised
        v = torch.stack([fake_embedding(j) for j in idx[i]]).mean(0)
        np.testing.assert_allclose(feats[i], (v / v.norm()).numpy(), atol=2e-6)
    requested = np.concatenate(reader.requests)
    assert max(len(r) for r in reader.requests) <= batch  # at most one batch of frames in memory
    assert len(requested) == len(np.unique(requested))  # every frame decoded once
    assert set(requested.tolist()) == set(np.unique(idx).tolist())  # and only the needed ones
    assert all(
        np.all(np.diff(r) > 0) for r in reader.requests
    )  # increasing: sequential decoders never seek back
    assert np.all(np.diff([r[0] for r in reader.requests]) > 0)


def test_encoder_failures_are_not_silent():
    reader = FakeReader(40, 30.0)
    with pytest.raises(RuntimeError, match="NaN/Inf or zero"):
        extract_video(reader, lambda f: torch.full((len(f), 4), float("nan")), None, 4, 8, 16)
    with pytest.raises(RuntimeError, match="returned shape"):
        extract_video(reader, lambda f: torch.ones(len(f) + 1, 4), None, 4, 8, 16)
    with pytest.raises(ValueError, match="batch_size"):
        extract_video(reader, fake_encode, None, 4, 8, 0)
