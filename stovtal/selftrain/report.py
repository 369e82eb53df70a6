"""``report`` stage: ``results.json``, ``report.md`` and the PNG plots.

``results.json``: ``{"base": {"CB", "CN", "GZSL"}, "selftrained": {...}}`` (average mAP over the
tIoU thresholds, fractions in [0, 1]) plus detail under other keys: ``tiou_thresholds``,
``per_tiou`` (per model and setting), ``gzsl_classes`` (GZSL averaged over base / novel
classes), ``localization`` (class-agnostic metrics), ``scale`` (one entry per number of
unlabelled videos), ``pseudo_labels`` (statistics) and, when the unlabelled videos have ground
truth, ``pseudo_label_quality``.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from stovtal.utils.fileio import atomic_open, atomic_write_json, read_json

__all__ = ["format_table", "write_report"]

SETTINGS = ("CB", "CN", "GZSL")
SWEEP_THRESHOLDS = [0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
SWEEP_RATIOS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
SWEEP_QUANTILES = [0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95]


def _pct(x: float | None) -> str:
    return "  n/a" if x is None else f"{100 * x:5.2f}"


def format_table(results: dict[str, Any]) -> str:
    """The results table of a ``results.json``: CB, CN, GZSL mAP (%) per tIoU and averaged,
    base vs self-trained (:func:`stovtal.engine.evaluation.format_results_table`)."""
    from stovtal.engine.evaluation import format_results_table

    models = {m: {s: {"mAP": results["per_tiou"][m][s], "average_mAP": results[m][s]} for s in SETTINGS}
              for m in ("base", "selftrained")}
    return format_results_table(models, results["tiou_thresholds"])


def _collect(ctx: Any) -> dict[str, Any]:
    evals = {"base": read_json(ctx.layout.eval_result("base"))}
    scales = ctx.scales()
    for n in scales:
        evals[f"n{n}"] = read_json(ctx.layout.eval_result(f"selftrained-n{n}"))
    default = f"n{ctx.default_scale()}"
    res: dict[str, Any] = {
        "base": {s: evals["base"][s]["average_mAP"] for s in SETTINGS},
        "selftrained": {s: evals[default][s]["average_mAP"] for s in SETTINGS},
        "tiou_thresholds": evals["base"]["tiou_thresholds"],
        "num_unlabelled": ctx.default_scale(),
        "seed": ctx.cfg.seed,
        "per_tiou": {"base": {s: evals["base"][s]["mAP"] for s in SETTINGS},
                     "selftrained": {s: evals[default][s]["mAP"] for s in SETTINGS}},
        "gzsl_classes": {m: {"base_classes": evals[k]["GZSL"].get("average_base_mAP"),
                             "novel_classes": evals[k]["GZSL"].get("average_novel_mAP")}
                         for m, k in (("base", "base"), ("selftrained", default))},
        "localization": {"base": evals["base"]["localization"], "selftrained": evals[default]["localization"]},
        "partition": evals["base"]["partition"],
        "scale": [{"num_unlabelled": n, **{s: evals[f"n{n}"][s]["average_mAP"] for s in SETTINGS}}
                  for n in scales],
        "pseudo_labels": {},
    }
    for n in scales:
        pl = read_json(ctx.layout.pseudo_labels(n))
        res["pseudo_labels"][f"n{n}"] = pl.get("info", {})
    return res


def _quality(ctx: Any, n: int) -> dict[str, Any] | None:
    from .analysis import CandidateQuality, correlation, sweep
    from .pseudolabel import load_candidates

    gt = ctx.data.unlabelled_gt
    if not gt:
        return None
    p = ctx.cfg.pseudo
    cands = load_candidates(ctx.layout.pseudo_dir(n))
    q = CandidateQuality(cands, gt, 0.5, p.dedup_iou if p.dedup else None)
    a, b = q.all_pairs()
    pl = read_json(ctx.layout.pseudo_labels(n))["database"]
    sel_a = np.array([x["actionness"] for v in pl.values() for x in v["annotations"]])
    from .filtering import video_thresholds

    used = q.evaluate(video_thresholds(cands, p.threshold_mode, p.threshold, p.per_video_ratio, p.quantile,
                                       p.dedup_iou if p.dedup else None), p.min_num, p.max_num)
    floor = min(p.threshold, 0.05)
    return {
        "num_videos": len(q.videos), "num_gt": q.num_gt, "num_candidates": int(len(a)),
        "correlation_actionness_best_tiou": correlation(a, b),
        "used": {"mode": p.threshold_mode, **used},
        "fixed": sweep(q, "fixed", SWEEP_THRESHOLDS, min_num=p.min_num, max_num=p.max_num),
        "per_video": sweep(q, "per_video", SWEEP_RATIOS, floor, p.min_num, p.max_num),
        "quantile": sweep(q, "quantile", SWEEP_QUANTILES, floor, p.min_num, p.max_num),
        "adaptive_floor": floor,
        "_pairs": (a, b), "_selected": sel_a,
    }


def _plots(ctx: Any, res: dict[str, Any], qual: dict[str, Any] | None, plot_dir: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(plot_dir, exist_ok=True)
    made = []

    def save(fig, name: str) -> None:
        path = os.path.join(plot_dir, name)
        with atomic_open(path, "wb") as f:
            fig.savefig(f, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        made.append(name)

    # 1. mAP table as grouped bars
    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = np.arange(len(SETTINGS))
    for i, m in enumerate(("base", "selftrained")):
        vals = [100 * (res[m][s] or 0.0) for s in SETTINGS]
        bars = ax.bar(x + (i - 0.5) * 0.38, vals, 0.38, label=m)
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set_xticks(x, SETTINGS)
    ax.set_ylabel("average mAP (%)")
    ax.set_title(f"base vs self-trained ({res['num_unlabelled']} unlabelled videos)")
    ax.legend()
    save(fig, "map.png")

    # 2. pseudo-label statistics
    pl = read_json(ctx.layout.pseudo_labels(ctx.default_scale()))["database"]
    act = np.array([a["actionness"] for v in pl.values() for a in v["annotations"]])
    per_video = np.array([len(v["annotations"]) for v in pl.values()])
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    if qual is not None:
        axes[0].hist(qual["_pairs"][0], bins=40, range=(0, 1), alpha=0.5, label="candidates")
    axes[0].hist(act, bins=40, range=(0, 1), alpha=0.8, label="pseudo-labels")
    axes[0].axvline(ctx.cfg.pseudo.threshold, color="k", ls="--", lw=1, label="threshold")
    axes[0].set_xlabel("actionness")
    axes[0].set_ylabel("count")
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=8)
    axes[1].hist(per_video, bins=np.arange(per_video.max() + 2) - 0.5 if per_video.size else 10)
    axes[1].set_xlabel("pseudo-labels per video")
    axes[1].set_title(f"{len(act)} pseudo-labels on {len(pl)} videos", fontsize=9)
    save(fig, "pseudo_labels.png")

    if qual is not None:
        # 3. actionness vs best tIoU (paper Fig. 6)
        a, b = qual["_pairs"]
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.hexbin(a, b, gridsize=30, bins="log", cmap="viridis", extent=(0, 1, 0, 1))
        edges = np.linspace(0, 1, 11)
        idx = np.clip(np.digitize(a, edges) - 1, 0, 9)
        means = [b[idx == k].mean() if (idx == k).any() else np.nan for k in range(10)]
        ax.plot((edges[:-1] + edges[1:]) / 2, means, "r-o", ms=3, label="mean best tIoU")
        c = qual["correlation_actionness_best_tiou"]
        ax.set_title(f"Pearson {c['pearson'] if c['pearson'] is None else round(c['pearson'], 3)}, "
                     f"Spearman {c['spearman'] if c['spearman'] is None else round(c['spearman'], 3)}", fontsize=9)
        ax.set_xlabel("pseudo-label actionness")
        ax.set_ylabel("best tIoU with ground truth")
        ax.legend(fontsize=8)
        save(fig, "actionness_vs_tiou.png")

        # 4. precision / recall per fixed threshold
        rows = qual["fixed"]
        fig, ax = plt.subplots(figsize=(5.5, 3.5))
        t = [r["param"] for r in rows]
        ax.plot(t, [r["precision"] for r in rows], "o-", label="precision (tIoU 0.5)")
        ax.plot(t, [r["recall"] for r in rows], "s-", label="recall (tIoU 0.5)")
        ax.plot(t, [r["f1"] for r in rows], "^-", label="F1")
        ax.axvline(ctx.cfg.pseudo.threshold, color="k", ls="--", lw=1)
        ax.set_xscale("log")
        ax.set_xlabel("actionness threshold")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=8)
        save(fig, "pseudo_pr.png")

        # 6. adaptive vs fixed thresholds
        fig, ax = plt.subplots(figsize=(5, 4))
        for mode, mk in (("fixed", "o-"), ("per_video", "s-"), ("quantile", "^-")):
            ax.plot([r["recall"] for r in qual[mode]], [r["precision"] for r in qual[mode]], mk, ms=4, label=mode)
        u = qual["used"]
        ax.plot([u["recall"]], [u["precision"]], "k*", ms=12, label=f"used ({u['mode']})")
        ax.set_xlabel("recall (tIoU 0.5)")
        ax.set_ylabel("precision (tIoU 0.5)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.legend(fontsize=8)
        ax.set_title("pseudo-label selection rules", fontsize=9)
        save(fig, "adaptive_vs_fixed.png")

    # 5. scale curve
    if len(res["scale"]) > 1:
        fig, ax = plt.subplots(figsize=(5.5, 3.5))
        ns = [0] + [r["num_unlabelled"] for r in res["scale"]]
        for s in SETTINGS:
            ax.plot(ns, [100 * (res["base"][s] or 0)] + [100 * (r[s] or 0) for r in res["scale"]], "o-", label=s)
        ax.set_xscale("symlog", linthresh=max(1, min(ns[1:])))
        ax.set_xlabel("unlabelled videos (0 = base model)")
        ax.set_ylabel("average mAP (%)")
        ax.legend(fontsize=8)
        save(fig, "scale.png")
    return made


def _markdown(ctx: Any, res: dict[str, Any], qual: dict[str, Any] | None, plots: list[str]) -> str:
    thr = res["tiou_thresholds"]
    md = ["# STOV-TAL self-training report", "",
          f"Work directory `{ctx.workdir}`; seed {ctx.cfg.seed}; {res['num_unlabelled']} unlabelled videos; "
          f"test partition {res['partition']}.", "", "## mAP (%)", "",
          "| model | setting | " + " | ".join(f"@{t:g}" for t in thr) + " | avg |",
          "|---|---|" + "---|" * (len(thr) + 1)]
    for m in ("base", "selftrained"):
        for s in SETTINGS:
            md.append(f"| {m} | {s} | " + " | ".join(_pct(v) for v in res["per_tiou"][m][s])
                      + f" | {_pct(res[m][s])} |")
    md += ["", "GZSL averaged over base / novel classes: "
           + "; ".join(f"{m}: {_pct(v['base_classes'])} / {_pct(v['novel_classes'])}"
                       for m, v in res["gzsl_classes"].items()), ""]
    md += ["## Class-agnostic localisation (test set)", "", "| model | videos | class-agnostic avg mAP | recall@1xGT | AR@10 |",
           "|---|---|---|---|---|"]
    for m in ("base", "selftrained"):
        for part, v in res["localization"][m].items():
            md.append(f"| {m} | {part}-only | {_pct(v['class_agnostic_average_mAP'])} | "
                      f"{_pct(v['recall@1xGT'])} | {_pct(v['AR@10'])} |")
    md += ["", "## Pseudo-labels", ""]
    for k, v in res["pseudo_labels"].items():
        md.append(f"- {k}: {v}")
    if qual is not None:
        c = qual["correlation_actionness_best_tiou"]
        u = qual["used"]
        md += ["", f"Against the unlabelled videos' hidden ground truth ({qual['num_gt']} segments): "
               f"the pseudo-labels used have precision {_pct(u['precision'])}%, recall {_pct(u['recall'])}% "
               f"(tIoU 0.5), {u['per_video']:.2f} per video. Actionness vs best tIoU over "
               f"{c['n']} candidates: Pearson {c['pearson']}, Spearman {c['spearman']}.", "",
               "| rule | parameter | per video | precision | recall | F1 |", "|---|---|---|---|---|---|"]
        for mode in ("fixed", "per_video", "quantile"):
            for r in qual[mode]:
                md.append(f"| {mode} | {r['param']:g} | {r['per_video']:.2f} | {_pct(r['precision'])} | "
                          f"{_pct(r['recall'])} | {_pct(r['f1'])} |")
        md.append(f"\n(per_video and quantile are floored at actionness {qual['adaptive_floor']:g}.)")
    if len(res["scale"]) > 1:
        md += ["", "## Scale", "", "| unlabelled videos | CB | CN | GZSL |", "|---|---|---|---|",
               f"| 0 (base) | {_pct(res['base']['CB'])} | {_pct(res['base']['CN'])} | {_pct(res['base']['GZSL'])} |"]
        for r in res["scale"]:
            md.append(f"| {r['num_unlabelled']} | {_pct(r['CB'])} | {_pct(r['CN'])} | {_pct(r['GZSL'])} |")
    md += ["", "## Plots", ""] + [f"![{p}](plots/{p})" for p in plots]
    md += ["", "```", format_table(res), "```", ""]
    return "\n".join(md)


def write_report(ctx: Any) -> str:
    """Write ``results.json``, ``report.md`` and ``plots/`` under the work directory."""
    res = _collect(ctx)
    qual = _quality(ctx, ctx.default_scale())
    if qual is not None:
        res["pseudo_label_quality"] = {k: v for k, v in qual.items() if not k.startswith("_")}
    plots = _plots(ctx, res, qual, ctx.layout.plots)
    atomic_write_json(ctx.layout.results, res, indent=1)
    out = ctx.layout.report
    with atomic_open(out, "w") as f:
        f.write(_markdown(ctx, res, qual, plots))
    return out
