"""End to end: videos on disk -> feature files, checked against an independent reference."""

from __future__ import annotations

import json
import os

import av
import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from stovtal.extract import ExtractConfig, extract_features
from stovtal.extract.__main__ import main as extract_main
from stovtal.utils.fileio import read_json

STRIDE, NFR = 4, 8


def reference_features(path, model, pre, fps, stride, nfr):
    """Decode every frame with plain PyAV, encode them with a separately loaded
    model, and pool windows by stepping through time stamps."""
    with av.open(path) as c:
        st = c.streams.video[0]
        native_fps = float(st.average_rate)
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(st)]
    with torch.no_grad():
        emb = model.encode_image(torch.stack([pre(Image.fromarray(f)) for f in frames])).double()
    dur = len(frames) / native_fps
    target = []  # native index of each target frame
    k = 0
    while k / fps < dur - 1e-9:
        target.append(min(int(np.floor(k * native_fps / fps + 1e-6)), len(frames) - 1))
        k += 1
    feats = []
    i = 0
    while i * stride + nfr <= len(target) or (i == 0 and target):
        win = [target[min(i * stride + m, len(target) - 1)] for m in range(nfr)]
        v = emb[win].mean(0)
        feats.append((v / v.norm()).float().numpy())
        i += 1
    return np.stack(feats), len(target)


@pytest.fixture(scope="module")
def references(videos, tiny_clip):
    vdir, lengths = videos
    model, _, pre = open_clip.create_model_and_transforms("tiny-clip-test", pretrained=tiny_clip[1])
    model.eval()
    return {
        n: reference_features(str(vdir / f"{n}.mp4"), model, pre, 30.0, STRIDE, NFR)
        for n in lengths
    }


@pytest.fixture(scope="module")
def videos(tmp_path_factory, video_tools):
    write_video, _, _ = video_tools
    d = tmp_path_factory.mktemp("videos")
    lengths = {"v05": (5, 30), "v08": (8, 30), "v23": (23, 30), "v40": (40, 30), "w15": (17, 15)}
    for name, (n, fps) in lengths.items():
        write_video(d / f"{name}.mp4", n, fps)
    return d, lengths


def cfg(tiny_clip, **kw):
    model, ckpt = tiny_clip
    base = dict(
        model=model,
        checkpoint=ckpt,
        fps=30.0,
        stride=STRIDE,
        num_frames=NFR,
        batch_size=16,
        device="cpu",
    )
    base.update(kw)
    return ExtractConfig(**base)


@pytest.mark.parametrize("backend", ["pyav", "decord"])
def test_features_match_reference(videos, references, tiny_clip, tmp_path, backend):
    from stovtal.extract.video import decord_status

    if backend == "decord" and not decord_status()[0]:
        pytest.skip("no decord")
    vdir, lengths = videos
    out = tmp_path / "feats"
    res = extract_features(
        str(vdir), out, cfg(tiny_clip, backend=backend, batch_size=5), progress=False
    )
    assert res["encoded"] == len(lengths) and res["errors"] == 0
    for name, (n, fps) in lengths.items():
        feats = np.load(out / f"{name}.npy")
        meta = read_json(out / f"{name}.meta.json")
        ref, n_target = references[name]
        assert n_target == n * 30 // fps
        # snippet count from the video length: windows [4i, 4i+8) inside the video, at least one
        assert feats.shape == (sum(i * STRIDE + NFR <= n_target for i in range(n_target)) or 1, 16)
        assert feats.dtype == np.float32
        np.testing.assert_allclose(feats, ref, atol=2e-5, err_msg=name)
        np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
        assert meta["num_snippets"] == feats.shape[0] and meta["native_frames"] == n
        assert meta["fps"] == 30.0 and meta["stride"] == STRIDE and meta["backend"] == backend
    assert read_json(out / "v05.meta.json")["padded"] is True
    # 15 fps upsampled to 30: 17 native frames -> 34 target frames -> 7 snippets
    assert np.load(out / "w15.npy").shape[0] == (34 - NFR) // STRIDE + 1


