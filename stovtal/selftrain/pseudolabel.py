"""Sharded, resumable pseudo-labelling of unlabelled videos.

The video list is cut into shards (:class:`stovtal.utils.shards.ShardPlan`). For each shard, a
data loader feeds the localizer (the base model's EMA weights, or the Mean Teacher) in batches;
``stovtal.engine.predict_segments`` decodes the class-agnostic detections (soft-NMS, seconds,
clipped to the video); the best ``max_candidates`` with actionness >= ``candidate_floor`` are the
shard's output, written atomically and then recorded in the manifest
(:class:`stovtal.utils.shards.ShardManifest`). A SIGKILL loses at most the shard in flight; a
re-run skips finished shards. Inference is deterministic for a fixed shard (same batches in the
same order), so the merged candidates, and the pseudo-labels selected from them
(:func:`stovtal.selftrain.filtering.select_pseudo_labels`) are the same as in an uninterrupted
run.

Files under ``out_dir``: ``shards/`` (plan, per-shard records, ``outputs/``),
``pseudo_labels.json`` (annotation format + ``actionness``; written last, atomically).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from stovtal.utils import distributed as D
from stovtal.utils.fileio import atomic_write_json, read_json

from .config import PseudoLabelConfig
from .filtering import select_pseudo_labels

__all__ = ["UnlabelledSet", "label_videos", "pseudo_label", "pseudo_label_distributed", "select_from_config"]

PSEUDO_FILE = "pseudo_labels.json"


@dataclass
class UnlabelledSet:
    """The unlabelled videos: ``database`` (video id -> ``{"duration", "fps"?, ...}``; any
    annotations are ignored), their ``feature_dir`` and snippet ``grid`` (FeatureGrid)."""

    database: Mapping[str, Mapping[str, Any]]
    feature_dir: str
    grid: Any
    feat_dim: int | None = None

    def dataset(self, video_ids: Sequence[str]):
        """A ``VideoFeatureDataset`` over ``video_ids`` (in that order), without annotations."""
        from stovtal.data import VideoFeatureDataset

        db = {}
        for vid in video_ids:
            info = self.database[vid]
            entry = {"subset": "unlabelled", "duration": info["duration"], "annotations": []}
            if info.get("fps") is not None:
                entry["fps"] = info["fps"]
            db[vid] = entry
        return VideoFeatureDataset({"database": db}, self.feature_dir, [], self.grid,
                                   feat_dim=self.feat_dim)


def _candidates(proposals: Mapping[str, Mapping[str, Any]], floor: float, max_candidates: int,
                fps: Mapping[str, float | None]) -> dict[str, Any]:
    out = {}
    for vid, p in proposals.items():
        scores = p["scores"].numpy().astype(np.float64)
        segs = p["segments"].numpy().astype(np.float64)
        keep = np.flatnonzero(scores >= floor)[:max_candidates]  # already by descending score
        # rounded to 0.1 ms (a snippet is ~0.1-0.5 s) and 1e-6 actionness: shorter shard files,
        # faster to write and to merge
        entry: dict[str, Any] = {
            "duration": float(p["duration"]),
            "segments": np.round(segs[keep], 4).tolist(),
            "actionness": np.round(scores[keep], 6).tolist(),
        }
        if fps.get(vid) is not None:
            entry["fps"] = float(fps[vid])
        out[vid] = entry
    return out


def label_videos(model: nn.Module, unlabelled: UnlabelledSet, video_ids: Sequence[str],
                 cfg: PseudoLabelConfig, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Candidates of ``video_ids`` (one shard): ``{vid: {"duration", "fps"?, "segments",
    "actionness"}}`` (seconds; by descending actionness)."""
    from stovtal.data import collate_videos
    from stovtal.engine import predict_segments

    ds = unlabelled.dataset(video_ids)
    loader = DataLoader(ds, batch_size=cfg.batch_size, shuffle=False, collate_fn=collate_videos,
                        num_workers=cfg.num_workers)
    proposals = predict_segments(model, loader, device=device)
    missing = sorted(set(video_ids) - set(proposals))
    if missing:
        raise RuntimeError(f"inference returned no result for videos {missing[:5]}")
    fps = {vid: unlabelled.database[vid].get("fps") for vid in video_ids}
    return _candidates(proposals, cfg.candidate_floor, cfg.max_candidates, fps)


def select_from_config(candidates: Mapping[str, Any], cfg: PseudoLabelConfig) -> dict[str, Any]:
    """Pseudo-labels from candidates with the thresholds of ``cfg``."""
    return select_pseudo_labels(
        candidates, mode=cfg.threshold_mode, threshold=cfg.threshold, min_num=cfg.min_num,
        max_num=cfg.max_num, dedup_iou=cfg.dedup_iou if cfg.dedup else None,
        ratio=cfg.per_video_ratio, quantile=cfg.quantile,
    )


