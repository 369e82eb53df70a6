"""Localisation-only metrics for a class-agnostic localizer (labels are ignored).

- ``recall@k x GT``: per video keep the top ``k * (#ground truth of the video)`` proposals;
  fraction of ground-truth segments with IoU >= ``tiou`` to at least one kept proposal.
- ``recall@N``: the same with the top ``N`` proposals per video.
- ``AR@AN``: recall averaged over tIoU 0.5:0.05:0.95 with the top ``AN`` proposals per video
  (ActivityNet's proposal metric; its proportional allocation reduces to top-AN per video when
  every video has at least AN proposals), and the area under AR vs AN for AN = 1..100, divided
  by 100 (ActivityNet's AUC, as a fraction).
- ``class_agnostic_mAP``: detection mAP with every label replaced by one class.

A ground truth counts as recalled if any kept proposal overlaps it enough (no one-to-one
matching, as in ActivityNet's proposal evaluation). Proposals are ranked by score (ties: file
order).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch

from stovtal.data.formats import validate_annotations, validate_predictions
from stovtal.ops import segment_iou

from .detection import detection_map

__all__ = ["first_hit_ranks", "localization_metrics", "class_agnostic"]

AR_TIOUS = np.round(np.arange(0.5, 0.951, 0.05), 2)


def first_hit_ranks(ground_truth: Mapping[str, Any], proposals: Mapping[str, Any],
                    thresholds: Iterable[float]) -> tuple[np.ndarray, np.ndarray]:
    """For each ground-truth segment and threshold, the rank (0-based) of the first proposal of
    its video reaching IoU >= threshold (``inf`` if none): ``[G, T]``; plus the video index of
    each ground truth ``[G]``."""
    thr = np.asarray(list(thresholds), dtype=np.float64)
    db = ground_truth["database"]
    results = proposals["results"]
    ranks, vids = [], []
    for vi, (vid, info) in enumerate(db.items()):
        gts = [a["segment"] for a in info["annotations"]]
        if not gts:
            continue
        preds = results.get(vid, [])
        r = np.full((len(gts), len(thr)), np.inf)
        if preds:
            scores = np.array([p["score"] for p in preds], dtype=np.float64)
            order = np.lexsort((np.arange(len(preds)), -scores))
            segs = torch.tensor([preds[i]["segment"] for i in order], dtype=torch.float64)
            iou = segment_iou(torch.tensor(gts, dtype=torch.float64), segs).numpy()  # [g, p]
            hit = iou[:, None, :] >= thr[None, :, None]  # [g, T, p]
            any_hit = hit.any(-1)
            r = np.where(any_hit, hit.argmax(-1), np.inf)
        ranks.append(r)
        vids.append(np.full(len(gts), vi))
    if not ranks:
        return np.zeros((0, len(thr))), np.zeros(0, dtype=np.int64)
    return np.concatenate(ranks), np.concatenate(vids)


def class_agnostic(obj: Mapping[str, Any], key: str, label: str = "action") -> dict[str, Any]:
    """Copy of an annotation (``key="database"``) or prediction (``key="results"``) dict with
    every label replaced by ``label``."""
    if key == "database":
        return {"database": {v: {**info, "annotations": [{**a, "label": label} for a in info["annotations"]]}
                             for v, info in obj["database"].items()}}
    return {"results": {v: [{**p, "label": label} for p in preds] for v, preds in obj["results"].items()}}


def localization_metrics(ground_truth: Mapping[str, Any], proposals: Mapping[str, Any],
                         tiou: float = 0.5, k_times_gt: Iterable[int] = (1, 5),
                         top_n: Iterable[int] = (10, 50, 100, 300, 1000),
                         ar_an: Iterable[int] = (1, 5, 10, 100),
                         map_tious: Iterable[float] | None = None) -> dict[str, Any]:
    """All localisation metrics (see the module docstring); fractions in [0, 1].

    ``map_tious`` are the thresholds of the class-agnostic mAP (default: 0.5:0.05:0.95).
    """
    gt = validate_annotations(ground_truth, "<ground truth>", require_duration=False)
    props = {"results": validate_predictions(proposals, "<proposals>")}
    n_gt = sum(len(v["annotations"]) for v in gt["database"].values())
    if n_gt == 0:
        raise ValueError("localization_metrics: the ground truth has no annotations")
    thr_all = np.unique(np.r_[[tiou], AR_TIOUS])
    ranks, vids = first_hit_ranks(gt, props, thr_all)
    col = int(np.nonzero(np.isclose(thr_all, tiou))[0][0])
    ar_cols = [int(np.nonzero(np.isclose(thr_all, t))[0][0]) for t in AR_TIOUS]
    per_video_gt = np.bincount(vids, minlength=len(gt["database"]))
    out: dict[str, Any] = {"tiou": tiou, "num_gt": n_gt}
    for k in k_times_gt:
        limit = k * per_video_gt[vids]
        out[f"recall@{k}xGT"] = float((ranks[:, col] < limit).mean())
    for n in top_n:
        out[f"recall@{n}"] = float((ranks[:, col] < n).mean())
    ar = ranks[:, ar_cols]
    for an in ar_an:
        out[f"AR@{an}"] = float((ar < an).mean())
    curve = np.array([(ar < an).mean() for an in range(1, 101)])
    out["AR_AUC"] = float(((curve[1:] + curve[:-1]) / 2).sum() / 100.0)  # trapezoid, AN 1..100
    tious = list(map_tious) if map_tious is not None else AR_TIOUS.tolist()
    res = detection_map(class_agnostic(gt, "database"), class_agnostic(props, "results"), tious,
                        validate=False)
    out["class_agnostic_mAP"] = res["mAP"]
    out["class_agnostic_average_mAP"] = res["average_mAP"]
    out["map_tious"] = tious
    return out
