"""The FEEL loop: cluster -> CCI -> IIS -> train CoLA -> evaluate, for ``cfg.iterations`` rounds.

Labels never reach clustering, selection or training: the training videos' ground truth is
used only for NMI (and the analysis numbers in ``details.json``), the evaluation videos'
ground truth only for mapping clusters to classes (Hungarian) and mAP.

Every finished iteration writes ``ckpt/iter_<t>.pt`` (model + assignment) and then
``state.json`` (all records so far and the config: the completion marker of
:mod:`stovtal.utils.resume`), both atomically; a rerun in the same work directory
resumes after the last finished iteration and produces the same results as an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from stovtal.config import to_dict
from stovtal.engine.checkpoint import load_model, load_weights, save_model
from stovtal.engine.layout import FeelLayout
from stovtal.utils.fileio import atomic_open, atomic_write_json
from stovtal.utils.resume import read_marker, write_marker
from stovtal.utils.threads import apply_threads

from .cci import cci_refine
from .cola import build_model, forward_videos, predict, train_cola
from .config import FeelConfig
from .data import FeelData, VideoSet, dominant_label, load_feel_data
from .iis import select_per_cluster, selection_fraction
from .kmeans import kmeans

__all__ = ["cluster_predictions", "localize_videos", "nearest_names", "run_config", "run_feel"]

STATE_VERSION = 1
_VOLATILE = ("workdir", "progress", "num_threads", "device")


def _config_fingerprint(cfg: FeelConfig) -> dict[str, Any]:
    """The config without the keys that do not change results (stored in ``state.json``)."""
    d = json.loads(json.dumps(to_dict(cfg)))  # as read back from state.json (tuples -> lists)
    for k in _VOLATILE:
        d.pop(k, None)
    return d


_V0_WORLD_KEYS = ("seed", "vocabulary", "profile", "num_web", "num_test", "num_train", "web_classes_per_video")


def _config_fingerprint_v0(cfg: FeelConfig) -> dict[str, Any] | None:
    """The same in the layout of ``state.json`` files written before FEEL's config was composed
    of the shared sections (None: ``cfg`` has settings that layout cannot express)."""
    d = _config_fingerprint(cfg)
    data, train, model = d["data"], d["train"], d["model"]
    default_train = to_dict(FeelConfig().train)
    if set(data["world"]) != set(_V0_WORLD_KEYS) or any(
            train[k] != default_train[k] for k in default_train
            if k not in ("epochs", "batch_size", "lr", "weight_decay", "clip_grad", "optimizer", "schedule",
                         "iterations")):
        return None
    return {
        "seed": d["seed"], "iterations": d["iterations"], "tiou_thresholds": d["eval"]["tiou_thresholds"],
        "data": {"annotations": data["annotations"] or "", "feature_dir": data["feature_dir"] or "",
                 "train_subset": data["train_subset"], "eval_subset": data["test_subset"],
                 "classes": data["vocabulary"], "fps": data["fps"], "feature_stride": data["feature_stride"],
                 "num_frames": data["num_frames"], "feat_dim": data["feat_dim"],
                 "synthetic": {k: data["world"][k] for k in _V0_WORLD_KEYS}},
        "cluster": d["cluster"], "iis": d["iis"],
        "model": {k: v for k, v in model.items() if k not in ("in_dim", "num_classes")},
        "train": {"epochs": train["epochs"], "batch_size": train["batch_size"], "lr": train["lr"],
                  "weight_decay": train["weight_decay"], "grad_clip": train["clip_grad"],
                  "max_seq_len": data["max_seq_len"], "optimizer": train["optimizer"],
                  "schedule": train["schedule"], "iterations": train["iterations"]},
        "localize": d["localize"], "naming": d["naming"],
    }


def run_config(cfg: FeelConfig) -> dict[str, Any]:
    """The config stored in each model file (``meta["run_config"]``), from which
    ``python -m stovtal.infer`` resolves the data: JSON-like, with the work directory made absolute
    (the synthetic world lives in it)."""
    d = json.loads(json.dumps(to_dict(cfg)))
    d["workdir"] = os.path.abspath(cfg.workdir)
    return d


def _eval_tools():
    from stovtal.eval import cluster_accuracy, detection_map, nmi

    return detection_map, cluster_accuracy, nmi


def _nmi(nmi, true: torch.Tensor, pred: torch.Tensor, keep: torch.Tensor) -> float | None:
    if int(keep.sum()) < 2:
        return None
    return float(nmi(true[keep].numpy(), pred[keep].cpu().numpy()))


def _video_features(data_feats: list[torch.Tensor], model, device, cfg: FeelConfig) -> torch.Tensor:
    if model is None:
        return torch.stack([f.mean(1) for f in data_feats])
    outs = forward_videos(model, data_feats, device, cfg.train.batch_size, cfg.progress, "embed train")
    return torch.stack([o[3] for o in outs])


def localize_videos(model, videos: VideoSet, feature_stride: int, num_frames: int, cfg: FeelConfig,
                    device) -> tuple[list, list[dict[str, torch.Tensor]]]:
    """CoLA's inference on ``videos``: (:func:`~stovtal.feel.cola.forward_videos` outputs, per-video
    segments in seconds with cluster-id labels from :func:`~stovtal.feel.cola.predict`)."""
    outs = forward_videos(model, videos.feats, device, cfg.train.batch_size, cfg.progress, "eval")
    loc = dataclasses.replace(cfg.localize, thresholds=tuple(cfg.localize.thresholds))
    return outs, predict(outs, videos.durations, videos.fps, feature_stride, num_frames, loc)


def cluster_predictions(ids: list[str], preds: list[dict[str, torch.Tensor]], mapping: dict[int, int],
                        classes: list[str]) -> dict[str, Any]:
    """ActivityNet-format predictions: each segment labelled with the class its cluster maps to
    (``mapping``: cluster id -> index into ``classes``); segments of unmapped clusters are dropped."""
    results: dict[str, list] = {}
    for vid, p in zip(ids, preds, strict=True):
        rows = []
        for (s, e), sc, c in zip(p["segments"].tolist(), p["scores"].tolist(), p["labels"].tolist(), strict=True):
            if mapping.get(c) is not None:
                rows.append({"segment": [s, e], "label": classes[mapping[c]], "score": sc})
        results[vid] = rows
    return {"results": results}


def _evaluate(model, data: FeelData, cfg: FeelConfig, device, num_clusters: int) -> tuple[dict, dict, dict]:
    """mAP on the evaluation videos after mapping clusters to classes (Hungarian on video labels)."""
    detection_map, cluster_accuracy, _ = _eval_tools()
    ev = data.eval
    outs, preds = localize_videos(model, ev, data.feature_stride, data.num_frames, cfg, device)
    pred_cluster, true_class = [], []
    for vid, (_, _, vs, _) in zip(ev.ids, outs, strict=True):
        lab = dominant_label(ev.gt["database"][vid])
        if lab is not None:
            pred_cluster.append(int(vs.argmax()))
            true_class.append(data.classes.index(lab))
    if not true_class:
        raise ValueError("no evaluation video has a ground-truth annotation")
    # Hungarian matching of the predicted video clusters to the true classes (evaluation only);
    # segments of a cluster that no evaluation video is assigned to are dropped
    _, mapping = cluster_accuracy(np.array(true_class), np.array(pred_cluster))
    predictions = cluster_predictions(ev.ids, preds, mapping, data.classes)
    metrics = detection_map(ev.gt, predictions, list(cfg.eval.tiou_thresholds))
    return metrics, predictions, mapping


def _naming_vocabulary(cfg: FeelConfig, data: FeelData) -> tuple[list[str], torch.Tensor, str] | None:
    """(names, text embeddings [V, E], source) for cluster naming, or None when disabled."""
    nc = cfg.naming
    if nc.open_clip_model:
        from stovtal.data.resolve import vocabulary_names
        from stovtal.models.text_encoders import OpenClipTextEncoder

        names = vocabulary_names(nc.vocabulary) if nc.vocabulary else list(data.classes)
        enc = OpenClipTextEncoder(nc.open_clip_model, nc.open_clip_checkpoint, nc.templates, device=cfg.device)
        return names, enc.encode(names).float().cpu(), f"open_clip {nc.open_clip_model}"
    vocab = nc.vocab_npz
    if vocab == "auto":
        vocab = data.vocab_npz or ""
    if not vocab:
        return None
    from stovtal.data.vocab import load_embeddings

    names, emb = load_embeddings(vocab)
    return list(names), torch.as_tensor(emb, dtype=torch.float32), vocab


def nearest_names(video_feats: torch.Tensor, labels: torch.Tensor, name_emb: torch.Tensor,
                  names: list[str]) -> list[dict]:
    """Name each cluster by the vocabulary entry nearest (cosine) to its mean video feature.

    ``video_feats`` ``[N, D]`` (one per training video), ``labels`` ``[N]`` cluster ids,
    ``name_emb`` ``[V, D]`` embeddings of ``names`` in the same space. Both sides are centred
    first (videos on their mean, names on the vocabulary mean): what every video shares (the
    modality gap between video and text features, common scene content) otherwise pulls all
    clusters to the same few "hub" names. Measured on a held-out synthetic world (seed 7):
    names agreeing with the cluster's majority true class 3/20 without centring, 7/20 with it.
    Returns one dict per cluster id ``0..max(labels)``: ``cluster``, ``size``, ``name``
    (None for an empty cluster) and ``similarity``.
    """
    if name_emb.shape[1] != video_feats.shape[1]:
        raise ValueError(f"name embeddings have dim {name_emb.shape[1]}, video features {video_feats.shape[1]}")
    if name_emb.shape[0] > 1:
        name_emb = name_emb - name_emb.mean(0)
    if video_feats.shape[0] > 1:
        video_feats = video_feats - video_feats.mean(0)
    name_emb = F.normalize(name_emb.float(), dim=1)
    video_feats = F.normalize(video_feats.float(), dim=1)
    out = []
    for c in range(int(labels.max()) + 1):
        members = labels == c
        if not members.any():
            out.append({"cluster": c, "size": 0, "name": None})
            continue
        sim = F.normalize(video_feats[members].mean(0), dim=0) @ name_emb.T
        j = int(sim.argmax())
        out.append({"cluster": c, "size": int(members.sum()), "name": names[j], "similarity": float(sim[j])})
    return out


def _name_clusters(model, data: FeelData, labels: torch.Tensor, names: list[str], emb: torch.Tensor,
                   source: str, device, cfg) -> list[dict]:
    """:func:`nearest_names` of each training video's actionness-weighted mean input feature."""
    feats = data.train.feats
    if emb.shape[1] != feats[0].shape[0]:
        raise ValueError(f"{source}: text embedding dim {emb.shape[1]} != feature dim {feats[0].shape[0]}")
    outs = forward_videos(model, feats, device, cfg.train.batch_size, False)
    vids = []
    for f, (_, act, _, _) in zip(feats, outs, strict=True):
        w = (act - act.min()) / (act.max() - act.min()).clamp_min(1e-12)
        vids.append((f * w[None]).sum(1) / w.sum().clamp_min(1e-12))
    return nearest_names(torch.stack(vids), labels, emb, names)


