"""Straightforward loop implementation of the ActivityNet detection AP (slow; the reference).

One threshold and one class at a time, one prediction at a time, in plain Python, written
directly from the protocol in :mod:`stovtal.eval.detection`. Used by the tests as an
independent check and by the benchmark as the baseline.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["detection_map_reference", "interpolated_ap"]


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1] - a[0], 0.0) + max(b[1] - b[0], 0.0) - inter
    return inter / union if union > 0 else 0.0


def interpolated_ap(precision: list[float], recall: list[float]) -> float:
    """Area under the precision-recall curve with precision made monotone from the right."""
    mprec = [0.0] + list(precision) + [0.0]
    mrec = [0.0] + list(recall) + [1.0]
    for i in range(len(mprec) - 2, -1, -1):
        mprec[i] = max(mprec[i], mprec[i + 1])
    return sum((mrec[i] - mrec[i - 1]) * mprec[i] for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1])


def _class_ap(gts: dict[str, list[list[float]]], preds: list[tuple[float, int, str, list[float]]],
              threshold: float) -> float:
    npos = sum(len(v) for v in gts.values())
    used = {v: [False] * len(s) for v, s in gts.items()}
    tp_list = []
    for _score, _idx, vid, seg in preds:
        best, best_j = -1.0, -1
        for j, g in enumerate(gts.get(vid, []) if seg[1] > seg[0] else []):
            if used[vid][j]:
                continue
            iou = _iou(seg, g)
            if iou >= threshold and iou > best:
                best, best_j = iou, j
        if best_j >= 0:
            used[vid][best_j] = True
        tp_list.append(1 if best_j >= 0 else 0)
    precision, recall, tp = [], [], 0
    for i, hit in enumerate(tp_list):
        tp += hit
        precision.append(tp / (i + 1))
        recall.append(tp / npos)
    return interpolated_ap(precision, recall) if preds else 0.0


def detection_map_reference(ground_truth: Mapping[str, Any], predictions: Mapping[str, Any],
                            tiou_thresholds: Iterable[float]) -> dict[str, Any]:
    """Same contract as :func:`stovtal.eval.detection_map` with ``classes=None`` (no
    validation): ``{"mAP", "average_mAP", "per_class"}``. A prediction with ``end <= start`` or
    on a video without ground truth of its class is a false positive."""
    db = ground_truth["database"]
    thresholds = list(tiou_thresholds)
    classes = sorted({a["label"] for v in db.values() for a in v["annotations"]})
    per_class: dict[str, list[float]] = {}
    for c in classes:
        gts: dict[str, list[list[float]]] = {}
        for vid, info in db.items():
            segs = [a["segment"] for a in info["annotations"] if a["label"] == c]
            if segs:
                gts[vid] = segs
        preds = []
        idx = 0
        for vid, plist in predictions["results"].items():
            for p in plist:
                if p["label"] == c:
                    preds.append((p["score"], idx, vid, p["segment"]))
                idx += 1
        preds.sort(key=lambda x: (-x[0], x[1]))
        per_class[c] = [_class_ap(gts, preds, t) for t in thresholds]
    maps = [sum(per_class[c][i] for c in classes) / len(classes) for i in range(len(thresholds))]
    return {"mAP": maps, "average_mAP": sum(maps) / len(maps), "per_class": per_class}
