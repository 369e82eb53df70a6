"""Feature extraction throughput on CPU: one 10 s 320x240 30 fps video (300 frames),
16-frame snippets at stride 16 (every frame encoded once), tiny randomly initialised
open_clip model (image size 32), so decoding and preprocessing dominate.
Groups compare the decord and PyAV backends; ``extra_info`` has frames/s.

The encoder of a real model (ViT-B/16 at 224 px) costs far more per frame; this
measures the pipeline around it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

av = pytest.importorskip("av")
open_clip = pytest.importorskip("open_clip")

from stovtal.extract.extractor import ClipFrameEncoder, extract_video  # noqa: E402
from stovtal.extract.video import decord_status, open_video  # noqa: E402
from stovtal.models.open_clip_loading import load_open_clip  # noqa: E402

N_FRAMES, H, W = 300, 240, 320
CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench_extract")
    rng = np.random.default_rng(0)
    path = str(d / "clip.mp4")
    base = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
    with av.open(path, "w") as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        for k in range(N_FRAMES):
            frame = np.roll(base, 3 * k, axis=1)  # moving texture, like real content
            for p in s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    cfg = d / "tiny-bench.json"
    cfg.write_text(json.dumps(CFG))
    open_clip.add_model_config(str(cfg))
    torch.manual_seed(0)
    ckpt = d / "tiny.pt"
    torch.save(open_clip.create_model("tiny-bench").state_dict(), ckpt)
    return path, ClipFrameEncoder(load_open_clip(str(cfg), str(ckpt), "cpu"))


@pytest.mark.parametrize(
    "backend",
    [
        "pyav",
        pytest.param(
            "decord", marks=pytest.mark.skipif(not decord_status()[0], reason="no decord")
        ),
    ],
)
def test_extract_video(benchmark, setup, backend):
    path, encoder = setup
    benchmark.group = "extract: 300-frame 320x240 video, tiny model"

    def run():
        r = open_video(path, backend)
        try:
            return extract_video(r, encoder, 30.0, 16, 16, 64)
        finally:
            r.close()

    feats, info = benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    assert feats.shape == ((N_FRAMES - 16) // 16 + 1, 16)
    benchmark.extra_info["frames_per_s"] = N_FRAMES / benchmark.stats.stats.mean
    benchmark.extra_info["videos_per_s"] = 1 / benchmark.stats.stats.mean
