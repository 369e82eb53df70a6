"""Open-vocabulary breakdown of detection mAP (STOV-TAL's evaluation).

- **CB**: mAP on the base-only videos, predictions made with the base vocabulary.
- **CN**: mAP on the novel-only videos, predictions made with the novel vocabulary.
- **GZSL**: mAP on all videos, predictions made with the full vocabulary; also the mean AP over
  the base classes and over the novel classes of that same run, and their harmonic mean.

Videos whose annotations mix base and novel classes count only in GZSL.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from stovtal.data.formats import validate_annotations, validate_predictions
from stovtal.data.splits import partition_videos

from .detection import detection_map

__all__ = ["open_vocab_breakdown", "restrict"]


def restrict(ground_truth: Mapping[str, Any], predictions: Mapping[str, Any] | None,
             video_ids: Iterable[str]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Ground truth and predictions restricted to ``video_ids``."""
    keep = set(video_ids)
    db = {v: info for v, info in ground_truth["database"].items() if v in keep}
    preds = None
    if predictions is not None:
        preds = {"results": {v: p for v, p in predictions["results"].items() if v in keep}}
    return {"database": db}, preds


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def open_vocab_breakdown(ground_truth: Mapping[str, Any], tiou_thresholds: Iterable[float],
                         base: Sequence[str], novel: Sequence[str],
                         gzsl: Mapping[str, Any] | None = None, cb: Mapping[str, Any] | None = None,
                         cn: Mapping[str, Any] | None = None, strict: bool = False) -> dict[str, Any]:
    """CB / CN / GZSL detection mAP.

    Args:
        ground_truth: parsed annotation JSON restricted to the evaluated subset.
        tiou_thresholds: thresholds (e.g. 0.3:0.7 for THUMOS14).
        base, novel: the class split; every ground-truth label must be in one of them.
        gzsl: predictions with the full vocabulary (labels in base + novel).
        cb: predictions with the base vocabulary (labels in base).
        cn: predictions with the novel vocabulary (labels in novel).
        strict: a prediction with ``end < start`` is an error, not a false positive.

    Returns:
        ``{"partition": {"base": n, "novel": n, "mixed": n, "empty": n}, "CB": result | None,
        "CN": ..., "GZSL": {**result, "base_mAP": [..], "novel_mAP": [..], "harmonic_mAP": [..],
        "average_base_mAP", "average_novel_mAP", "average_harmonic_mAP"} | None}`` where each
        result is a :func:`detection_map` dict; a part is None when its predictions are not
        given or its video set has no annotations.
    """
    base, novel = list(base), list(novel)
    overlap = set(base) & set(novel)
    if overlap:
        raise ValueError(f"classes in both base and novel: {sorted(overlap)}")
    thresholds = list(tiou_thresholds)
    full = base + novel
    gt = validate_annotations(ground_truth, "<ground truth>", classes=full, require_duration=False)
    parts = partition_videos(gt["database"], base, novel)
    out: dict[str, Any] = {"partition": {k: len(v) for k, v in parts.items()},
                           "CB": None, "CN": None, "GZSL": None}
    for name, preds, vids, vocab in (("CB", cb, parts["base"], base), ("CN", cn, parts["novel"], novel)):
        if preds is None or not vids:
            continue
        valid = {"results": validate_predictions(preds, f"<{name} predictions>", vocab,
                                                 allow_reversed=not strict)}
        g, p = restrict(gt, valid, vids)
        out[name] = detection_map(g, p, thresholds, classes=vocab, validate=False)
    has_gt = any(info["annotations"] for info in gt["database"].values())
    if gzsl is not None and has_gt:
        valid = {"results": validate_predictions(gzsl, "<GZSL predictions>", full,
                                                 allow_reversed=not strict)}
        res = detection_map(gt, valid, thresholds, classes=full, validate=False)
        nT = len(thresholds)
        b = [res["per_class"][c] for c in base if c in res["per_class"]]
        n = [res["per_class"][c] for c in novel if c in res["per_class"]]
        bm = [_mean([ap[i] for ap in b]) for i in range(nT)]
        nm = [_mean([ap[i] for ap in n]) for i in range(nT)]
        hm = [None if x is None or y is None else (2 * x * y / (x + y) if x + y > 0 else 0.0)
              for x, y in zip(bm, nm, strict=True)]
        res.update({"base_mAP": bm, "novel_mAP": nm, "harmonic_mAP": hm,
                    "average_base_mAP": None if None in bm else float(np.mean(bm)),
                    "average_novel_mAP": None if None in nm else float(np.mean(nm))})
        ab, an = res["average_base_mAP"], res["average_novel_mAP"]
        res["average_harmonic_mAP"] = (None if ab is None or an is None
                                       else (2 * ab * an / (ab + an) if ab + an > 0 else 0.0))
        out["GZSL"] = res
    return out