def test_batch_size_does_not_change_features(videos, tiny_clip, tmp_path):
    vdir, _ = videos
    a, b = tmp_path / "a", tmp_path / "b"
    extract_features(str(vdir), a, cfg(tiny_clip, batch_size=3), progress=False)
    extract_features(str(vdir), b, cfg(tiny_clip, batch_size=64), progress=False)
    for f in sorted(os.listdir(vdir)):
        vid = f[:-4]
        np.testing.assert_allclose(np.load(a / f"{vid}.npy"), np.load(b / f"{vid}.npy"), atol=1e-6)


def test_native_fps_and_fp16(videos, tiny_clip, tmp_path):
    vdir, _ = videos
    out = tmp_path / "f"
    extract_features(str(vdir), out, cfg(tiny_clip, fps=None, fp16=True), progress=False)
    w = np.load(out / "w15.npy")
    assert w.dtype == np.float16 and w.shape[0] == (17 - NFR) // STRIDE + 1  # 15 fps kept
    assert read_json(out / "w15.meta.json")["fps"] == pytest.approx(15.0)


def test_corrupt_files_reported_and_skipped(videos, tiny_clip, tmp_path):
    vdir, lengths = videos
    listing = tmp_path / "list.txt"
    (tmp_path / "broken.mp4").write_bytes(b"\x00garbage" * 300)
    (tmp_path / "empty.mp4").write_bytes(b"")
    names = [str(vdir / f"{n}.mp4") for n in lengths] + ["broken.mp4", "empty.mp4", "missing.mp4"]
    listing.write_text("# my videos\n" + "\n".join(names) + "\n\n")
    out = tmp_path / "out"
    res = extract_features(str(listing), out, cfg(tiny_clip), shard_size=2, progress=False)
    assert res["encoded"] == len(lengths) and res["errors"] == 3
    for bad in ("broken", "empty", "missing"):
        assert bad + ".mp4" in res["error_list"][bad]
        assert not (out / f"{bad}.npy").exists() and not (out / f"{bad}.meta.json").exists()
    manifest_errors = {}
    for f in os.listdir(out / "manifest"):
        if f.startswith("shard-"):
            manifest_errors.update(json.loads((out / "manifest" / f).read_text())["errors"])
    assert manifest_errors == res["error_list"]
    again = extract_features(str(listing), out, cfg(tiny_clip), shard_size=2, progress=False)
    assert (
        again["encoded"] == 0 and again["errors"] == 0
    )  # failed videos are not retried by default
    retry = extract_features(
        str(listing), out, cfg(tiny_clip), shard_size=2, retry_errors=True, progress=False
    )
    assert retry["encoded"] == 0 and retry["errors"] == 3


def test_resume_does_no_work_twice(videos, tiny_clip, tmp_path, monkeypatch):
    vdir, lengths = videos
    out = tmp_path / "out"
    first = extract_features(str(vdir), out, cfg(tiny_clip), shard_size=2, progress=False)
    assert first["encoded"] == len(lengths)
    stamps = {f: os.stat(out / f).st_mtime_ns for f in os.listdir(out) if f.endswith(".npy")}

    import stovtal.extract.extractor as ex

    calls = []
    real = ex.ClipFrameEncoder.embed
    monkeypatch.setattr(
        ex.ClipFrameEncoder, "embed", lambda self, x: calls.append(len(x)) or real(self, x)
    )
    second = extract_features(str(vdir), out, cfg(tiny_clip), shard_size=2, progress=False)
    assert second["encoded"] == 0 and second["skipped"] == len(lengths) and calls == []
    assert stamps == {f: os.stat(out / f).st_mtime_ns for f in stamps}

    # A shard whose record is gone is redone, but its finished videos are still skipped:
    # only the video whose files were also removed is encoded.
    os.remove(out / "manifest" / "shard-00001.json")  # shard 1 = v23, v40 (sorted ids)
    os.remove(out / "v40.meta.json")
    third = extract_features(str(vdir), out, cfg(tiny_clip), shard_size=2, progress=False)
    assert third["encoded"] == 1 and third["skipped"] == len(lengths) - 1
    assert sum(calls) == 40  # v40's 40 frames, each encoded once


