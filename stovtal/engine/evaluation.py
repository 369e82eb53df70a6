"""The open-vocabulary evaluation of a localizer (its table: :mod:`stovtal.eval.table`).

Used by ``python -m stovtal.train``, ``python -m stovtal.infer --eval`` and selftrain's
``eval`` stage. One localizer pass gives the class-agnostic proposals and their pooled
video-language embeddings (:func:`stovtal.engine.predict_segments`); they are classified three
times, with the base, the novel and the full vocabulary
(:func:`stovtal.engine.classify_segments`), and scored by
:func:`stovtal.eval.open_vocab_breakdown`:

- **CB**: base vocabulary on the base-only videos; **CN**: novel vocabulary on the novel-only
  videos; **GZSL**: full vocabulary on all videos (also averaged over the base and over the
  novel classes).

Optionally also the class-agnostic mAP of the proposals on all videos (``class_agnostic``) and
the class-agnostic localisation metrics on the base-only and novel-only videos
(``localization``: did the localizer itself change?). All values are fractions in [0, 1].
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from stovtal.data import collate_videos
from stovtal.data.splits import partition_videos
from stovtal.eval import detection_map, localization_metrics, open_vocab_breakdown
from stovtal.models.classifier import OpenVocabClassifier, Vocabulary
from stovtal.utils import distributed as D

from .inference import classify_segments, predict_segments, segments_to_json

__all__ = [
    "LOCALIZATION_KEYS",
    "class_agnostic_map",
    "evaluate_localizer",
    "open_vocab_metrics",
]

#: the localisation metrics reported per part (``localization``)
LOCALIZATION_KEYS = ("recall@1xGT", "recall@5xGT", "recall@10", "AR@10", "AR_AUC", "class_agnostic_mAP",
                     "class_agnostic_average_mAP")


def evaluate_localizer(
    model: nn.Module,
    dataset: Dataset,
    database: Mapping[str, Any],
    classifier: OpenVocabClassifier,
    vocab: Vocabulary,
    base: list[str],
    novel: list[str],
    tious: list[float],
    *,
    batch_size: int,
    num_workers: int = 0,
    device: torch.device | str | None = None,
    progress: bool = False,
    desc: str = "eval",
    class_agnostic: bool = False,
    localization: bool = False,
) -> dict[str, Any] | None:
    """CB / CN / GZSL mAP of ``model`` on the videos of ``dataset`` (a ``VideoFeatureDataset``
    without crops; ``database``: their ground truth, ``{video_id: info}``).

    Under torch.distributed every rank calls this: each predicts its share of the videos, rank
    0 gathers the proposals (in the dataset's order) and computes the metrics; the other ranks
    return None.

    Returns :func:`open_vocab_metrics`'s dict, with ``"class_agnostic"`` (detection mAP of the
    proposals as one class; also in ``summary``) and ``"localization": {"base", "novel"}``
    (:data:`LOCALIZATION_KEYS` at tIoU 0.5, mAP over ``tious``) when asked for.
    """
    mine = Subset(dataset, D.rank_indices(len(dataset)))
    loader = DataLoader(mine, batch_size=batch_size, shuffle=False, collate_fn=collate_videos,
                        num_workers=num_workers)
    proposals = predict_segments(model, loader, device=device, classifier=classifier,
                                 progress=progress and D.is_main_process(), desc=desc)
    proposals = D.gather_dicts(proposals, dst=0)
    if proposals is None:
        return None
    proposals = {v: proposals[v] for v in dataset.video_ids}  # the single-process order
    db = {v: info for v, info in database.items() if v in proposals}
    out = open_vocab_metrics(proposals, classifier, vocab, db, base, novel, tious)
    if class_agnostic:
        out["class_agnostic"] = class_agnostic_map(proposals, db, tious)
        out["summary"]["class_agnostic"] = out["class_agnostic"]["average_mAP"]
    if localization:
        out["localization"] = _localization(proposals, db, base, novel, tious)
    return out


def open_vocab_metrics(
    proposals: dict[str, dict[str, Any]],
    classifier: OpenVocabClassifier,
    vocab: Vocabulary,
    database: Mapping[str, Any],
    base: list[str],
    novel: list[str],
    tious: list[float],
) -> dict[str, Any]:
    """CB, CN and GZSL detection mAP of one set of class-agnostic proposals (one per video of
    ``database``).

    Returns :func:`stovtal.eval.open_vocab_breakdown`'s dict (``partition``, ``CB``, ``CN``,
    ``GZSL``) and ``"summary"``: the average mAPs (``CB``, ``CN``, ``GZSL``, ``GZSL_base``,
    ``GZSL_novel``) of the parts that exist.
    """
    parts = partition_videos(database, base, novel)
    vids = list(database)
    cb = classify_segments(proposals, classifier, vocab.subset(base), parts["base"]) if base else None
    cn = classify_segments(proposals, classifier, vocab.subset(novel), parts["novel"]) if novel else None
    gzsl = classify_segments(proposals, classifier, vocab.subset(base + novel), vids)
    out = open_vocab_breakdown({"database": dict(database)}, tious, base, novel, gzsl=gzsl, cb=cb, cn=cn)
    summary: dict[str, float] = {}
    for key in ("CB", "CN", "GZSL"):
        if out.get(key) is not None:
            summary[key] = out[key]["average_mAP"]
    g = out.get("GZSL")
    if g is not None:
        for key, src in (("GZSL_base", "average_base_mAP"), ("GZSL_novel", "average_novel_mAP")):
            if g.get(src) is not None:
                summary[key] = g[src]
    out["summary"] = summary
    return out


def class_agnostic_map(proposals: dict[str, dict[str, Any]], database: Mapping[str, Any],
                       tious: list[float]) -> dict[str, Any]:
    """mAP of class-agnostic proposals against all ground-truth actions (labels merged)."""
    gt = {"database": {
        vid: {**info, "annotations": [{**a, "label": "action"} for a in info["annotations"]]}
        for vid, info in database.items() if vid in proposals
    }}
    preds = segments_to_json({vid: proposals[vid] for vid in gt["database"]})
    return detection_map(gt, preds, tious, classes=["action"])


def _localization(proposals: dict[str, dict[str, Any]], database: Mapping[str, Any], base: list[str],
                  novel: list[str], tious: list[float]) -> dict[str, Any]:
    """Class-agnostic localisation metrics on the base-only and on the novel-only videos."""
    parts = partition_videos(database, base, novel)
    agnostic = segments_to_json(proposals)
    loc = {}
    for part in ("base", "novel"):
        vids = set(parts[part])
        if not vids:
            continue
        g = {"database": {v: database[v] for v in vids}}
        p = {"results": {v: r for v, r in agnostic["results"].items() if v in vids}}
        m = localization_metrics(g, p, tiou=0.5, map_tious=tious)
        loc[part] = {k: m[k] for k in LOCALIZATION_KEYS}
    return loc
