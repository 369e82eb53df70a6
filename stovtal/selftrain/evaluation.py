"""Evaluate one localizer on the test set: CB / CN / GZSL mAP and class-agnostic localisation.

One localizer pass gives the class-agnostic proposals and their pooled video-language
embeddings (``stovtal.engine.predict_segments``); they are classified three times, with the
base, the novel and the full vocabulary (``stovtal.engine.classify_segments``), and scored by
``stovtal.eval.open_vocab_breakdown``. The class-agnostic metrics
(``stovtal.eval.localization_metrics``) on the base-only and novel-only videos show whether the
localizer itself changed.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.utils.data import DataLoader, Subset

from stovtal.utils import distributed as D

__all__ = ["evaluate_model"]


def evaluate_model(model: nn.Module, ctx: Any, desc: str = "eval") -> dict[str, Any] | None:
    """Metrics of ``model`` on ``ctx``'s test set (fractions in [0, 1]).

    Under torch.distributed every rank predicts its share of the videos and rank 0 gathers the
    proposals and computes the metrics; the other ranks return None.

    Returns ``{"tiou_thresholds", "partition", "CB", "CN", "GZSL"`` (each with ``mAP`` per
    threshold and ``average_mAP``; GZSL also with the base/novel-class averages),
    ``"localization": {"base": ..., "novel": ...}}`` (class-agnostic mAP and recall).
    """
    from stovtal.data import VideoFeatureDataset, collate_videos
    from stovtal.data.splits import partition_videos
    from stovtal.engine import classify_segments, predict_segments, segments_to_json
    from stovtal.eval import localization_metrics, open_vocab_breakdown
    from stovtal.models import OpenVocabClassifier, Vocabulary

    d, cfg = ctx.data, ctx.cfg
    test = {v: i for v, i in d.annotations.items() if i.get("subset") == d.test_subset}
    if not test:
        raise ValueError(f"no test videos (subset {d.test_subset!r}) in the annotations")
    gt = {"database": test}
    classes = d.base + d.novel
    ds = VideoFeatureDataset(gt, d.feature_dir, classes, d.grid, feat_dim=d.feat_dim)
    mine = Subset(ds, D.rank_indices(len(ds)))
    loader = DataLoader(mine, batch_size=cfg.eval.batch_size, shuffle=False, collate_fn=collate_videos)
    clf = OpenVocabClassifier(cfg.classifier)
    proposals = predict_segments(model, loader, device=ctx.device, classifier=clf,
                                 progress=cfg.progress, desc=desc)
    proposals = D.gather_dicts(proposals, dst=0)
    if proposals is None:
        return None
    proposals = {v: proposals[v] for v in ds.video_ids}  # the single-process order
    vocab = Vocabulary(list(d.vocab_names), d.vocab_embeddings, d.logit_scale)
    parts = partition_videos(test, d.base, d.novel)
    thr = list(cfg.eval.tiou_thresholds)
    res = open_vocab_breakdown(
        gt, thr, d.base, d.novel,
        gzsl=classify_segments(proposals, clf, vocab.subset(classes)),
        cb=classify_segments(proposals, clf, vocab.subset(d.base), parts["base"]),
        cn=classify_segments(proposals, clf, vocab.subset(d.novel), parts["novel"]),
    )
    agnostic = segments_to_json(proposals)
    loc = {}
    for part in ("base", "novel"):
        vids = set(parts[part])
        if not vids:
            continue
        g = {"database": {v: test[v] for v in vids}}
        p = {"results": {v: r for v, r in agnostic["results"].items() if v in vids}}
        m = localization_metrics(g, p, tiou=0.5, map_tious=thr)
        loc[part] = {k: m[k] for k in ("recall@1xGT", "recall@5xGT", "recall@10", "AR@10", "AR_AUC",
                                       "class_agnostic_mAP", "class_agnostic_average_mAP")}
    out: dict[str, Any] = {"tiou_thresholds": thr, "partition": res["partition"], "localization": loc}
    for key in ("CB", "CN", "GZSL"):
        r = res[key]
        if r is None:
            out[key] = {"mAP": [None] * len(thr), "average_mAP": None}  # no such videos
            continue
        entry = {"mAP": [float(x) for x in r["mAP"]], "average_mAP": float(r["average_mAP"])}
        if key == "GZSL":
            for k in ("base_mAP", "novel_mAP", "average_base_mAP", "average_novel_mAP",
                      "average_harmonic_mAP"):
                entry[k] = r.get(k)
        out[key] = entry
    return out