def test_shards_split_work_exactly_once(videos, tiny_clip, tmp_path):
    vdir, lengths = videos
    out = tmp_path / "out"
    counts = [
        extract_features(
            str(vdir), out, cfg(tiny_clip), shard=f"{i}/3", shard_size=1, progress=False
        )["encoded"]
        for i in range(3)
    ]
    assert sum(counts) == len(lengths) and all(c > 0 for c in counts)
    ref = tmp_path / "ref"
    extract_features(str(vdir), ref, cfg(tiny_clip), progress=False)
    for n in lengths:
        assert np.array_equal(np.load(out / f"{n}.npy"), np.load(ref / f"{n}.npy"))


def test_settings_change_is_refused(videos, tiny_clip, tmp_path):
    vdir, _ = videos
    out = tmp_path / "out"
    extract_features(str(vdir), out, cfg(tiny_clip), progress=False)
    with pytest.raises(ValueError, match="stride: 4 -> 8"):
        extract_features(str(vdir), out, cfg(tiny_clip, stride=8), progress=False)
    res = extract_features(str(vdir), out, cfg(tiny_clip, stride=8), overwrite=True, progress=False)
    assert res["encoded"] == 5


def test_cli_errors(videos, tiny_clip, tmp_path, capsys):
    vdir, _ = videos
    model, ckpt = tiny_clip
    base = [
        str(vdir),
        "--out",
        str(tmp_path / "o"),
        "--model",
        model,
        "--device",
        "cpu",
        "--no-progress",
    ]
    assert extract_main(base + ["--checkpoint", str(tmp_path / "nope.pt")]) == 2
    assert "nope.pt: checkpoint file not found" in capsys.readouterr().err
    bad_ckpt = tmp_path / "bad.pt"
    bad_ckpt.write_bytes(b"not a checkpoint")
    assert extract_main(base + ["--checkpoint", str(bad_ckpt)]) == 2
    assert "bad.pt: cannot load" in capsys.readouterr().err
    assert extract_main(base + ["--checkpoint", ckpt, "--shard", "3/3"]) == 2
    assert "0-based" in capsys.readouterr().err
    assert extract_main(base + ["--checkpoint", ckpt, "--stride", "0"]) == 2
    assert "--stride" in capsys.readouterr().err
    assert extract_main([str(tmp_path / "novideos"), *base[1:], "--checkpoint", ckpt]) == 2
    assert "novideos" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        extract_main(["--help"])


def test_sigkill_mid_run_then_resume_gives_identical_outputs(tmp_path, video_tools, tiny_clip):
    import signal
    import subprocess
    import sys
    import time

    write_video, _, _ = video_tools
    vdir = tmp_path / "v"
    vdir.mkdir()
    for i in range(10):
        write_video(vdir / f"k{i}.mp4", 30 + 3 * i)
    (vdir / "k_bad.mp4").write_bytes(b"\x01" * 999)
    model, ckpt = tiny_clip
    args = [
        "--model",
        model,
        "--checkpoint",
        ckpt,
        "--stride",
        "4",
        "--num-frames",
        "8",
        "--fps",
        "native",
        "--device",
        "cpu",
        "--shard-size",
        "1",
        "--batch-size",
        "8",
        "--no-progress",
    ]
    killed = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "stovtal.extract", str(vdir), "--out", str(killed), *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    records = killed / "manifest"
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if records.is_dir() and sum(f.startswith("shard-") for f in os.listdir(records)) >= 2:
            break
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_done = sum(f.startswith("shard-") for f in os.listdir(records))
    assert 0 < n_done < 11, "the extraction must be killed mid-run"

    assert extract_main([str(vdir), "--out", str(killed), *args]) == 0
    clean = tmp_path / "clean"
    assert extract_main([str(vdir), "--out", str(clean), *args]) == 0
    names = sorted(f for f in os.listdir(clean) if f.endswith(".npy"))
    assert names == sorted(f for f in os.listdir(killed) if f.endswith(".npy")) and len(names) == 10
    for f in names:
        assert (killed / f).read_bytes() == (clean / f).read_bytes(), f
        a, b = (
            read_json(killed / f.replace(".npy", ".meta.json")),
            read_json(clean / f.replace(".npy", ".meta.json")),
        )
        assert a == b
    for f in sorted(os.listdir(clean / "manifest")):
        assert read_json(killed / "manifest" / f) == read_json(clean / "manifest" / f), f
