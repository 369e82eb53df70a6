"""Detection mAP at temporal IoU thresholds (ActivityNet protocol), vectorised.

Protocol, per class and threshold: predictions sorted by score (descending; ties keep the order
of the prediction file); each is matched to the unmatched ground truth of its video and class
with the highest IoU, if that IoU is >= the threshold (IoU ties: the earlier ground truth),
else it is a false positive. AP is the area under the interpolated precision-recall curve
(precision made monotone from the right, as in ActivityNet's ``interpolated_prec_rec``). mAP is
the mean over the classes that have ground truth; a class with ground truth and no predictions
scores 0. Predictions on videos that are not in the ground truth are ignored (counted in
``"ignored_predictions"``); predictions on a ground-truth video without annotations of their
class are false positives.

Vectorisation: the greedy matching only couples predictions of the same (video, class) group,
so step ``r`` matches the ``r``-th best prediction of every group at once, for all thresholds
(steps = size of the largest group); AP is computed for all classes and thresholds with
segmented cumulative sums.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from stovtal.data.formats import validate_annotations, validate_predictions
from stovtal.ops import segment_iou

__all__ = ["detection_map", "DetectionArrays", "to_arrays", "average_precision_arrays"]


@dataclass
class DetectionArrays:
    """Ground truth and predictions as flat arrays (index spaces: videos, classes)."""

    video_ids: list[str]
    classes: list[str]
    gt_video: np.ndarray  # int64 [G]
    gt_class: np.ndarray  # int64 [G]
    gt_seg: np.ndarray  # float64 [G, 2] seconds
    pred_video: np.ndarray  # int64 [P]
    pred_class: np.ndarray  # int64 [P]
    pred_seg: np.ndarray  # float64 [P, 2]
    pred_score: np.ndarray  # float64 [P]
    ignored: int  # predictions dropped (video not in the ground truth / class not evaluated)


def _database(gt: Mapping[str, Any]) -> Mapping[str, Any]:
    return gt["database"] if isinstance(gt, Mapping) and "database" in gt else gt


def _fast_checked_results(predictions: Mapping[str, Any], classes: Sequence[str] | None) -> Mapping[str, Any]:
    """``predictions["results"]`` after the checks of ``validate_predictions``, done in bulk
    with numpy; on any failure the entry-by-entry validator runs and raises the precise error."""
    try:
        results = predictions["results"]
        segs = [p["segment"] for preds in results.values() for p in preds]
        scores = np.asarray([p["score"] for preds in results.values() for p in preds], dtype=np.float64)
        labels = {p["label"] for preds in results.values() for p in preds}
        seg = np.asarray(segs, dtype=np.float64).reshape(len(segs), 2)
        ok = (np.isfinite(seg).all() and np.isfinite(scores).all() and bool((seg[:, 1] >= seg[:, 0]).all())
              and all(type(x) is str for x in labels)
              and (classes is None or labels <= set(classes)))
        if ok and all(isinstance(v, list) for v in results.values()):
            return results
    except (TypeError, ValueError, KeyError, AttributeError):
        pass
    return validate_predictions(predictions, "<predictions>", classes=classes)


def to_arrays(ground_truth: Mapping[str, Any], predictions: Mapping[str, Any],
              classes: Sequence[str] | None = None, validate: bool = True) -> DetectionArrays:
    """Flatten a parsed annotation dict (``{"database": ...}``) and prediction dict
    (``{"results": ...}``). With ``classes``, a label outside it is an error; without, the class
    list is the sorted set of ground-truth labels and predictions of other labels are ignored."""
    if validate:
        db = validate_annotations(ground_truth, "<ground truth>", classes=classes)["database"]
        results = _fast_checked_results(predictions, classes)
    else:
        db, results = _database(ground_truth), predictions["results"]
    if classes is None:
        classes = sorted({a["label"] for v in db.values() for a in v["annotations"]})
    classes = list(classes)
    cidx = {c: i for i, c in enumerate(classes)}
    video_ids = list(db)
    vidx = {v: i for i, v in enumerate(video_ids)}
    gv, gc, gs = [], [], []
    for v, info in db.items():
        for a in info["annotations"]:
            gv.append(vidx[v])
            gc.append(cidx[a["label"]])
            gs.append(a["segment"])
    vids = list(results)
    counts = np.array([len(results[v]) for v in vids], dtype=np.int64)
    pv = np.repeat(np.array([vidx.get(v, -1) for v in vids], dtype=np.int64), counts)
    pc = np.array([cidx.get(p["label"], -1) for v in vids for p in results[v]], dtype=np.int64)
    ps = np.asarray([p["segment"] for v in vids for p in results[v]], dtype=np.float64).reshape(-1, 2)
    sc = np.asarray([p["score"] for v in vids for p in results[v]], dtype=np.float64)
    keep = (pv >= 0) & (pc >= 0)
    ignored = int((~keep).sum())
    pv, pc, ps, sc = pv[keep], pc[keep], ps[keep], sc[keep]
    return DetectionArrays(
        video_ids, classes,
        np.asarray(gv, dtype=np.int64), np.asarray(gc, dtype=np.int64),
        np.asarray(gs, dtype=np.float64).reshape(-1, 2), pv, pc, ps, sc, ignored)


def _match(d: DetectionArrays, thresholds: np.ndarray) -> np.ndarray:
    """True positives ``[T, P]`` (prediction order of ``d``) by greedy per-group matching."""
    K = max(len(d.classes), 1)
    nT, P = len(thresholds), len(d.pred_score)
    tp = np.zeros((nT, P), dtype=bool)
    if P == 0 or len(d.gt_class) == 0:
        return tp
    gkey = d.gt_video * K + d.gt_class
    gorder = np.argsort(gkey, kind="stable")
    gkey_s = gkey[gorder]
    gseg = np.ascontiguousarray(d.gt_seg[gorder])
    pkey = d.pred_video * K + d.pred_class
    gstart = np.searchsorted(gkey_s, pkey, side="left")
    gcount = np.searchsorted(gkey_s, pkey, side="right") - gstart
    has_gt = np.nonzero(gcount > 0)[0]
    if len(has_gt) == 0:
        return tp
    # order the candidate predictions by (group, -score, file index) and rank them in the group
    order = has_gt[np.lexsort((has_gt, -d.pred_score[has_gt], pkey[has_gt]))]
    keys = pkey[order]
    first = np.r_[True, keys[1:] != keys[:-1]]
    group_start = np.maximum.accumulate(np.where(first, np.arange(len(order)), 0))
    rank = np.arange(len(order)) - group_start
    by_rank = np.argsort(rank, kind="stable")
    bounds = np.searchsorted(rank[by_rank], np.arange(rank.max() + 2))
    matched = np.zeros((nT, len(gkey)), dtype=bool)
    pseg = d.pred_seg
    thr = thresholds[:, None, None]
    for r in range(rank.max() + 1):
        active = order[by_rank[bounds[r]:bounds[r + 1]]]  # one prediction per group
        counts = gcount[active]
        width = int(counts.max())
        cols = np.arange(width)
        valid = cols[None, :] < counts[:, None]
        gidx = np.where(valid, gstart[active][:, None] + cols[None, :], 0)  # [A, W]
        a = torch.from_numpy(np.repeat(pseg[active], width, axis=0))
        b = torch.from_numpy(gseg[gidx.reshape(-1)])
        iou = segment_iou(a, b, aligned=True).numpy().reshape(len(active), width)
        iou = np.where(valid, iou, -1.0)
        cand = (iou[None] >= thr) & ~matched[:, gidx] & valid[None]  # [T, A, W]
        best = np.where(cand, iou[None], -np.inf).argmax(-1)  # [T, A]
        hit = cand.any(-1)
        t_idx, a_idx = np.nonzero(hit)
        matched[t_idx, gidx[a_idx, best[t_idx, a_idx]]] = True
        tp[:, active] = hit
    # matched is indexed in sorted-gt order; only tp is needed by the caller
    return tp


def average_precision_arrays(tp: np.ndarray, pred_class: np.ndarray, pred_score: np.ndarray,
                             num_gt: np.ndarray) -> np.ndarray:
    """Interpolated AP ``[T, K]`` from true positives ``[T, P]``; NaN where ``num_gt == 0``."""
    nT, P = tp.shape
    K = len(num_gt)
    ap = np.zeros((nT, K))
    if P > 0:
        order = np.lexsort((np.arange(P), -pred_score, pred_class))
        cls = pred_class[order]
        t = tp[:, order].astype(np.float64)
        starts = np.searchsorted(cls, np.arange(K))
        pos = np.arange(P)
        rank = pos - starts[cls]
        ctp = np.cumsum(t, axis=1)
        before = np.where(starts[cls] > 0, ctp[:, np.maximum(starts[cls] - 1, 0)], 0.0)
        ctp -= before
        precision = ctp / (rank + 1)
        npos = num_gt[cls].astype(np.float64)
        recall = np.divide(ctp, npos, out=np.zeros_like(ctp), where=npos > 0)
        prev = np.where(rank > 0, np.roll(recall, 1, axis=1), 0.0)
        # running max of precision from the right, per class: offsets keep classes apart
        offset = 2.0 * (cls.max() - cls)  # reversed scan meets the highest class first
        rev = (precision + offset)[:, ::-1]
        interp = np.maximum.accumulate(rev, axis=1)[:, ::-1] - offset
        contrib = (recall - prev) * interp
        idx = cls[None, :] + K * np.arange(nT)[:, None]
        ap = np.bincount(idx.ravel(), weights=contrib.ravel(), minlength=nT * K).reshape(nT, K)
    ap[:, num_gt == 0] = np.nan
    return ap


def detection_map(ground_truth: Mapping[str, Any], predictions: Mapping[str, Any],
                  tiou_thresholds: Iterable[float], classes: Sequence[str] | None = None,
                  validate: bool = True) -> dict[str, Any]:
    """ActivityNet-protocol detection mAP (see the module docstring).

    Args:
        ground_truth: parsed annotation JSON (``{"database": {...}}``), restricted to the videos
            to evaluate (e.g. one subset); times in seconds.
        predictions: parsed prediction JSON (``{"results": {vid: [{"segment", "label",
            "score"}]}}``).
        tiou_thresholds: temporal IoU thresholds, e.g. ``[0.3, 0.4, 0.5, 0.6, 0.7]``.
        classes: the vocabulary; labels outside it are an error. None: the classes of the
            ground truth (predictions of other labels are ignored).
        validate: check both inputs (turn off only for inputs already validated).

    Returns:
        ``{"tiou_thresholds", "mAP": [per threshold], "average_mAP", "per_class": {class:
        [AP per threshold]}, "num_gt": {class: n}, "classes": [evaluated classes],
        "ignored_predictions": n}``; all scores are fractions in [0, 1]. Only classes with
        ground truth are evaluated and listed.
    """
    thresholds = np.asarray(list(tiou_thresholds), dtype=np.float64).reshape(-1)
    if thresholds.size == 0 or not np.all((thresholds >= 0) & (thresholds <= 1)):
        raise ValueError(f"tiou_thresholds must be a non-empty list of values in [0, 1], got "
                         f"{thresholds.tolist()}")
    d = to_arrays(ground_truth, predictions, classes, validate)
    num_gt = np.bincount(d.gt_class, minlength=len(d.classes))
    if not (num_gt > 0).any():
        raise ValueError("detection_map: the ground truth has no annotations to evaluate")
    tp = _match(d, thresholds)
    ap = average_precision_arrays(tp, d.pred_class, d.pred_score, num_gt)
    present = np.nonzero(num_gt > 0)[0]
    mean = ap[:, present].mean(axis=1)
    return {
        "tiou_thresholds": thresholds.tolist(),
        "mAP": mean.tolist(),
        "average_mAP": float(mean.mean()),
        "per_class": {d.classes[k]: ap[:, k].tolist() for k in present},
        "num_gt": {d.classes[k]: int(num_gt[k]) for k in present},
        "classes": [d.classes[k] for k in present],
        "ignored_predictions": d.ignored,
    }