def pseudo_label(model: nn.Module, unlabelled: UnlabelledSet, video_ids: Sequence[str],
                 out_dir: str | os.PathLike, cfg: PseudoLabelConfig, *,
                 device: torch.device | str = "cpu", progress: bool = False,
                 job: int = 0, num_jobs: int = 1, rank: int = 0, world_size: int = 1,
                 desc: str = "pseudo-label") -> dict[str, Any] | None:
    """Pseudo-label ``video_ids`` into ``out_dir`` (see the module docstring).

    Returns the pseudo-label database (also written to ``out_dir/pseudo_labels.json``) once all
    shards are finished, or None if this worker finished its own shards while others (other
    ranks/jobs) are still pending. If ``pseudo_labels.json`` exists it is read and returned.
    """
    from stovtal.utils.shards import ShardManifest, ShardPlan, ShardResult, run_shards

    out_dir = os.fspath(out_dir)
    final = os.path.join(out_dir, PSEUDO_FILE)
    if os.path.exists(final):
        return read_json(final)
    if not video_ids:
        raise ValueError("no unlabelled videos to pseudo-label")
    plan = ShardPlan(video_ids, cfg.shard_size)
    manifest = ShardManifest(os.path.join(out_dir, "shards"), plan)
    mine = plan.select(job, num_jobs, rank, world_size)
    model = model.to(device).eval()

    def process(shard) -> ShardResult:
        t0 = time.perf_counter()
        out = label_videos(model, unlabelled, shard.items, cfg, device)
        n = sum(len(v["actionness"]) for v in out.values())
        return ShardResult(output=out, info={"seconds": time.perf_counter() - t0, "candidates": n})

    bar = None
    if progress:
        from tqdm import tqdm

        todo = manifest.pending(mine)
        bar = tqdm(total=len(mine), initial=len(mine) - len(todo), desc=desc, unit="shard", dynamic_ncols=True)
    run_shards(manifest, mine, process, on_done=(lambda s, r: bar.update(1)) if bar is not None else None)
    if bar is not None:
        bar.close()
    if not manifest.is_complete():
        return None
    candidates = manifest.merge_outputs()
    db = select_from_config(candidates, cfg)
    db["info"] = _stats(db, candidates, cfg)
    atomic_write_json(final, db)
    return db

def pseudo_label_distributed(model: nn.Module, unlabelled: UnlabelledSet, video_ids: Sequence[str],
                             out_dir: str | os.PathLike, cfg: PseudoLabelConfig, *,
                             device: torch.device | str = "cpu", progress: bool = False,
                             job: int = 0, num_jobs: int = 1, desc: str = "pseudo-label") -> dict[str, Any] | None:
    """:func:`pseudo_label` over all ranks of this job (one process: :func:`pseudo_label` itself).

    Called by every rank: each labels its own shards (and writes their outputs and manifest
    records); after a barrier rank 0 merges them into ``pseudo_labels.json``. A rank that dies
    loses at most its shard in flight; a re-run (any number of ranks or jobs) does only the shards
    without a record. Returns the pseudo-label database on every rank once all shards of the
    plan (of all jobs) are finished, else None (other jobs still have pending shards).
    """
    rank, world = D.get_rank(), D.get_world_size()
    kwargs = dict(device=device, job=job, num_jobs=num_jobs, rank=rank, world_size=world, desc=desc)
    db = pseudo_label(model, unlabelled, video_ids, out_dir, cfg, progress=progress and rank == 0, **kwargs)
    if world == 1:
        return db
    D.barrier()  # every shard of this job now has its record
    if rank == 0 and db is None:
        db = pseudo_label(model, unlabelled, video_ids, out_dir, cfg, progress=False, **kwargs)
    D.barrier()  # rank 0 has written pseudo_labels.json (if the plan is complete)
    final = os.path.join(os.fspath(out_dir), PSEUDO_FILE)
    if db is None and os.path.exists(final):
        db = read_json(final)
    return db



def load_candidates(out_dir: str | os.PathLike) -> dict[str, Any]:
    """The merged candidates of a finished pseudo-labelling directory (for analysis)."""
    shard_dir = os.path.join(os.fspath(out_dir), "shards")
    outputs = os.path.join(shard_dir, "outputs")
    if not os.path.isdir(outputs):
        raise FileNotFoundError(f"{shard_dir}: no pseudo-labelling shards here")
    merged: dict[str, Any] = {}
    for name in sorted(os.listdir(outputs)):
        if name.endswith(".json") and not name.startswith("."):
            merged.update(read_json(os.path.join(outputs, name)))
    return merged


def _stats(db: Mapping[str, Any], candidates: Mapping[str, Any], cfg: PseudoLabelConfig) -> dict[str, Any]:
    n_videos = len(db["database"])
    n_labels = sum(len(v["annotations"]) for v in db["database"].values())
    return {
        "num_videos": n_videos,
        "num_pseudo_labels": n_labels,
        "num_candidates": sum(len(v["actionness"]) for v in candidates.values()),
        "threshold_mode": cfg.threshold_mode,
        "threshold": cfg.threshold,
        "min_num": cfg.min_num,
        "dedup": cfg.dedup,
    }
