"""Pseudo-label quality against the unlabelled videos' hidden ground truth (report only).

For every candidate (see :mod:`stovtal.selftrain.filtering`) its *best tIoU* is the largest
temporal IoU with any ground-truth segment of its video (the paper's Fig. 6 plots actionness
against it). For a selection rule:

- precision = fraction of selected pseudo-labels whose best tIoU >= ``tiou`` (0.5);
- recall = fraction of ground-truth segments overlapped (IoU >= ``tiou``) by at least one
  selected pseudo-label (ActivityNet's proposal-recall convention: no one-to-one matching).

The method never reads this ground truth; only the report does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch

from .filtering import Candidates, num_selected, prepare_candidates, video_thresholds

__all__ = ["CandidateQuality", "correlation", "sweep"]


class CandidateQuality:
    """Candidates of many videos with their overlaps to the ground truth."""

    def __init__(self, candidates: Candidates, ground_truth: Mapping[str, Any], tiou: float = 0.5,
                 dedup_iou: float | None = None):
        from stovtal.ops import segment_iou

        missing = sorted(set(candidates) - set(ground_truth))
        if missing:
            raise KeyError(f"no ground truth for videos {missing[:5]}")
        self.candidates = candidates
        self.dedup_iou = dedup_iou
        self.tiou = tiou
        self.videos = prepare_candidates(candidates, dedup_iou)
        self.best: dict[str, np.ndarray] = {}  # per candidate: best tIoU with the ground truth
        self.first_hit: dict[str, np.ndarray] = {}  # per GT: rank of the first candidate with IoU >= tiou
        self.num_gt = 0
        for vid, (segs, _) in self.videos.items():
            gts = np.array([a["segment"] for a in ground_truth[vid]["annotations"]], dtype=np.float64).reshape(-1, 2)
            self.num_gt += len(gts)
            if len(segs) == 0 or len(gts) == 0:
                self.best[vid] = np.zeros(len(segs))
                self.first_hit[vid] = np.full(len(gts), np.inf)
                continue
            iou = segment_iou(torch.from_numpy(segs), torch.from_numpy(gts)).numpy()  # [K, G]
            self.best[vid] = iou.max(axis=1)
            hit = iou >= tiou
            self.first_hit[vid] = np.where(hit.any(0), hit.argmax(0), np.inf)

    def all_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(actionness, best tIoU) of every candidate."""
        a = [self.videos[v][1] for v in self.videos]
        b = [self.best[v] for v in self.videos]
        return (np.concatenate(a) if a else np.zeros(0)), (np.concatenate(b) if b else np.zeros(0))

    def evaluate(self, thresholds: Mapping[str, float], min_num: int = 1, max_num: int = 0) -> dict[str, float]:
        """Precision / recall / count of the selection with per-video ``thresholds``."""
        n_sel = n_ok = n_hit = 0
        for vid, (_, act) in self.videos.items():
            n = num_selected(act, thresholds[vid], min_num, max_num)
            n_sel += n
            n_ok += int((self.best[vid][:n] >= self.tiou).sum())
            n_hit += int((self.first_hit[vid] < n).sum())
        p = n_ok / n_sel if n_sel else 0.0
        r = n_hit / self.num_gt if self.num_gt else 0.0
        f1 = 2 * p * r / (p + r) if p + r > 0 else 0.0
        return {"num": n_sel, "per_video": n_sel / max(len(self.videos), 1), "precision": p, "recall": r, "f1": f1}


def sweep(q: CandidateQuality, mode: str, values: Iterable[float], floor: float = 0.0,
          min_num: int = 1, max_num: int = 0) -> list[dict[str, float]]:
    """Precision/recall of the rule ``mode`` for each parameter value (fixed: the threshold;
    per_video: the ratio; quantile: the quantile), floored by ``floor``."""
    rows = []
    for v in values:
        if mode == "fixed":
            thr = video_thresholds(q.candidates, "fixed", float(v))
        elif mode == "per_video":
            thr = video_thresholds(q.candidates, "per_video", floor, ratio=float(v))
        else:
            thr = video_thresholds(q.candidates, "quantile", floor, quantile=float(v), dedup_iou=q.dedup_iou)
        rows.append({"param": float(v), **q.evaluate(thr, min_num, max_num)})
    return rows


def correlation(x: np.ndarray, y: np.ndarray) -> dict[str, float | None]:
    """Pearson and Spearman correlation (None with fewer than 3 points or a constant input)."""
    from scipy import stats

    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"pearson": None, "spearman": None, "n": len(x)}
    return {"pearson": float(stats.pearsonr(x, y)[0]), "spearman": float(stats.spearmanr(x, y)[0]), "n": len(x)}
