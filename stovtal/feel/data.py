"""FEEL's inputs: the training videos (unlabelled for the method) and the evaluation videos.

Ground-truth labels are loaded next to the features only so that NMI and mAP can be computed;
:mod:`stovtal.feel.pipeline` never passes them to clustering, selection or training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from stovtal.config import DataConfig
from stovtal.engine.layout import FeelLayout

__all__ = ["FeelData", "VideoSet", "dominant_label", "load_feel_data", "load_feel_subset"]


@dataclass
class VideoSet:
    ids: list[str]
    feats: list[torch.Tensor]  # each [C, T] float32 (channels first, as the dataset returns)
    durations: list[float]
    fps: list[float]
    gt: dict[str, Any]  # {"database": {...}}: evaluation only


@dataclass
class FeelData:
    train: VideoSet
    eval: VideoSet
    classes: list[str]
    feature_stride: int
    num_frames: int
    vocab_npz: str | None  # text embeddings of the class names in feature space, if known


def dominant_label(info: dict[str, Any]) -> str | None:
    """The class covering the most annotated time in a video (ties: first in order), or None."""
    total: dict[str, float] = {}
    for ann in info.get("annotations", []):
        s, e = ann["segment"]
        total[ann["label"]] = total.get(ann["label"], 0.0) + max(float(e) - float(s), 0.0)
    if not total:
        return None
    return max(total, key=lambda k: total[k])


def _load_set(annotations: dict[str, Any], feature_dir: str, classes: list[str], grid, subset: str | None,
              feat_dim: int | None, progress: bool, desc: str) -> VideoSet:
    from tqdm import tqdm

    from stovtal.data.dataset import VideoFeatureDataset

    ds = VideoFeatureDataset(annotations, feature_dir, classes, grid, subset=subset, feat_dim=feat_dim)
    if len(ds) == 0:
        raise ValueError(f"no videos in subset {subset!r} of the annotations")
    ids, feats, durs, fps = [], [], [], []
    for i in tqdm(range(len(ds)), desc=desc, disable=not progress, leave=False):
        item = ds[i]
        ids.append(item["video_id"])
        feats.append(torch.as_tensor(item["feats"], dtype=torch.float32).contiguous())
        durs.append(float(item["duration"]))
        fps.append(float(item["fps"]))
    db = annotations["database"]
    gt = {"database": {v: db[v] for v in ids}}
    return VideoSet(ids, feats, durs, fps, gt)


def _resolve(cfg: DataConfig, workdir: str, progress: bool):
    """(data spec, annotations) of ``cfg`` (the synthetic world in ``cfg.world_dir`` or ``<workdir>/world``)."""
    from stovtal.data.resolve import resolve_data
    from stovtal.utils.fileio import read_json

    # FEEL clusters target-domain videos without their labels (the paper clusters THUMOS14's own
    # videos): the synthetic world's unlabelled set is drawn like its test videos (web_profile "target")
    profile = cfg.world.get("web_profile", "target")
    if cfg.is_synthetic and profile != "target":
        raise ValueError(f"data.world.web_profile: FEEL clusters target-domain videos, so it must be "
                         f"'target', got {profile!r}")
    spec = resolve_data(cfg, world_dir=FeelLayout(workdir).world, world_defaults={"web_profile": "target"},
                        split=False, progress=progress)
    ann = read_json(spec.annotation_file)
    if not isinstance(ann, dict) or "database" not in ann:
        raise ValueError(f"{spec.annotation_file}: not an annotation file (no 'database')")
    return spec, ann


def load_feel_data(cfg: DataConfig, workdir: str, progress: bool = True) -> FeelData:
    """FEEL's training and evaluation videos of ``cfg`` (:func:`stovtal.data.resolve.resolve_data`;
    the synthetic world in ``cfg.world_dir`` or ``<workdir>/world``): the user's ``train_subset``
    or the world's web videos (with their hidden ground truth), and the ``test_subset``."""
    from stovtal.utils.fileio import read_json

    spec, ann = _resolve(cfg, workdir, progress)
    classes, grid = spec.vocabulary, spec.grid
    if spec.world is None:
        train = _load_set(ann, spec.feature_dir, classes, grid, spec.train_subset, spec.feat_dim, progress,
                          "train videos")
    else:  # the unlabelled target-domain videos; their hidden ground truth is read for NMI /
        # selection analysis only
        train = _load_set(read_json(spec.unlabelled_gt_file), spec.unlabelled_feature_dir, classes, grid, "web",
                          spec.feat_dim, progress, "web videos")
    evl = _load_set(ann, spec.feature_dir, classes, grid, spec.test_subset, spec.feat_dim, progress,
                    "test videos")
    return FeelData(train, evl, classes, grid.feature_stride, grid.num_frames, spec.vocab_npz or None)


def load_feel_subset(cfg: DataConfig, workdir: str, subset: str | None = None,
                     progress: bool = True) -> tuple[VideoSet, list[str], int, int]:
    """The videos of one ``subset`` of ``cfg``'s annotations (default: ``test_subset``; ``""``: all),
    resolved as :func:`load_feel_data` does: ``(videos, classes, feature_stride, num_frames)``."""
    spec, ann = _resolve(cfg, workdir, progress)
    subset = spec.test_subset if subset is None else subset
    videos = _load_set(ann, spec.feature_dir, spec.vocabulary, spec.grid, subset or None, spec.feat_dim,
                       progress, f"{subset or 'all'} videos")
    return videos, spec.vocabulary, spec.grid.feature_stride, spec.grid.num_frames
