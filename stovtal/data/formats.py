"""Read, validate and write the on-disk formats (see DESIGN.md "Formats").

- Annotations (ActivityNet style): ``{"database": {vid: {"subset": str, "duration": s,
  "fps"?: float, "annotations": [{"segment": [s, e], "label": name}, ...]}}}``; times in seconds.
- Pseudo-labels: the annotation format with an ``"actionness"`` in [0, 1] per annotation.
- Predictions (ActivityNet submission): ``{"results": {vid: [{"segment": [s, e],
  "label": name, "score": p}, ...]}}``.
- Features: ``<feature_dir>/<vid>.npy``, float ``[T, D]`` (float32 on disk by convention).

Validation: unknown keys are kept and ignored. A missing (unless not required)/invalid
``duration``, ``end < start`` (predictions: unless allowed),
a non-finite time, a label not in the given vocabulary, or a bad feature file raise a
:class:`DataError` (a ``ValueError``) whose message names the video and the file. A segment
reaching outside ``[0, duration]`` is clipped with a warning (an error if nothing remains).
With ``on_error="skip"`` a bad video is dropped with a warning instead (documented per function).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from stovtal.utils.fileio import atomic_write_json, read_json

__all__ = [
    "DataError",
    "FeatureGrid",
    "load_annotations",
    "validate_annotations",
    "write_annotations",
    "load_pseudo_labels",
    "load_predictions",
    "validate_predictions",
    "write_predictions",
    "feature_path",
    "load_features",
]


class DataError(ValueError):
    """Invalid data; the message names the video and the file."""


@dataclass(frozen=True)
class FeatureGrid:
    """Snippet grid of a feature extractor (ActionFormer / OpenTAD convention).

    Snippet ``i`` covers frames ``[i*feature_stride, i*feature_stride + num_frames)``; its centre
    is at ``(i*feature_stride + num_frames/2) / fps`` seconds. "Grid units" index snippets.
    """

    fps: float
    feature_stride: int
    num_frames: int

    def __post_init__(self) -> None:
        if not (math.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"fps must be a positive number, got {self.fps}")
        if self.feature_stride < 1 or self.num_frames < 1:
            raise ValueError(f"feature_stride and num_frames must be >= 1, got "
                             f"{self.feature_stride}, {self.num_frames}")

    @property
    def offset(self) -> float:
        """Centre offset of snippet 0, in grid units (``num_frames / 2 / feature_stride``)."""
        return 0.5 * self.num_frames / self.feature_stride

    def seconds_to_grid(self, t: Any, fps: float | None = None) -> Any:
        """Seconds -> grid units (``t * fps / stride - offset``); array-friendly."""
        return t * (fps or self.fps) / self.feature_stride - self.offset

    def grid_to_seconds(self, x: Any, fps: float | None = None) -> Any:
        """Grid units -> seconds (inverse of :meth:`seconds_to_grid`)."""
        return (x + self.offset) * self.feature_stride / (fps or self.fps)

    def centres(self, num_snippets: int, fps: float | None = None) -> np.ndarray:
        """Centre time (s) of each of ``num_snippets`` snippets, float64 ``[T]``."""
        return self.grid_to_seconds(np.arange(num_snippets, dtype=np.float64), fps)

    def num_snippets(self, duration: float, fps: float | None = None) -> int:
        """Number of full snippets in a video of ``duration`` seconds (at least 1)."""
        frames = int(round(duration * (fps or self.fps)))
        return max(1, (frames - self.num_frames) // self.feature_stride + 1)


def _where(vid: str, source: str) -> str:
    return f"video {vid!r} in {source}"


def _fail(msg: str, on_error: str) -> None:
    if on_error == "skip":
        warnings.warn(msg + " (video skipped)", stacklevel=4)
    else:
        raise DataError(msg)


def _number(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _check_on_error(on_error: str) -> None:
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")


def _validate_video(vid: str, info: Any, source: str, classes: set[str] | None,
                    require_actionness: bool, require_duration: bool = True) -> dict[str, Any]:
    where = _where(vid, source)
    if not isinstance(info, Mapping):
        raise DataError(f"{where}: entry must be an object, got {type(info).__name__}")
    out = dict(info)
    duration: float | None = None
    if require_duration and "duration" not in info:
        raise DataError(f"{where}: missing 'duration'")
    if "duration" in info:
        duration = _number(info["duration"])
        if duration is None or duration <= 0:
            raise DataError(f"{where}: 'duration' must be a positive finite number, got {info['duration']!r}")
        out["duration"] = duration
    if "fps" in info and info["fps"] is not None:
        fps = _number(info["fps"])
        if fps is None or fps <= 0:
            raise DataError(f"{where}: 'fps' must be a positive finite number, got {info['fps']!r}")
        out["fps"] = fps
    anns = info.get("annotations", [])
    if not isinstance(anns, list):
        raise DataError(f"{where}: 'annotations' must be a list")
    clean = []
    for j, ann in enumerate(anns):
        a_where = f"{where}, annotation {j}"
        if not isinstance(ann, Mapping) or "segment" not in ann or "label" not in ann:
            raise DataError(f"{a_where}: needs 'segment' and 'label'")
        seg = ann["segment"]
        if not isinstance(seg, (list, tuple)) or len(seg) != 2:
            raise DataError(f"{a_where}: 'segment' must be [start, end], got {seg!r}")
        s, e = _number(seg[0]), _number(seg[1])
        if s is None or e is None:
            raise DataError(f"{a_where}: segment times must be finite numbers, got {seg!r}")
        if e < s:
            raise DataError(f"{a_where}: segment end {e} < start {s}")
        if duration is not None and (s < 0 or e > duration):
            cs, ce = min(max(s, 0.0), duration), min(max(e, 0.0), duration)
            if ce <= cs:
                raise DataError(f"{a_where}: segment [{s}, {e}] lies outside [0, {duration}]")
            warnings.warn(f"{a_where}: segment [{s}, {e}] clipped to [0, {duration}]", stacklevel=5)
            s, e = cs, ce
        label = ann["label"]
        if not isinstance(label, str):
            raise DataError(f"{a_where}: 'label' must be a string, got {label!r}")
        if classes is not None and label not in classes:
            raise DataError(f"{a_where}: label {label!r} is not in the vocabulary")
        new = dict(ann)
        new["segment"] = [s, e]
        if require_actionness or "actionness" in ann:
            act = _number(ann.get("actionness"))
            if act is None or not 0.0 <= act <= 1.0:
                raise DataError(f"{a_where}: 'actionness' must be a number in [0, 1], "
                                f"got {ann.get('actionness')!r}")
            new["actionness"] = act
        clean.append(new)
    out["annotations"] = clean
    return out


def validate_annotations(obj: Any, source: str = "<annotations>", subset: str | None = None,
                         classes: Iterable[str] | None = None, on_error: str = "raise",
                         require_actionness: bool = False, require_duration: bool = True
                         ) -> dict[str, Any]:
    """Validate a parsed annotation JSON; returns ``{"database": {...}}`` with clean entries.

    Args:
        obj: the parsed JSON (must hold a ``"database"`` object).
        source: file name used in error messages.
        subset: keep only videos whose ``"subset"`` equals this (None keeps all).
        classes: vocabulary; a label outside it is an error (None accepts any label).
        on_error: ``"raise"`` (default) or ``"skip"`` (drop a bad video with a warning).
        require_actionness: pseudo-label mode: every annotation needs ``actionness`` in [0, 1].
        require_duration: False accepts a video without ``duration`` (as ActivityNet's
            evaluation, which never reads it); its segments are then not clipped.
    """
    _check_on_error(on_error)
    if not isinstance(obj, Mapping) or not isinstance(obj.get("database"), Mapping):
        raise DataError(f"{source}: expected an object with a 'database' object")
    vocab = set(classes) if classes is not None else None
    out: dict[str, Any] = {}
    for vid, info in obj["database"].items():
        if subset is not None and (not isinstance(info, Mapping) or info.get("subset") != subset):
            continue
        try:
            out[vid] = _validate_video(vid, info, source, vocab, require_actionness, require_duration)
        except DataError as exc:
            _fail(str(exc), on_error)
    result = {k: v for k, v in obj.items() if k != "database"}
    result["database"] = out
    return result


def load_annotations(path: str | os.PathLike, subset: str | None = None,
                     classes: Iterable[str] | None = None, on_error: str = "raise",
                     require_duration: bool = True) -> dict[str, Any]:
    """Read and validate an annotation JSON file (see :func:`validate_annotations`)."""
    path = os.fspath(path)
    return validate_annotations(read_json(path, unique_keys=True), path, subset, classes, on_error,
                                require_duration=require_duration)


def load_pseudo_labels(path: str | os.PathLike, subset: str | None = None,
                       classes: Iterable[str] | None = None, on_error: str = "raise") -> dict[str, Any]:
    """Read a pseudo-label JSON (annotation format + ``actionness`` per annotation)."""
    path = os.fspath(path)
    return validate_annotations(read_json(path), path, subset, classes, on_error,
                                require_actionness=True)


def write_annotations(path: str | os.PathLike, database: Mapping[str, Any], **extra: Any) -> None:
    """Atomically write ``{"database": database, **extra}`` as JSON."""
    atomic_write_json(path, {**extra, "database": dict(database)})


def validate_predictions(obj: Any, source: str = "<predictions>",
                         classes: Iterable[str] | None = None,
                         allow_reversed: bool = False) -> dict[str, list[dict[str, Any]]]:
    """Validate a parsed prediction JSON; returns the ``results`` mapping (vid -> list).

    Each prediction needs a finite ``segment`` with ``end >= start`` (any order with
    ``allow_reversed``), a string ``label`` (in ``classes`` if given) and a finite ``score``.
    Errors name the video, the entry and the file.
    """
    if not isinstance(obj, Mapping) or not isinstance(obj.get("results"), Mapping):
        raise DataError(f"{source}: expected an object with a 'results' object")
    vocab = set(classes) if classes is not None else None
    out: dict[str, list[dict[str, Any]]] = {}
    for vid, preds in obj["results"].items():
        where = _where(vid, source)
        if not isinstance(preds, list):
            raise DataError(f"{where}: predictions must be a list")
        clean = []
        for j, p in enumerate(preds):
            p_where = f"{where}, prediction {j}"
            if not isinstance(p, Mapping) or not {"segment", "label", "score"} <= p.keys():
                raise DataError(f"{p_where}: needs 'segment', 'label' and 'score'")
            seg = p["segment"]
            if not isinstance(seg, (list, tuple)) or len(seg) != 2:
                raise DataError(f"{p_where}: 'segment' must be [start, end], got {seg!r}")
            s, e, score = _number(seg[0]), _number(seg[1]), _number(p["score"])
            if s is None or e is None:
                raise DataError(f"{p_where}: segment times must be finite numbers, got {seg!r}")
            if e < s and not allow_reversed:
                raise DataError(f"{p_where}: segment end {e} < start {s}")
            if score is None:
                raise DataError(f"{p_where}: 'score' must be a finite number, got {p['score']!r}")
            if not isinstance(p["label"], str):
                raise DataError(f"{p_where}: 'label' must be a string, got {p['label']!r}")
            if vocab is not None and p["label"] not in vocab:
                raise DataError(f"{p_where}: label {p['label']!r} is not in the vocabulary")
            clean.append({**p, "segment": [s, e], "score": score})
        out[vid] = clean
    return out


def load_predictions(path: str | os.PathLike, classes: Iterable[str] | None = None,
                     allow_reversed: bool = False) -> dict[str, Any]:
    """Read and validate a prediction JSON file; returns ``{"results": {...}}``."""
    path = os.fspath(path)
    return {"results": validate_predictions(read_json(path, unique_keys=True), path, classes, allow_reversed)}


def write_predictions(path: str | os.PathLike, results: Mapping[str, list[Mapping[str, Any]]],
                      **extra: Any) -> None:
    """Atomically write ``{"results": results, **extra}`` as JSON."""
    atomic_write_json(path, {**extra, "results": {k: list(v) for k, v in results.items()}})


def feature_path(feature_dir: str | os.PathLike, video_id: str) -> str:
    return os.path.join(os.fspath(feature_dir), f"{video_id}.npy")


def load_features(feature_dir: str | os.PathLike, video_id: str, feat_dim: int | None = None,
                  mmap: bool = True, check_finite: bool = True) -> np.ndarray:
    """Load ``<feature_dir>/<video_id>.npy`` as a ``[T, D]`` float array.

    With ``mmap`` the array is memory-mapped read-only (``np.load(mmap_mode="r")``): pages are
    read only when touched. ``check_finite`` scans it once for NaN/Inf. Errors (missing or
    unreadable file, not floating point, rank != 2, T == 0, D != ``feat_dim``, NaN/Inf) raise
    :class:`DataError` / ``FileNotFoundError`` naming the video and the file.
    """
    path = feature_path(feature_dir, video_id)
    where = f"video {video_id!r}: feature file {path}"
    try:
        arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"{where} not found") from None
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{where} is unreadable ({exc})") from None
    if not isinstance(arr, np.ndarray) or not np.issubdtype(arr.dtype, np.floating):
        raise DataError(f"{where}: expected a floating point array, got "
                        f"{getattr(arr, 'dtype', type(arr).__name__)}")
    if arr.ndim != 2:
        raise DataError(f"{where}: expected rank 2 [T, D], got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise DataError(f"{where}: has no snippets (T = 0)")
    if feat_dim is not None and arr.shape[1] != feat_dim:
        raise DataError(f"{where}: feature dim {arr.shape[1]} != expected {feat_dim}")
    if check_finite and not np.isfinite(arr).all():
        raise DataError(f"{where}: contains NaN or Inf")
    return arr