def _plot(records: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    its = [r["iteration"] for r in records]
    fig, ax = plt.subplots(figsize=(6, 4))
    if records[0].get("nmi_kmeans") is not None:
        ax.plot(its, [r["nmi_kmeans"] for r in records], "o--", label="NMI k-means")
        ax.plot(its, [r["nmi_cci"] for r in records], "o-", label="NMI after CCI")
    ax.plot(its, [r["average_mAP"] for r in records], "s-", label="average mAP (tIoU 0.1:0.7)")
    ax.plot(its, [r["selected_fraction"] for r in records], "^:", label="selected fraction")
    ax.set_xlabel("iteration")
    ax.set_xticks(its)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("FEEL per iteration")
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)


def run_feel(cfg: FeelConfig, data: FeelData | None = None,
             log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume) FEEL in ``cfg.workdir``; returns the ``results.json`` content."""
    workdir = cfg.workdir
    os.makedirs(workdir, exist_ok=True)
    apply_threads(cfg.num_threads, log=log)
    device = torch.device(cfg.device)
    _, _, nmi = _eval_tools()
    t0 = time.time()
    if data is None:
        data = load_feel_data(cfg.data, workdir, cfg.progress)
    k = cfg.cluster.num_clusters or len(data.classes)
    if k > len(data.train.ids):
        raise ValueError(f"{k} clusters but only {len(data.train.ids)} training videos")
    true = [dominant_label(data.train.gt["database"][v]) for v in data.train.ids]
    has_true = [t is not None for t in true]
    true_idx = torch.tensor([data.classes.index(t) if t is not None else -1 for t in true])
    known = torch.tensor(has_true)

    lay = FeelLayout(workdir)
    state_path = lay.state
    fingerprint = _config_fingerprint(cfg)
    records: list[dict[str, Any]] = []
    model = None
    accepted = [f for f in (fingerprint, _config_fingerprint_v0(cfg)) if f is not None]
    state = read_marker(state_path, accepted, key="config",
                        mismatch="this work directory holds a FEEL run with a different config; use another "
                                 "--workdir (or delete it) to start over")
    if state is not None:
        records = state["records"]
        if records:
            mf = load_model(lay.checkpoint(len(records)))
            model = build_model(cfg, mf.model_config["in_dim"], mf.model_config["num_classes"])
            load_weights(model, mf.state_dict, lay.checkpoint(len(records)))
            log(f"resuming after iteration {len(records)} from {workdir}")

    for it in range(len(records) + 1, cfg.iterations + 1):
        ti = time.time()
        x = F.normalize(_video_features(data.train.feats, model, device, cfg).double(), dim=1)
        km = kmeans(x, k, cfg.cluster.n_init, cfg.cluster.max_iter, seed=cfg.seed * 1000 + it)
        cc = cci_refine(x, km.centroids, cfg.cluster.k1, cfg.cluster.k2, cfg.cluster.lam,
                        cfg.cluster.dense_limit, cfg.cluster.topk_m)
        p = selection_fraction(it, cfg.iterations, cfg.iis.p0, cfg.iis.schedule, cfg.iis.gamma)
        sel = select_per_cluster(cc.labels, cc.confidence, p)
        idx = torch.nonzero(sel).flatten().tolist()
        torch.manual_seed(cfg.seed * 1000 + it)
        model = build_model(cfg, data.train.feats[0].shape[0], k)
        history = train_cola(model, [data.train.feats[i] for i in idx], cc.labels[sel], cfg,
                             seed=cfg.seed * 1000 + it, device=device, desc=f"iter {it} train")
        metrics, predictions, mapping = _evaluate(model, data, cfg, device, k)
        rec: dict[str, Any] = {
            "iteration": it,
            "nmi_kmeans": _nmi(nmi, true_idx, km.labels, known),
            "nmi_cci": _nmi(nmi, true_idx, cc.labels, known),
            "selected_fraction": float(sel.float().mean()),
            "schedule_fraction": p,
            "average_mAP": float(metrics["average_mAP"]),
            "mAP": [float(v) for v in metrics["mAP"]],
            "reassigned_by_cci": float((cc.labels != km.labels).float().mean()),
            "final_loss": history[-1],
            "seconds": time.time() - ti,
        }
        if known.any():
            # analysis only: purity of the selected videos w.r.t. the hidden labels
            rec["nmi_selected"] = _nmi(nmi, true_idx, cc.labels, sel & known)
        save_model(lay.checkpoint(it), model.cfg, model.state_dict(), kind="cola", meta={
            "labels": cc.labels.cpu(), "confidence": cc.confidence.cpu(), "selected": sel.cpu(),
            "mapping": torch.tensor([mapping.get(c, -1) for c in range(k)]),
            "classes": list(data.classes), "localize": dataclasses.asdict(cfg.localize),
            "run_config": run_config(cfg),
        })
        atomic_write_json(lay.predictions(it), predictions)
        records.append(rec)
        write_marker(state_path, {"version": STATE_VERSION, "config": fingerprint, "records": records}, indent=1)
        nm = (f"NMI k-means {rec['nmi_kmeans']:.4f}  after CCI {rec['nmi_cci']:.4f}  "
              if rec["nmi_kmeans"] is not None else "")
        log(f"[feel] iteration {it}/{cfg.iterations}: {nm}selected {rec['selected_fraction']:.3f}  "
            f"average mAP {rec['average_mAP']:.4f}  ({rec['seconds']:.0f} s)")

    last = records[-1]
    results = {
        "iterations": [{key: r[key] for key in ("nmi_kmeans", "nmi_cci", "selected_fraction", "average_mAP")}
                       for r in records],
        "final": {"average_mAP": last["average_mAP"], "mAP": last["mAP"]},
    }
    details: dict[str, Any] = {"records": records, "tiou_thresholds": list(cfg.eval.tiou_thresholds),
                               "classes": data.classes, "num_clusters": k}
    naming = _naming_vocabulary(cfg, data)
    if naming is not None:
        ck = load_model(lay.checkpoint(len(records))).meta
        named = _name_clusters(model, data, ck["labels"], *naming, device, cfg)
        for row in named:
            m = int(ck["mapping"][row["cluster"]])
            row["hungarian_class"] = data.classes[m] if m >= 0 else None
        details["cluster_names"] = named
        agree = [r["name"] == r["hungarian_class"] for r in named if r["name"] is not None]
        details["naming_agreement"] = sum(agree) / max(len(agree), 1)
        log("[feel] cluster names: " + ", ".join(f"{r['cluster']}={r['name']}" for r in named))
        log(f"[feel] names agreeing with the Hungarian class mapping: {details['naming_agreement']:.3f}")
    atomic_write_json(lay.results, results, indent=1)
    atomic_write_json(lay.details, details, indent=1)
    _plot(records, lay.plot)
    mp = "  ".join(f"{t:.1f}:{v:.4f}" for t, v in zip(cfg.eval.tiou_thresholds, last["mAP"], strict=True))
    log(f"[feel] final mAP @tIoU {mp}  average {last['average_mAP']:.4f}  ({time.time() - t0:.0f} s)")
    log(f"[feel] wrote {lay.results} and {lay.plot}")
    return results
