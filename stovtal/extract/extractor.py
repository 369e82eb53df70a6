"""Snippet features of one video, with bounded memory.

Snippets are processed in blocks of about ``batch_size`` new frames: the block's
distinct native frames are decoded, preprocessed and encoded in one batch,
each snippet's frame embeddings are mean-pooled and the result L2-normalised.
Embeddings of frames shared with the next block (``stride < num_frames``) are
kept, the rest dropped. A background thread decodes and preprocesses the next
batch while the model encodes the current one, so memory holds at most three
batches of frames plus the ``[T, D]`` output, however long the video.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from .sampling import num_snippets, num_target_frames, snippet_frame_indices
from .video import VideoReader

__all__ = ["ClipFrameEncoder", "extract_video"]


class ClipFrameEncoder:
    """open_clip image tower with its own validation transform.

    ``__call__(frames uint8 [n, H, W, 3]) -> float32 [n, D]`` (CPU, not normalised).
    ``amp``: autocast (float16 on CUDA, bfloat16 on CPU).
    """

    def __init__(self, loaded: Any, amp: bool = False) -> None:
        self.model = loaded.model
        self.preprocess = loaded.preprocess
        self.device = torch.device(loaded.device)
        self.amp = amp

    def prepare(self, frames: np.ndarray) -> torch.Tensor:
        """open_clip's validation transform of each frame: float ``[n, 3, S, S]``."""
        from PIL import Image

        return torch.stack([self.preprocess(Image.fromarray(f)) for f in frames])

    @torch.inference_mode()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Image-tower embeddings of prepared frames: float32 ``[n, D]`` on the CPU."""
        x = x.to(self.device, non_blocking=True)
        if self.amp:
            dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
            with torch.autocast(self.device.type, dtype=dtype):
                y = self.model.encode_image(x)
        else:
            y = self.model.encode_image(x)
        return y.float().cpu()

    def __call__(self, frames: np.ndarray) -> torch.Tensor:
        return self.embed(self.prepare(frames))


def extract_video(
    reader: VideoReader,
    encode: Callable[[np.ndarray], torch.Tensor],
    fps: float | None,
    stride: int,
    num_frames: int,
    batch_size: int,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Features ``[T, D]`` float32 (unit rows) of the video in ``reader``.

    Args:
        reader: an open video (see :func:`stovtal.extract.video.open_video`).
        encode: frames uint8 ``[n, H, W, 3]`` -> embeddings ``[n, D]``.
        fps: target frame rate (frames/s) or None for the native one.
        stride: target frames between snippet starts.
        num_frames: target frames per snippet.
        batch_size: about how many frames are decoded and encoded at once.

    Returns the features and a dict describing the sampling (native fps/frames,
    target fps/frames, T, whether the single snippet was padded).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n_native, native_fps = reader.num_frames, reader.fps
    fps = native_fps if fps is None else fps
    n_target = num_target_frames(n_native, native_fps, fps)
    T = num_snippets(n_target, stride, num_frames)
    info = {
        "native_fps": native_fps,
        "native_frames": n_native,
        "fps": fps,
        "target_frames": n_target,
        "num_snippets": T,
        "padded": n_target < num_frames,
        "duration": n_native / native_fps,
    }
    if T == 0:
        from .video import VideoDecodeError

        raise VideoDecodeError(f"{reader.path}: video has zero frames")
    plan = _plan(T, n_native, native_fps, fps, stride, num_frames, batch_size)
    prepare = getattr(encode, "prepare", None)
    embed = getattr(encode, "embed", None)
    if prepare is None or embed is None:  # a plain callable: only decoding runs ahead
        prepare, embed = (lambda frames: frames), encode

    def load(chunk: np.ndarray):
        return prepare(reader.get_frames(chunk))

    batches = _run_ahead(load, [c for _, _, chunks, _ in plan for c in chunks])
    out: np.ndarray | None = None
    cache_idx = np.zeros(0, np.int64)  # sorted native indices with embeddings in cache_emb
    cache_emb: torch.Tensor | None = None
    try:
        for snips, idx, chunks, keep_from in plan:
            parts_idx, parts_emb = [cache_idx], [cache_emb]
            for chunk in chunks:
                emb = embed(next(batches))
                if emb.ndim != 2 or emb.shape[0] != chunk.size:
                    raise RuntimeError(
                        f"frame encoder returned shape {tuple(emb.shape)} for {chunk.size} frames"
                    )
                parts_idx.append(chunk)
                parts_emb.append(emb)
            all_idx = np.concatenate(parts_idx)
            all_emb = torch.cat([e for e in parts_emb if e is not None])
            order = np.argsort(all_idx, kind="stable")
            all_idx, all_emb = all_idx[order], all_emb[torch.from_numpy(order)]
            pos = torch.from_numpy(np.searchsorted(all_idx, idx))  # [b, num_frames]
            pooled = all_emb[pos].mean(dim=1)
            norms = pooled.norm(dim=1, keepdim=True)
            if not torch.isfinite(pooled).all() or (norms == 0).any():
                raise RuntimeError(
                    f"{reader.path}: frame encoder produced NaN/Inf or zero features"
                )
            pooled = (pooled / norms).numpy()
            if out is None:
                out = np.empty((T, pooled.shape[1]), np.float32)
            out[snips] = pooled
            keep = all_idx >= keep_from
            cache_idx, cache_emb = all_idx[keep], all_emb[torch.from_numpy(keep)]
    finally:
        batches.close()
    assert out is not None
    return out, info


def _plan(T, n_native, native_fps, fps, stride, num_frames, batch_size):
    """Blocks of snippets: (snippet ids, their native frame indices [b, num_frames],
    chunks of frames to decode for the block (each <= batch_size), first frame index
    still needed afterwards). Frames are decoded once, in increasing order."""
    block = max(1, batch_size // min(stride, num_frames))
    plan = []
    cached = np.zeros(0, np.int64)
    for b0 in range(0, T, block):
        snips = np.arange(b0, min(T, b0 + block))
        idx = snippet_frame_indices(snips, n_native, native_fps, fps, stride, num_frames)
        new = np.setdiff1d(np.unique(idx), cached, assume_unique=True)
        chunks = [new[c : c + batch_size] for c in range(0, new.size, batch_size)]
        if b0 + block < T:  # later snippets only use frames >= the next snippet's first frame
            nxt = snippet_frame_indices([b0 + block], n_native, native_fps, fps, stride, num_frames)
            keep_from = int(nxt.min())
        else:
            keep_from = n_native
        plan.append((snips, idx, chunks, keep_from))
        merged = np.union1d(cached, new)
        cached = merged[merged >= keep_from]
    return plan


def _run_ahead(fn: Callable, items: list, depth: int = 1) -> Iterator:
    """``fn(item)`` for each item, in order, computed in one background thread up to
    ``depth + 1`` items ahead (decoding and preprocessing overlap the model)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="stovtal-decode") as pool:
        pending: deque[Future] = deque(pool.submit(fn, x) for x in items[: depth + 1])
        nxt = depth + 1
        try:
            while pending:
                result = pending.popleft().result()
                if nxt < len(items):
                    pending.append(pool.submit(fn, items[nxt]))
                    nxt += 1
                yield result
        finally:
            for f in pending:
                f.cancel()
