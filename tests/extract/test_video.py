"""Both decoder backends return the requested frames and fail clearly on bad files."""

from __future__ import annotations

import numpy as np
import pytest

from stovtal.extract.video import VideoDecodeError, decord_status, open_video

BACKENDS = [
    "pyav",
    pytest.param("decord", marks=pytest.mark.skipif(not decord_status()[0], reason="no decord")),
]


@pytest.fixture(scope="module")
def clip40(tmp_path_factory, video_tools):
    write_video, _, _ = video_tools
    return write_video(tmp_path_factory.mktemp("v") / "clip40.mp4", 40, fps=25)


@pytest.mark.parametrize("backend", BACKENDS)
def test_frames_are_the_requested_ones(clip40, video_tools, backend):
    _, _, decode_frame = video_tools
    r = open_video(clip40, backend)
    assert r.num_frames == 40 and r.fps == pytest.approx(25.0)
    rng = np.random.default_rng(0)
    for idx in ([0, 1, 2], [5, 5, 39], rng.integers(0, 40, 12), [30, 3, 17], [39]):
        frames = r.get_frames(np.asarray(idx))
        assert frames.dtype == np.uint8 and frames.shape == (len(idx), 48, 64, 3)
        assert [decode_frame(f) for f in frames] == list(idx)
    with pytest.raises(VideoDecodeError, match="clip40.mp4.*outside"):
        r.get_frames(np.array([40]))
    r.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_files(tmp_path, backend):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00not a video" * 200)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    for path in (garbage, empty, tmp_path / "missing.mp4"):
        with pytest.raises(VideoDecodeError, match=path.name):
            open_video(path, backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_truncated_file(tmp_path, video_tools, backend):
    write_video, _, _ = video_tools
    src = write_video(tmp_path / "full.mp4", 60)
    data = open(src, "rb").read()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    # Either the header is unusable (moov at the end) or decoding fails; never garbage or a crash.
    with pytest.raises(VideoDecodeError, match="cut.mp4"):
        r = open_video(cut, backend)
        r.get_frames(np.arange(r.num_frames))


def test_unknown_backend(clip40):
    with pytest.raises(ValueError, match="backend"):
        open_video(clip40, "opencv")
