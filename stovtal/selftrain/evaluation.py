"""Selftrain's ``eval`` stage record: one localizer on the test set, evaluated by
:func:`stovtal.engine.evaluation.evaluate_localizer` (CB / CN / GZSL mAP and the class-agnostic
localisation metrics on the base-only and novel-only videos)."""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["evaluate_model"]


def evaluate_model(model: nn.Module, ctx: Any, desc: str = "eval") -> dict[str, Any] | None:
    """Metrics of ``model`` on ``ctx``'s test set (fractions in [0, 1]); every rank calls it,
    rank 0 gets the record, the other ranks None.

    Returns ``{"tiou_thresholds", "partition", "localization": {"base": ..., "novel": ...},
    "CB", "CN", "GZSL"}``: each setting with ``mAP`` per threshold and ``average_mAP`` (None
    when the test set has no such videos); GZSL also with the base/novel-class mAPs.
    """
    from stovtal.data import VideoFeatureDataset
    from stovtal.engine.evaluation import evaluate_localizer
    from stovtal.models import OpenVocabClassifier, Vocabulary

    spec, data, cfg = ctx.data.spec, ctx.data, ctx.cfg
    test = {v: i for v, i in data.annotations.items() if i.get("subset") == spec.test_subset}
    if not test:
        raise ValueError(f"no test videos (subset {spec.test_subset!r}) in the annotations")
    ds = VideoFeatureDataset({"database": test}, spec.feature_dir, spec.classes, spec.grid, feat_dim=spec.feat_dim)
    vocab = Vocabulary(list(data.vocab_names), data.vocab_embeddings, data.logit_scale)
    thr = list(cfg.eval.tiou_thresholds)
    res = evaluate_localizer(model, ds, test, OpenVocabClassifier(cfg.classifier), vocab, spec.base, spec.novel,
                             thr, batch_size=cfg.eval.batch_size, device=ctx.device, progress=cfg.progress,
                             desc=desc, localization=True)
    if res is None:
        return None
    out: dict[str, Any] = {"tiou_thresholds": thr, "partition": res["partition"], "localization": res["localization"]}
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
