"""Extract snippet features for a collection of videos: resumable and shardable.

Outputs in ``out_dir``: ``<video_id>.npy`` (``[T, D]``, float32 or float16) and
``<video_id>.meta.json`` (model, checkpoint sha256, fps, stride, ...), each
written atomically, the metadata last (its presence marks a finished video);
``extract_config.json`` (the settings every file in the directory was made
with); and ``manifest/`` (:class:`~stovtal.utils.shards.ShardManifest`: finished
shards of the sorted video-id list and per-video errors).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..utils.distributed import rank_and_world_size
from ..utils.fileio import atomic_save_npy, atomic_write_json, read_json
from ..utils.shards import (
    Shard,
    ShardManifest,
    ShardPlan,
    ShardResult,
    parse_shard_spec,
    run_shards,
)
from .video import VideoDecodeError, decord_status, open_video

__all__ = ["VIDEO_EXTENSIONS", "ExtractConfig", "list_videos", "extract_features"]

log = logging.getLogger("stovtal.extract")

VIDEO_EXTENSIONS = (
    ".mp4",
    ".mkv",
    ".avi",
    ".webm",
    ".mov",
    ".m4v",
    ".flv",
    ".mpg",
    ".mpeg",
    ".wmv",
    ".3gp",
    ".ts",
)
CONFIG_FILE = "extract_config.json"
MANIFEST_DIR = "manifest"
# Settings that change the numbers in the feature files; all files of one directory share them.
_PINNED = ("model", "checkpoint_sha256", "fps", "stride", "num_frames", "dtype", "pooling")


@dataclass
class ExtractConfig:
    model: str
    checkpoint: str
    fps: float | None = 30.0
    stride: int = 16
    num_frames: int = 16
    batch_size: int = 64
    device: str = "cpu"
    fp16: bool = False
    amp: bool = False
    backend: str = "auto"

    def validate(self) -> None:
        if self.fps is not None and not (np.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"--fps must be > 0 (or 'native'), got {self.fps}")
        for name in ("stride", "num_frames", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be an integer >= 1, got {v!r}")


def list_videos(source: str | os.PathLike) -> list[tuple[str, str]]:
    """(video_id, path) pairs from a directory (files with a video extension, not
    recursive) or a text file with one path per line (relative paths are relative
    to the list file; blank lines and ``#`` comments skipped). The id is the file
    name without its extension; two videos with one id are an error."""
    source = os.fspath(source)
    if os.path.isdir(source):
        paths = sorted(
            os.path.join(source, f)
            for f in os.listdir(source)
            if f.lower().endswith(VIDEO_EXTENSIONS) and os.path.isfile(os.path.join(source, f))
        )
        if not paths:
            raise ValueError(
                f"{source}: no video files ({', '.join(VIDEO_EXTENSIONS)}) in this directory"
            )
    elif os.path.isfile(source):
        base = os.path.dirname(os.path.abspath(source))
        with open(source, encoding="utf-8") as f:
            lines = [ln.strip() for ln in f]
        paths = [
            ln if os.path.isabs(ln) else os.path.join(base, ln)
            for ln in lines
            if ln and not ln.startswith("#")
        ]
        if not paths:
            raise ValueError(f"{source}: the video list is empty")
    else:
        raise FileNotFoundError(f"{source}: no such video directory or list file")
    by_id: dict[str, list[str]] = {}
    for p in paths:
        by_id.setdefault(os.path.splitext(os.path.basename(p))[0], []).append(p)
    dups = {k: v for k, v in by_id.items() if len(v) > 1}
    if dups:
        k, v = next(iter(dups.items()))
        raise ValueError(
            f"{source}: {len(dups)} video ids are used by several files, e.g. {k!r}: {v}"
        )
    return sorted((k, v[0]) for k, v in by_id.items())


def _check_config(out_dir: str, pinned: dict[str, Any], overwrite: bool) -> None:
    path = os.path.join(out_dir, CONFIG_FILE)
    if os.path.exists(path) and not overwrite:
        old = read_json(path)
        diff = {k: (old.get(k), pinned[k]) for k in _PINNED if old.get(k) != pinned[k]}
        if diff:
            detail = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())
            raise ValueError(
                f"{path}: {out_dir} holds features made with other settings ({detail}); "
                "use another --out directory, or --overwrite to recompute them"
            )
    if not os.path.exists(path) or overwrite:
        atomic_write_json(path, pinned, indent=1)


def _is_finished(out_dir: str, vid: str) -> bool:
    return os.path.exists(os.path.join(out_dir, vid + ".meta.json")) and os.path.exists(
        os.path.join(out_dir, vid + ".npy")
    )


def extract_features(
    source: str | os.PathLike | Sequence[tuple[str, str]],
    out_dir: str | os.PathLike,
    config: ExtractConfig,
    shard: str | None = None,
    shard_size: int = 16,
    rank: int | None = None,
    world_size: int | None = None,
    overwrite: bool = False,
    retry_errors: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Extract features of the videos in ``source`` (dir, list file, or (id, path) pairs).

    This worker handles the shards selected by ``shard`` (``"i/n"``) and
    ``rank``/``world_size`` (default: from torch.distributed / torchrun's env).
    Finished shards (manifest) and finished videos (outputs on disk) are skipped.
    Per-video decode errors are logged and recorded, and the run goes on; other
    errors (e.g. the model failing) stop it with the shard in flight unrecorded.

    Returns counts: ``videos`` (selected), ``encoded``, ``skipped``, ``errors``,
    ``seconds``, ``videos_per_s`` (encoded / seconds), and ``error_list``.
    """
    from ..models.open_clip_loading import file_sha256, load_open_clip
    from .extractor import ClipFrameEncoder, extract_video

    config.validate()
    out_dir = os.fspath(out_dir)
    videos = list_videos(source) if isinstance(source, str | os.PathLike) else sorted(source)
    paths = dict(videos)
    job, num_jobs = parse_shard_spec(shard)
    if rank is None or world_size is None:
        rank, world_size = rank_and_world_size()
    plan = ShardPlan(paths.keys(), shard_size)
    os.makedirs(out_dir, exist_ok=True)
    if not os.path.isfile(config.checkpoint):
        raise FileNotFoundError(f"{config.checkpoint}: checkpoint file not found")
    sha = file_sha256(config.checkpoint)
    pinned = {
        "model": config.model
        if not config.model.endswith(".json")
        else os.path.basename(config.model),
        "checkpoint_sha256": sha,
        "fps": config.fps,
        "stride": config.stride,
        "num_frames": config.num_frames,
        "dtype": "float16" if config.fp16 else "float32",
        "pooling": "mean-then-l2",
    }
    _check_config(out_dir, pinned, overwrite)
    manifest = ShardManifest(os.path.join(out_dir, MANIFEST_DIR), plan)
    mine = plan.select(job, num_jobs, rank, world_size)
    todo = mine if overwrite else manifest.pending(mine, retry_errors=retry_errors)
    n_mine = sum(len(s.items) for s in mine)
    n_todo = sum(len(s.items) for s in todo)

    backend = config.backend
    if backend == "auto":
        ok, err = decord_status()
        backend = "decord" if ok else "pyav"
        if not ok:
            log.warning("decord unavailable (%s); decoding with PyAV", err)

    stats = {"encoded": 0, "skipped": n_mine - n_todo, "errors": 0}
    errors: dict[str, str] = {}
    loaded = None
    bar = None
    if todo:
        loaded = load_open_clip(config.model, config.checkpoint, config.device, require_text=False)
        encoder = ClipFrameEncoder(loaded, amp=config.amp)
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_todo, unit="video", desc="extract", file=sys.stderr, dynamic_ncols=True)

    def process(sh: Shard) -> ShardResult:
        shard_errors: dict[str, str] = {}
        for vid in sh.items:
            if not overwrite and _is_finished(out_dir, vid):
                stats["skipped"] += 1
            else:
                try:
                    _extract_one(
                        vid, paths[vid], out_dir, config, backend, encoder, pinned, extract_video
                    )
                    stats["encoded"] += 1
                except VideoDecodeError as exc:
                    msg = str(exc)
                    shard_errors[vid] = msg
                    stats["errors"] += 1
                    (bar.write if bar is not None else log.error)(f"error: {vid}: {msg}")
            if bar is not None:
                bar.update(1)
                bar.set_postfix(errors=stats["errors"], refresh=False)
        errors.update(shard_errors)
        return ShardResult(errors=shard_errors)

    t0 = time.perf_counter()
    try:
        if overwrite:
            for sh in todo:
                res = process(sh)
                manifest.record(sh, res.errors)
        else:
            run_shards(manifest, todo, process, retry_errors=retry_errors)
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - t0
    return {
        "videos": n_mine,
        "encoded": stats["encoded"],
        "skipped": stats["skipped"],
        "errors": stats["errors"],
        "error_list": errors,
        "seconds": seconds,
        "videos_per_s": stats["encoded"] / seconds if seconds > 0 else 0.0,
        "backend": backend,
        "shards": len(todo),
    }


def _extract_one(
    vid: str,
    path: str,
    out_dir: str,
    config: ExtractConfig,
    backend: str,
    encoder: Any,
    pinned: dict[str, Any],
    extract_video: Any,
) -> None:
    """Features of one video -> ``<vid>.npy``, then ``<vid>.meta.json`` (both atomic)."""
    reader = open_video(path, backend)
    try:
        feats, info = extract_video(
            reader, encoder, config.fps, config.stride, config.num_frames, config.batch_size
        )
    finally:
        reader.close()
    feats = feats.astype(np.float16 if config.fp16 else np.float32)
    atomic_save_npy(os.path.join(out_dir, vid + ".npy"), feats)
    meta = {
        "video_id": vid,
        "source": os.path.abspath(path),
        **pinned,
        "checkpoint": os.path.abspath(config.checkpoint),
        "backend": reader.backend,
        "feature_dim": int(feats.shape[1]),
        **info,
    }
    atomic_write_json(os.path.join(out_dir, vid + ".meta.json"), meta, indent=1)
