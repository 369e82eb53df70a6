"""``VideoFeatureDataset``: per-video snippet features + annotations (ActionFormer convention).

Each item is a dict:

- ``video_id`` str; ``feats`` float32 tensor ``[C, T]`` (channels first);
- ``segments`` float32 ``[N, 2]`` in grid units (``seconds * fps / stride - num_frames/2/stride``,
  relative to the first returned snippet); ``labels`` int64 ``[N]`` (index into ``classes``);
- ``fps``, ``duration`` (s), ``feat_stride``, ``feat_num_frames``;
- ``offset_snippets`` (int, index of the first returned snippet in the full video; non-zero
  after a training crop) and ``offset_frames`` (= ``offset_snippets * feat_stride``);
- ``actionness`` float32 ``[N]`` when the annotations carry it (pseudo-labels).

Grid-unit segment ``x`` maps back to seconds as ``(x + offset_snippets + num_frames/2/stride)
* stride / fps`` (:meth:`VideoFeatureDataset.to_seconds`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from stovtal.utils.fileio import read_json

from .crop import CropRule, crop_window, torch_randint
from .formats import DataError, FeatureGrid, load_features, validate_annotations

__all__ = ["VideoFeatureDataset", "collate_videos"]


class VideoFeatureDataset(Dataset):
    """Videos of one annotation file (or parsed dict) with their ``<vid>.npy`` features.

    Args:
        annotations: path to an annotation / pseudo-label JSON, or the parsed dict.
        feature_dir: directory of ``<video_id>.npy`` files (float ``[T, D]``).
        classes: the vocabulary; ``labels`` index into it. A label outside it is an error.
        grid: fps / feature_stride / num_frames of the features; a video's own ``"fps"`` in the
            annotations overrides ``grid.fps``.
        subset: keep videos of this subset only (None: all).
        feat_dim: expected D (None: not checked).
        max_seq_len: with ``training=True``, videos longer than this many snippets are randomly
            cropped to it; shorter ones are returned whole (``collate_videos`` pads) unless
            ``crop_ratio`` is set. The crop is ActionFormer's (:mod:`stovtal.data.crop`).
        training: enable the random crop.
        crop_ratio: ``(lo, hi)``, ``0 < lo <= hi <= 1``: videos of at most ``max_seq_len``
            snippets are also cropped, to a random ``lo..hi`` of their length (None: not).
        trunc_thresh: a segment cut by the crop is kept (clipped to the window widened by
            ``grid.offset`` on each side) if at least this fraction of its length lies inside.
        crop_trials: random windows tried to find one keeping at least one segment.
        require_annotations: drop videos without annotations (e.g. for supervised training).
        on_error: ``"raise"`` or ``"skip"``: bad annotations or a missing/bad feature file (checked
            at construction, header only) raise, or drop the video with a warning.
        generator: torch RNG for the crops (None: torch's global RNG, seeded per worker).
    """

    def __init__(self, annotations: str | os.PathLike | Mapping[str, Any], feature_dir: str | os.PathLike,
                 classes: Sequence[str], grid: FeatureGrid, subset: str | None = None,
                 feat_dim: int | None = None, max_seq_len: int | None = None, training: bool = False,
                 crop_ratio: Sequence[float] | None = None, trunc_thresh: float = 0.5,
                 crop_trials: int = 200,
                 require_annotations: bool = False, on_error: str = "raise",
                 generator: torch.Generator | None = None) -> None:
        if isinstance(annotations, Mapping):
            source, raw = "<annotations>", annotations
        else:
            source = os.fspath(annotations)
            raw = read_json(source)
        db = validate_annotations(raw, source, subset, classes, on_error)["database"]
        self.source = source
        self.feature_dir = os.fspath(feature_dir)
        self.classes = list(classes)
        self.class_index = {c: i for i, c in enumerate(self.classes)}
        self.grid = grid
        self.feat_dim = feat_dim
        self.max_seq_len = max_seq_len
        self.training = training
        # the crop settings are checked even when unused (a bad value is a bad value)
        rule = CropRule(max_seq_len if max_seq_len is not None else 1, crop_ratio, trunc_thresh,
                        grid.offset, crop_trials)
        self.crop_rule = rule if max_seq_len is not None else None
        self.generator = generator
        self.video_ids: list[str] = []
        self.infos: list[dict[str, Any]] = []
        for vid, info in db.items():
            if require_annotations and not info["annotations"]:
                continue
            try:
                self._check_header(vid)
            except (DataError, FileNotFoundError) as exc:
                if on_error == "raise":
                    raise
                warnings.warn(f"{exc} (video skipped)", stacklevel=2)
                continue
            self.video_ids.append(vid)
            self.infos.append(info)

    def _check_header(self, vid: str) -> None:
        load_features(self.feature_dir, vid, self.feat_dim, mmap=True, check_finite=False)

    def __len__(self) -> int:
        return len(self.video_ids)

    def fps(self, index: int) -> float:
        return float(self.infos[index].get("fps") or self.grid.fps)

    def to_seconds(self, segments: torch.Tensor | np.ndarray, item: Mapping[str, Any]) -> Any:
        """Grid-unit segments of ``item`` (an output of ``__getitem__``) -> seconds."""
        return self.grid.grid_to_seconds(segments + item["offset_snippets"], item["fps"])

    def __getitem__(self, index: int) -> dict[str, Any]:
        vid, info = self.video_ids[index], self.infos[index]
        fps = self.fps(index)
        arr = load_features(self.feature_dir, vid, self.feat_dim, mmap=True, check_finite=False)
        T = arr.shape[0]
        anns = info["annotations"]
        secs = np.array([a["segment"] for a in anns], dtype=np.float64).reshape(-1, 2)
        segs = self.grid.seconds_to_grid(secs, fps)
        labels = np.array([self.class_index[a["label"]] for a in anns], dtype=np.int64)
        actionness = (np.array([a["actionness"] for a in anns], dtype=np.float32)
                      if anns and all("actionness" in a for a in anns) else None)
        start, stop = 0, T
        if self.training and self.crop_rule is not None:
            crop = crop_window(T, segs, self.crop_rule, torch_randint(self.generator))
            start, stop, segs = crop.start, crop.stop, crop.segments
            labels = labels[crop.keep]
            if actionness is not None:
                actionness = actionness[crop.keep]
        window = np.asarray(arr[start:stop], dtype=np.float32)
        if not np.isfinite(window).all():
            raise DataError(f"video {vid!r}: feature file {os.path.join(self.feature_dir, vid + '.npy')}"
                            " contains NaN or Inf")
        item: dict[str, Any] = {
            "video_id": vid,
            "feats": torch.from_numpy(np.ascontiguousarray(window.T)),
            "segments": torch.from_numpy(segs.astype(np.float32)).reshape(-1, 2),
            "labels": torch.from_numpy(labels),
            "fps": fps,
            "duration": float(info["duration"]),
            "feat_stride": self.grid.feature_stride,
            "feat_num_frames": self.grid.num_frames,
            "offset_snippets": start,
            "offset_frames": start * self.grid.feature_stride,
        }
        if actionness is not None:
            item["actionness"] = torch.from_numpy(actionness)
        return item


def collate_videos(batch: Iterable[Mapping[str, Any]], max_len: int | None = None,
                   pad_to_multiple: int = 1) -> dict[str, Any]:
    """Batch items of :class:`VideoFeatureDataset`.

    Returns ``feats`` float32 ``[B, C, T_max]`` zero padded, ``masks`` bool ``[B, T_max]`` (True
    = valid snippet) and, for every other key, a list over the batch. ``T_max`` is the longest
    item (at least ``max_len`` if given), rounded up to a multiple of ``pad_to_multiple``.
    """
    batch = list(batch)
    if not batch:
        raise ValueError("collate_videos: empty batch")
    feats = [b["feats"] for b in batch]
    C = feats[0].shape[0]
    for b, f in zip(batch, feats, strict=True):
        if f.dim() != 2 or f.shape[0] != C:
            raise ValueError(f"collate_videos: video {b.get('video_id')!r} has feats {tuple(f.shape)}, "
                             f"expected [{C}, T]")
    t_max = max(max(f.shape[1] for f in feats), max_len or 0)
    if pad_to_multiple > 1:
        t_max = -(-t_max // pad_to_multiple) * pad_to_multiple
    out_feats = feats[0].new_zeros((len(batch), C, t_max))
    masks = torch.zeros((len(batch), t_max), dtype=torch.bool)
    for i, f in enumerate(feats):
        out_feats[i, :, : f.shape[1]] = f
        masks[i, : f.shape[1]] = True
    out: dict[str, Any] = {"feats": out_feats, "masks": masks}
    for key in batch[0]:
        if key != "feats":
            out[key] = [b.get(key) for b in batch]
    return out
