"""FEEL's inputs: the training videos (unlabelled for the method) and the evaluation videos.

Ground-truth labels are loaded next to the features only so that NMI and mAP can be computed;
:mod:`stovtal.feel.pipeline` never passes them to clustering, selection or training.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from stovtal.config import DataConfig
from stovtal.engine.layout import FeelLayout

__all__ = ["FeelData", "VideoSet", "dominant_label", "load_feel_data"]


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


def _load_set(annotations: dict[str, Any], feature_dir: str, classes: list[str], grid, subset: str,
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


def _classes(spec: str) -> list[str]:
    if os.path.isfile(spec):
        with open(spec, encoding="utf-8") as f:
            names = [ln.strip() for ln in f if ln.strip()]
        if not names:
            raise ValueError(f"{spec}: no class names")
        return names
    from stovtal.data.vocab import load_vocabulary

    return load_vocabulary(spec)


def load_feel_data(cfg: DataConfig, workdir: str, progress: bool = True) -> FeelData:
    """Load the user's features (``cfg.annotations`` set) or write/read the synthetic world
    (``cfg.world``, in ``cfg.world_dir`` or ``<workdir>/world``)."""
    from stovtal.data.formats import FeatureGrid
    from stovtal.utils.fileio import read_json

    if not cfg.is_synthetic:
        if not cfg.annotations:
            raise ValueError("data.annotations is required (or set data.synthetic=true)")
        ann = read_json(cfg.annotations)
        if not isinstance(ann, dict) or "database" not in ann:
            raise ValueError(f"{cfg.annotations}: not an annotation file (no 'database')")
        classes = _classes(cfg.vocabulary)
        grid = FeatureGrid(cfg.fps, cfg.feature_stride, cfg.num_frames)
        train = _load_set(ann, cfg.feature_dir, classes, grid, cfg.train_subset, cfg.feat_dim, progress, "train videos")
        evl = _load_set(ann, cfg.feature_dir, classes, grid, cfg.test_subset, cfg.feat_dim, progress, "eval videos")
        return FeelData(train, evl, classes, cfg.feature_stride, cfg.num_frames, None)

    from stovtal.data.synthetic import SyntheticConfig, ensure_world

    root = cfg.world_dir or FeelLayout(workdir).world
    # FEEL clusters target-domain videos without their labels (the paper clusters THUMOS14's own
    # videos): the world's unlabelled set is drawn like its test videos (web_profile "target")
    world = {"web_profile": "target", **cfg.world}
    if world["web_profile"] != "target":
        raise ValueError(f"data.world.web_profile: FEEL clusters target-domain videos, so it must be "
                         f"'target', got {world['web_profile']!r}")
    try:
        world_cfg = SyntheticConfig.from_dict(world)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"data.world: {exc}") from None
    world = ensure_world(root, world_cfg, progress=progress)
    classes = list(world["classes"])
    grid = FeatureGrid(float(world["fps"]), int(world["feature_stride"]), int(world["num_frames"]))
    feat_dir = os.path.join(root, "features")
    # the unlabelled target-domain videos ("web" files of a web_profile "target" world); their
    # hidden ground truth is read for NMI / selection analysis only
    web_gt = read_json(os.path.join(root, "web_gt.json"))
    train = _load_set(web_gt, feat_dir, classes, grid, "web", None, progress, "web videos")
    test = read_json(os.path.join(root, "annotations.json"))
    evl = _load_set(test, feat_dir, classes, grid, "test", None, progress, "test videos")
    return FeelData(train, evl, classes, grid.feature_stride, grid.num_frames, os.path.join(root, "vocab.npz"))
