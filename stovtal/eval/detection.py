"""Detection mAP at temporal IoU thresholds (ActivityNet protocol), vectorised.

Protocol (ActivityNet's ``Evaluation/eval_detection.py``), per class and threshold: predictions
sorted by score (descending; ties keep the order of the prediction file); each is matched to
the unmatched ground truth of its video and class with the highest IoU, if that IoU is >= the
threshold (IoU ties: the earlier ground truth), else it is a false positive. AP is the area
under the interpolated precision-recall curve (precision made monotone from the right, as in
ActivityNet's ``interpolated_prec_rec``). mAP is the mean over the classes that have ground
truth; a class with ground truth and no predictions scores 0.

Every prediction of an evaluated class counts: one on a video without ground truth of its class
(a ground-truth video without such annotations, or a video absent from the ground truth) is a
false positive (counted in ``"absent_video_predictions"`` when the video is absent), and so is
one with ``end <= start`` (counted in ``"degenerate_predictions"``, with a warning; with
``strict=True`` an ``end < start`` raises a :class:`~stovtal.data.DataError` instead).
Predictions of a label without ground truth are not evaluated (``"ignored_predictions"``; the
official script stops on them). The ground truth needs no ``duration``.

Algorithm (all thresholds at once, no ``[thresholds, predictions]`` arrays):

1. Predictions are sorted once by (class, -score, file index); a prediction's position in that
   order, counted from its class's first, is its rank in the class's precision-recall curve.
2. Matching only couples predictions and ground truth of one (video, class) group. IoU is
   computed once (``segment_iou``) for the pairs inside each group; pairs below the lowest
   threshold can never match and are dropped, and so are the predictions left without pairs
   (false positives at every threshold). The greedy matching then runs step ``r`` = the
   ``r``-th best remaining prediction of every group, for all groups and thresholds at once
   (steps = the largest number of remaining predictions in a group).
3. AP only needs the true positives: the interpolated precision at a true positive is the
   largest precision at this or a later true positive (precision falls between them), and
   recall grows by ``1 / #gt`` at each. So AP is a segmented suffix maximum and a sum over the
   true positives of every (threshold, class), with the same floating-point operations, in the
   same order, as the loop in :mod:`stovtal.eval.reference`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain, repeat
from operator import itemgetter
from typing import Any

import numpy as np
import torch

from stovtal.data.formats import validate_annotations, validate_predictions
from stovtal.ops import segment_iou

__all__ = ["detection_map", "DetectionArrays", "to_arrays", "match_detections",
           "average_precision_from_hits"]


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
    ignored: int  # predictions dropped (label outside the evaluated classes)
    absent: int = 0  # kept predictions on videos absent from the ground truth (video index V)
    degenerate: int = 0  # kept predictions with end <= start (false positives)


def _database(gt: Mapping[str, Any]) -> Mapping[str, Any]:
    return gt["database"] if isinstance(gt, Mapping) and "database" in gt else gt


def _all_numbers(values: Iterable[Any]) -> bool:
    """Every value is an int or float and not a bool (``formats._number``'s type rule)."""
    return all(issubclass(t, (int, float)) and not issubclass(t, bool) for t in set(map(type, values)))


class _Invalid(Exception):
    """The bulk checks failed; the entry-by-entry validator finds and names the culprit."""


def _flatten_predictions(results: Mapping[str, Any], check: bool, allow_reversed: bool = True
                         ) -> tuple[list[str], np.ndarray, list[Any], np.ndarray, np.ndarray]:
    """``results`` as (video ids, per-video counts, labels, segments ``[P, 2]``, scores ``[P]``)
    with C-level passes over the entries. With ``check``, raises :class:`_Invalid` unless every
    entry passes the checks of :func:`validate_predictions` (vocabulary aside)."""
    try:
        vids = list(results)
        lists = [results[v] for v in vids]
        if check and not all(isinstance(x, list) for x in lists):
            raise _Invalid
        flat = list(chain.from_iterable(lists))
        P = len(flat)
        segs = list(map(itemgetter("segment"), flat))
        labels = list(map(itemgetter("label"), flat))
        scores = list(map(itemgetter("score"), flat))
        times = list(chain.from_iterable(segs))
        if check and not (
                all(issubclass(t, (list, tuple)) for t in set(map(type, segs)))
                and set(map(len, segs)) <= {2}
                and _all_numbers(times) and _all_numbers(scores)
                and all(issubclass(t, str) for t in set(map(type, labels)))):
            raise _Invalid
        seg = np.fromiter(times, dtype=np.float64, count=2 * P).reshape(P, 2)
        score = np.fromiter(scores, dtype=np.float64, count=P)
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError):
        raise _Invalid from None
    if check and not (np.isfinite(seg).all() and np.isfinite(score).all()
                      and (allow_reversed or bool((seg[:, 1] >= seg[:, 0]).all()))):
        raise _Invalid
    counts = np.fromiter(map(len, lists), dtype=np.int64, count=len(lists))
    return vids, counts, labels, seg, score


