"""Random-access video decoding behind one small interface.

``open_video(path, backend)`` returns a reader with ``num_frames``, ``fps`` and
``get_frames(indices) -> uint8 [n, H, W, 3]`` (RGB). Backends:

* ``"decord"`` (preferred): seeks directly to the requested frames.
* ``"pyav"``: decodes sequentially and keeps the requested frames; requests in
  increasing order continue where the previous one stopped, so extracting a
  video snippet by snippet decodes it once.

``"auto"`` takes decord when it imports, else PyAV. Every decoder failure
(missing, corrupt or unreadable file, zero frames, frames past the end) is a
:class:`VideoDecodeError` naming the file.
"""

from __future__ import annotations

import os
from typing import Protocol

import numpy as np

__all__ = [
    "VideoDecodeError",
    "VideoReader",
    "DecordReader",
    "PyAVReader",
    "open_video",
    "decord_status",
    "BACKENDS",
]

BACKENDS = ("auto", "decord", "pyav")


class VideoDecodeError(RuntimeError):
    """A video that cannot be decoded (names the file)."""


class VideoReader(Protocol):
    path: str
    backend: str
    num_frames: int
    fps: float

    def get_frames(self, indices: np.ndarray) -> np.ndarray:
        """RGB frames at native frame ``indices`` (0-based), uint8 ``[n, H, W, 3]``."""
        ...

    def close(self) -> None: ...


_DECORD_ERROR: str | None = None
_DECORD_CHECKED = False


def decord_status() -> tuple[bool, str | None]:
    """(importable, the exact import error if not)."""
    global _DECORD_ERROR, _DECORD_CHECKED
    if not _DECORD_CHECKED:
        _DECORD_CHECKED = True
        try:
            import decord  # noqa: F401
        except Exception as exc:  # any failure to import means "use PyAV"
            _DECORD_ERROR = f"{type(exc).__name__}: {exc}"
    return _DECORD_ERROR is None, _DECORD_ERROR


def _check_indices(path: str, indices: np.ndarray, num_frames: int) -> np.ndarray:
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= num_frames):
        raise VideoDecodeError(
            f"{path}: frame indices {int(idx.min())}..{int(idx.max())} outside 0..{num_frames - 1}"
        )
    return idx


class DecordReader:
    backend = "decord"

    def __init__(self, path: str) -> None:
        import decord

        self.path = path
        try:
            self._vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=0)
            self.num_frames = len(self._vr)
            self.fps = float(self._vr.get_avg_fps())
        except Exception as exc:
            raise VideoDecodeError(
                f"{path}: cannot open video with decord ({_short(exc)})"
            ) from None
        _check_header(path, self.num_frames, self.fps)

    def get_frames(self, indices: np.ndarray) -> np.ndarray:
        idx = _check_indices(self.path, indices, self.num_frames)
        if idx.size == 0:
            return np.zeros((0, 0, 0, 3), np.uint8)
        try:
            frames = self._vr.get_batch(idx.tolist()).asnumpy()
        except Exception as exc:
            raise VideoDecodeError(
                f"{self.path}: decord failed to decode frames {int(idx.min())}..{int(idx.max())} ({_short(exc)})"
            ) from None
        return np.ascontiguousarray(frames)

    def close(self) -> None:
        self._vr = None


class PyAVReader:
    backend = "pyav"

    def __init__(self, path: str) -> None:
        self.path = path
        self._container = None
        self._frames = None
        self._pos = 0
        try:
            self._open()
            stream = self._container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            self.fps = float(rate) if rate else 0.0
            n = int(stream.frames or 0)
            if n <= 0:  # container without a frame count: count the packets
                n = sum(1 for p in self._container.demux(stream) if p.size > 0)
                self._open()
            self.num_frames = n
        except VideoDecodeError:
            raise
        except Exception as exc:
            self.close()
            raise VideoDecodeError(f"{path}: cannot open video with PyAV ({_short(exc)})") from None
        _check_header(path, self.num_frames, self.fps)

    def _open(self) -> None:
        import av

        if self._container is not None:
            self._container.close()
        self._container = av.open(self.path)
        if not self._container.streams.video:
            raise VideoDecodeError(f"{self.path}: no video stream")
        stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"
        self._frames = self._container.decode(stream)
        self._pos = 0

    def get_frames(self, indices: np.ndarray) -> np.ndarray:
        idx = _check_indices(self.path, indices, self.num_frames)
        if idx.size == 0:
            return np.zeros((0, 0, 0, 3), np.uint8)
        order = np.argsort(idx, kind="stable")
        wanted = idx[order]
        out: list[np.ndarray | None] = [None] * idx.size
        try:
            if wanted[0] < self._pos:
                self._open()
            k = 0
            last = None
            while k < wanted.size:
                frame = next(self._frames, None)
                if frame is None:
                    raise VideoDecodeError(
                        f"{self.path}: stream ended after {self._pos} frames, but frame "
                        f"{int(wanted[k])} was requested (header says {self.num_frames})"
                    )
                pos = self._pos
                self._pos += 1
                if pos < wanted[k]:
                    continue
                last = frame.to_ndarray(format="rgb24")
                while k < wanted.size and wanted[k] == pos:
                    out[order[k]] = last
                    k += 1
        except VideoDecodeError:
            raise
        except Exception as exc:
            raise VideoDecodeError(
                f"{self.path}: PyAV failed while decoding ({_short(exc)})"
            ) from None
        return np.stack(out)

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None


def _check_header(path: str, num_frames: int, fps: float) -> None:
    if num_frames <= 0:
        raise VideoDecodeError(f"{path}: video has zero frames")
    if not np.isfinite(fps) or fps <= 0:
        raise VideoDecodeError(f"{path}: video reports an invalid frame rate ({fps})")


def _short(exc: BaseException) -> str:
    msg = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {msg[:300]}"


def open_video(path: str | os.PathLike, backend: str = "auto") -> VideoReader:
    """Open ``path`` with ``backend`` (``"auto"``, ``"decord"`` or ``"pyav"``)."""
    path = os.fspath(path)
    if backend not in BACKENDS:
        raise ValueError(f"unknown video backend {backend!r}; use one of {BACKENDS}")
    if not os.path.isfile(path):
        raise VideoDecodeError(f"{path}: video file not found")
    if backend == "auto":
        backend = "decord" if decord_status()[0] else "pyav"
    if backend == "decord":
        ok, err = decord_status()
        if not ok:
            raise ImportError(f"decord is not usable here ({err}); use backend='pyav'")
        return DecordReader(path)
    return PyAVReader(path)
