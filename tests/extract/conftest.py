"""Fixtures for the extraction tests: synthetic videos and a tiny open_clip model.

Videos are written with PyAV. Frame k shows k in binary as 8 vertical black/white
stripes (most significant bit left), which survives lossy encoding, so the frame
a decoder returned can be read back from its pixels.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

av = pytest.importorskip("av")
open_clip = pytest.importorskip("open_clip")

HEIGHT, WIDTH, BITS = 48, 64, 8

TINY_CLIP_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def code_frame(k: int) -> np.ndarray:
    img = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    w = WIDTH // BITS
    for b in range(BITS):
        if (k >> (BITS - 1 - b)) & 1:
            img[:, b * w : (b + 1) * w] = 255
    return img


def decode_frame(img: np.ndarray) -> int:
    w = img.shape[1] // BITS
    bits = [img[4:-4, b * w + 2 : (b + 1) * w - 2].mean() > 127 for b in range(BITS)]
    return int(sum(int(v) << (BITS - 1 - i) for i, v in enumerate(bits)))


def write_video(path, n_frames: int, fps: int = 30) -> str:
    assert n_frames < 2**BITS
    path = os.fspath(path)
    with av.open(path, "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        s.options = {"preset": "ultrafast", "crf": "10"}
        for k in range(n_frames):
            for p in s.encode(av.VideoFrame.from_ndarray(code_frame(k), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


@pytest.fixture(scope="session")
def video_tools():
    """(write_video, code_frame, decode_frame)."""
    return write_video, code_frame, decode_frame


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    """(config_json_path, checkpoint_path) of a randomly initialised tiny open_clip
    model, saved as users save theirs and loaded back through the public path."""
    import torch

    d = tmp_path_factory.mktemp("tiny_clip")
    cfg = d / "tiny-clip-test.json"
    cfg.write_text(json.dumps(TINY_CLIP_CFG))
    open_clip.add_model_config(str(cfg))
    torch.manual_seed(0)
    model = open_clip.create_model("tiny-clip-test")
    ckpt = d / "tiny.pt"
    torch.save(model.state_dict(), ckpt)
    return str(cfg), str(ckpt)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The tiny model's ops are microseconds long; with several intra-op threads on a
    busy 2-core machine thread hand-offs dominate (measured >10x slower), so these
    tests run single-threaded and restore the setting afterwards."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