def to_arrays(ground_truth: Mapping[str, Any], predictions: Mapping[str, Any],
              classes: Sequence[str] | None = None, validate: bool = True,
              strict: bool = False) -> DetectionArrays:
    """Flatten a parsed annotation dict (``{"database": ...}``) and prediction dict
    (``{"results": ...}``). With ``classes``, a label outside it is an error; without, the class
    list is the sorted set of ground-truth labels and predictions of other labels are ignored.
    Predictions on videos absent from the ground truth get video index ``len(video_ids)``.
    ``strict``: a prediction with ``end < start`` is an error (validated inputs only)."""
    allow = not strict
    if validate:
        db = validate_annotations(ground_truth, "<ground truth>", classes=classes,
                                  require_duration=False)["database"]
        if not isinstance(predictions, Mapping) or not isinstance(predictions.get("results"), Mapping):
            validate_predictions(predictions, "<predictions>", classes=classes)  # raises
    else:
        db = _database(ground_truth)
    results = predictions["results"]
    strict = classes is not None
    if classes is None:
        classes = sorted({a["label"] for v in db.values() for a in v["annotations"]})
    classes = list(classes)
    cidx = {c: i for i, c in enumerate(classes)}
    try:
        vids, counts, labels, ps, sc = _flatten_predictions(results, check=validate, allow_reversed=allow)
        pc = np.fromiter(map(cidx.get, labels, repeat(-1)), dtype=np.int64, count=len(labels))
        if validate and strict and (pc < 0).any():
            raise _Invalid  # a label outside the given vocabulary
    except _Invalid:
        # precise error message, or (if the bulk checks were stricter) the cleaned entries
        results = validate_predictions(predictions, "<predictions>", classes=classes,
                                       allow_reversed=allow)
        vids, counts, labels, ps, sc = _flatten_predictions(results, check=False)
        pc = np.fromiter(map(cidx.get, labels, repeat(-1)), dtype=np.int64, count=len(labels))
    video_ids = list(db)
    vidx = {v: i for i, v in enumerate(video_ids)}
    gv, gc, gs = [], [], []
    for v, info in db.items():
        for a in info["annotations"]:
            gv.append(vidx[v])
            gc.append(cidx[a["label"]])
            gs.append(a["segment"])
    absent_idx = len(video_ids)
    pv = np.repeat(np.fromiter(map(vidx.get, vids, repeat(absent_idx)), dtype=np.int64,
                               count=len(vids)), counts)
    keep = pc >= 0
    ignored = int(len(keep) - np.count_nonzero(keep))
    if ignored:
        pv, pc, ps, sc = pv[keep], pc[keep], ps[keep], sc[keep]
    return DetectionArrays(
        video_ids, classes,
        np.asarray(gv, dtype=np.int64), np.asarray(gc, dtype=np.int64),
        np.asarray(gs, dtype=np.float64).reshape(-1, 2), pv, pc, ps, sc, ignored,
        absent=int(np.count_nonzero(pv == absent_idx)),
        degenerate=int(np.count_nonzero(ps[:, 1] <= ps[:, 0])))


def _class_order(pred_class: np.ndarray, pred_score: np.ndarray) -> np.ndarray:
    """Permutation sorting predictions by (class, -score, file index)."""
    by_score = np.argsort(-pred_score, kind="stable")
    cls = pred_class[by_score]
    if len(cls) and 0 <= cls.min() and cls.max() <= np.iinfo(np.int16).max:
        cls = cls.astype(np.int16)  # numpy's stable sort is a radix sort for 16-bit keys
    return by_score[np.argsort(cls, kind="stable")]


def _segment_starts(keys: np.ndarray) -> np.ndarray:
    """For sorted ``keys``, the index of the first element of each element's run."""
    n = len(keys)
    first = np.ones(n, dtype=bool)
    first[1:] = keys[1:] != keys[:-1]
    return np.maximum.accumulate(np.where(first, np.arange(n), 0))


def match_detections(d: DetectionArrays, thresholds: np.ndarray,
                     order: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Greedy ActivityNet matching at every threshold (see the module docstring).

    Args:
        d: flattened ground truth and predictions.
        thresholds: float64 ``[T]`` tIoU thresholds.
        order: :func:`_class_order` of the predictions, if already computed.

    Returns:
        ``(thr_idx, pred_idx)``: int64 ``[H]`` each, one entry per true positive: the
        threshold index and the prediction (index into ``d.pred_*``). Every other
        (threshold, prediction) is a false positive.
    """
    none = np.zeros(0, dtype=np.int64)
    nT, P, G = len(thresholds), len(d.pred_score), len(d.gt_class)
    if P == 0 or G == 0:
        return none, none
    K = max(len(d.classes), 1)
    gkey = d.gt_video * K + d.gt_class
    gorder = np.argsort(gkey, kind="stable")  # keeps the annotation order inside a group
    gkey_s = gkey[gorder]
    gseg = np.ascontiguousarray(d.gt_seg[gorder])
    if order is None:
        order = _class_order(d.pred_class, d.pred_score)
    pkey = d.pred_video * K + d.pred_class
    gstart = np.searchsorted(gkey_s, pkey, side="left")
    gcount = np.searchsorted(gkey_s, pkey, side="right") - gstart
    gcount[d.pred_seg[:, 1] <= d.pred_seg[:, 0]] = 0  # end <= start: a false positive
    cand = order[gcount[order] > 0]
    if len(cand) == 0:
        return none, none
    # (group, -score, file index): stable by group over the class order
    cand = cand[np.argsort(pkey[cand], kind="stable")]
    # all (prediction, ground truth) pairs inside each group, in (group, prediction, gt) order
    n_pairs = gcount[cand]
    pair_pred = np.repeat(cand, n_pairs)
    first_pair = np.cumsum(n_pairs) - n_pairs
    pair_gt = np.repeat(gstart[cand] - first_pair, n_pairs) + np.arange(len(pair_pred))
    iou = segment_iou(torch.from_numpy(np.ascontiguousarray(d.pred_seg[pair_pred])),
                      torch.from_numpy(gseg[pair_gt]), aligned=True).numpy()
    keep = iou >= thresholds.min()
    pair_pred, pair_gt, iou = pair_pred[keep], pair_gt[keep], iou[keep]
    if len(iou) == 0:
        return none, none
    # rank of each remaining prediction among the remaining ones of its group
    new_pred = np.ones(len(pair_pred), dtype=bool)
    new_pred[1:] = pair_pred[1:] != pair_pred[:-1]
    preds = pair_pred[new_pred]
    rank = np.arange(len(preds)) - _segment_starts(pkey[preds])
    pair_rank = rank[np.cumsum(new_pred) - 1]
    by_rank = np.argsort(pair_rank, kind="stable")  # (rank, group, gt): one prediction per group
    bounds = np.searchsorted(pair_rank[by_rank], np.arange(int(rank.max()) + 2))
    matched = np.zeros((nT, G), dtype=bool)  # in sorted-gt order
    thr = thresholds[:, None]
    hits_t, hits_p = [], []
    for r in range(len(bounds) - 1):
        sel = by_rank[bounds[r]:bounds[r + 1]]
        pg, pp, pi = pair_gt[sel], pair_pred[sel], iou[sel]
        n = len(sel)
        starts = np.flatnonzero(np.r_[True, pp[1:] != pp[:-1]])  # one run per prediction
        ok = (pi >= thr) & ~matched[:, pg]  # [T, n]
        masked = np.where(ok, pi, -1.0)
        best = np.maximum.reduceat(masked, starts, axis=1)  # [T, A]
        run_len = np.diff(np.r_[starts, n])
        is_best = ok & (masked == np.repeat(best, run_len, axis=1))
        first = np.minimum.reduceat(np.where(is_best, np.arange(n), n), starts, axis=1)
        ti, ai = np.nonzero(best >= 0)
        matched[ti, pg[first[ti, ai]]] = True
        hits_t.append(ti)
        hits_p.append(pp[starts[ai]])
    return np.concatenate(hits_t).astype(np.int64), np.concatenate(hits_p).astype(np.int64)


def average_precision_from_hits(hit_thr: np.ndarray, hit_pred: np.ndarray, pred_class: np.ndarray,
                                pred_rank: np.ndarray, num_gt: np.ndarray,
                                num_thresholds: int) -> np.ndarray:
    """Interpolated AP ``[T, K]`` from the true positives; NaN where ``num_gt == 0``.

    Args:
        hit_thr, hit_pred: int ``[H]``, the true positives (threshold index, prediction).
        pred_class: int ``[P]`` class index of each prediction.
        pred_rank: int ``[P]`` 0-based position of each prediction in its class's
            score-sorted list (all predictions of the class count, hits or not).
        num_gt: int ``[K]`` ground-truth count per class.
        num_thresholds: ``T``.
    """
    nT, K = num_thresholds, len(num_gt)
    ap = np.zeros(nT * K)
    if len(hit_pred):
        P = max(int(pred_rank.max()) + 1, 1)
        seg = hit_thr * K + pred_class[hit_pred]
        srt = np.argsort(seg * P + pred_rank[hit_pred])
        seg, pos, cls = seg[srt], pred_rank[hit_pred][srt], pred_class[hit_pred][srt]
        k = np.arange(1, len(seg) + 1) - _segment_starts(seg)  # true positives so far
        precision = k / (pos + 1)
        npos = num_gt[cls]
        gain = k / npos - (k - 1) / npos  # recall step, as the reference computes it
        # suffix maximum of precision inside each (threshold, class) run, exactly: on integer
        # ranks of the values, offset so that a run never sees the runs after it
        values, vrank = np.unique(precision, return_inverse=True)
        offset = (seg.max() - seg) * len(values)
        interp = values[np.maximum.accumulate((vrank + offset)[::-1])[::-1] - offset]
        ap = np.bincount(seg, weights=gain * interp, minlength=nT * K)
    ap = ap.reshape(nT, K)
    ap[:, num_gt == 0] = np.nan
    return ap


def detection_map(ground_truth: Mapping[str, Any], predictions: Mapping[str, Any],
                  tiou_thresholds: Iterable[float], classes: Sequence[str] | None = None,
                  validate: bool = True, strict: bool = False) -> dict[str, Any]:
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
        strict: a prediction with ``end < start`` raises a DataError instead of counting as a
            false positive (with ``validate``).

    Returns:
        ``{"tiou_thresholds", "mAP": [per threshold], "average_mAP", "per_class": {class:
        [AP per threshold]}, "num_gt": {class: n}, "classes": [evaluated classes],
        "ignored_predictions": n, "absent_video_predictions": n, "degenerate_predictions": n}``;
        all scores are fractions in [0, 1]. Only classes with ground truth are evaluated and
        listed.
    """
    thresholds = np.asarray(list(tiou_thresholds), dtype=np.float64).reshape(-1)
    if thresholds.size == 0 or not np.all((thresholds >= 0) & (thresholds <= 1)):
        raise ValueError(f"tiou_thresholds must be a non-empty list of values in [0, 1], got "
                         f"{thresholds.tolist()}")
    d = to_arrays(ground_truth, predictions, classes, validate, strict)
    if d.degenerate:
        warnings.warn(f"detection_map: {d.degenerate} prediction(s) with end <= start counted as "
                      f"false positives", stacklevel=2)
    num_gt = np.bincount(d.gt_class, minlength=len(d.classes))
    if not (num_gt > 0).any():
        raise ValueError("detection_map: the ground truth has no annotations to evaluate")
    order = _class_order(d.pred_class, d.pred_score)
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order)) - _segment_starts(d.pred_class[order])
    hit_thr, hit_pred = match_detections(d, thresholds, order)
    ap = average_precision_from_hits(hit_thr, hit_pred, d.pred_class, rank, num_gt, len(thresholds))
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
        "absent_video_predictions": d.absent,
        "degenerate_predictions": d.degenerate,
    }
