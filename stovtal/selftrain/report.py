"""``report`` stage: ``results.json``, ``report.md`` and the PNG plots.

``results.json``: ``{"base": {"CB", "CN", "GZSL"}, "selftrained": {...}}`` (average mAP over the
tIoU thresholds, fractions in [0, 1]; ``selftrained``: the teacher of the last round on the
largest number of unlabelled videos) plus detail under other keys: ``selftrained_student``
(the raw student of that retraining), ``rounds`` (``retrain.rounds``), ``tiou_thresholds``,
``per_tiou`` (per model and setting), ``gzsl_classes`` (GZSL averaged over base / novel
classes), ``localization`` (class-agnostic metrics), ``scale`` (one entry per number of
unlabelled videos: the last round's teacher, and under ``rounds`` every round's teacher,
student and pseudo-labels, with their precision / recall against the unlabelled videos'
ground truth when it exists), ``pseudo_labels`` (statistics per run) and, when the unlabelled
videos have ground truth, ``pseudo_label_quality`` (round 1 on the largest number).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from stovtal.utils.fileio import atomic_open, atomic_write_json, read_json

__all__ = ["format_table", "scale_figure", "write_report"]

SETTINGS = ("CB", "CN", "GZSL")
SWEEP_THRESHOLDS = [0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
SWEEP_RATIOS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
SWEEP_QUANTILES = [0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95]


def _pct(x: float | None) -> str:
    return "  n/a" if x is None else f"{100 * x:5.2f}"


def _avg(ev: dict[str, Any]) -> dict[str, float | None]:
    return {s: ev[s]["average_mAP"] for s in SETTINGS}


def format_table(results: dict[str, Any]) -> str:
    """The results table of a ``results.json``: CB, CN, GZSL mAP (%) per tIoU and averaged,
    base vs self-trained (:func:`stovtal.eval.format_results_table`), then each
    retraining round's teacher and raw student."""
    from stovtal.eval.table import format_results_table

    models = {m: {s: {"mAP": results["per_tiou"][m][s], "average_mAP": results[m][s]} for s in SETTINGS}
              for m in ("base", "selftrained")}
    lines = [format_results_table(models, results["tiou_thresholds"])]
    for row in results.get("scale", []):
        for r in row.get("rounds", []):
            lines.append(f"n={row['num_unlabelled']} round {r['round']}: teacher "
                         + " / ".join(_pct(r["teacher"][s]).strip() for s in SETTINGS) + ", raw student "
                         + " / ".join(_pct(r["student"][s]).strip() for s in SETTINGS) + " (CB / CN / GZSL)")
    return "\n".join(lines)


def _collect(ctx: Any, quality: dict[tuple[int, int], dict[str, Any]]) -> dict[str, Any]:
    """results.json's contents; ``quality[(n, round)]``: precision / recall of the pseudo-labels."""
    from .stages import student_eval_name, teacher_eval_name

    lay = ctx.layout
    evals = {"base": read_json(lay.eval_result("base"))}
    scales, rounds = ctx.scales(), ctx.rounds()
    last = rounds[-1]
    for n in scales:
        for r in rounds:
            evals[("teacher", n, r)] = read_json(lay.eval_result(teacher_eval_name(n, r)))
            evals[("student", n, r)] = read_json(lay.eval_result(student_eval_name(n, r)))
    default = ("teacher", ctx.default_scale(), last)

    def round_entry(n: int, r: int) -> dict[str, Any]:
        info = read_json(lay.pseudo_labels(n, r)).get("info", {})
        pl = {"num_pseudo_labels": info.get("num_pseudo_labels"), "threshold": ctx.pseudo_config(n).threshold}
        q = quality.get((n, r))
        if q is not None:
            pl.update({k: q[k] for k in ("precision", "recall", "per_video")})
        return {"round": r, "teacher": _avg(evals[("teacher", n, r)]), "student": _avg(evals[("student", n, r)]),
                "pseudo_labels": pl}

    res: dict[str, Any] = {
        "base": {s: evals["base"][s]["average_mAP"] for s in SETTINGS},
        "selftrained": {s: evals[default][s]["average_mAP"] for s in SETTINGS},
        "selftrained_student": _avg(evals[("student", ctx.default_scale(), last)]),
        "rounds": len(rounds),
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
        "scale": [{"num_unlabelled": n, **{s: evals[("teacher", n, last)][s]["average_mAP"] for s in SETTINGS},
                   "rounds": [round_entry(n, r) for r in rounds]}
                  for n in scales],
        "pseudo_labels": {},
    }
    for n in scales:
        for r in rounds:
            pl = read_json(lay.pseudo_labels(n, r))
            res["pseudo_labels"][lay.run_name(n, r)] = pl.get("info", {})
    return res


def _candidate_quality(ctx: Any, n: int, round: int = 1):
    """(CandidateQuality of the candidates of run (n, round), precision / recall of the
    pseudo-labels used), or None without ground truth of the unlabelled videos."""
    from .analysis import CandidateQuality
    from .filtering import video_thresholds
    from .pseudolabel import load_candidates

    gt = ctx.data.unlabelled_gt
    if not gt:
        return None
    p = ctx.pseudo_config(n)
    cands = load_candidates(ctx.layout.pseudo_dir(n, round))
    q = CandidateQuality(cands, gt, 0.5, p.dedup_iou if p.dedup else None)
    used = q.evaluate(video_thresholds(cands, p.threshold_mode, p.threshold, p.per_video_ratio, p.quantile,
                                       p.dedup_iou if p.dedup else None), p.min_num, p.max_num)
    return q, used


def _quality(ctx: Any, n: int, cq: Any = None) -> dict[str, Any] | None:
    from .analysis import correlation, sweep

    cq = cq or _candidate_quality(ctx, n)
    if cq is None:
        return None
    q, used = cq
    p = ctx.pseudo_config(n)
    a, b = q.all_pairs()
    pl = read_json(ctx.layout.pseudo_labels(n))["database"]
    sel_a = np.array([x["actionness"] for v in pl.values() for x in v["annotations"]])
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
    axes[0].axvline(ctx.pseudo_config(ctx.default_scale()).threshold, color="k", ls="--", lw=1, label="threshold")
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
        ax.axvline(ctx.pseudo_config(ctx.default_scale()).threshold, color="k", ls="--", lw=1)
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

    # 5. scale curve: teacher and raw student of every round per number of unlabelled videos
    if len(res["scale"]) > 1 or res["rounds"] > 1:
        runs = {(row["num_unlabelled"], r["round"]): r for row in res["scale"] for r in row["rounds"]}
        curves = {"mAP": {}, "pl": {}}
        for (n, r), e in runs.items():
            for s in SETTINGS:
                for who in ("teacher", "student"):
                    curves["mAP"].setdefault((s, who, r), {})[n] = [e[who][s]]
            for k in ("precision", "recall"):
                if k in e["pseudo_labels"]:
                    curves["pl"].setdefault((k, r), {})[n] = [e["pseudo_labels"][k]]
        fig = scale_figure(curves, {s: [res["base"][s]] for s in SETTINGS},
                           f"seed {res['seed']}, {res['rounds']} round(s)")
        save(fig, "scale.png")
    return made


def _points(values: dict[int, list[float | None]]) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Sorted N, mean and standard deviation (over seeds, ddof 0) of the non-missing values, in %."""
    ns = sorted(n for n, v in values.items() if any(x is not None for x in v))
    vals = [[100 * x for x in values[n] if x is not None] for n in ns]
    return ns, np.array([np.mean(v) for v in vals]), np.array([np.std(v) for v in vals])


def scale_figure(curves: dict[str, dict[tuple, dict[int, list[float | None]]]],
                 base: dict[str, list[float | None]], title: str):
    """The scale figure: one panel per setting (CB, CN, GZSL) with the base model (band: mean +-
    std over seeds), the teacher (solid) and the raw student (dotted) of every round (colour)
    against the number of unlabelled videos, and a panel of the pseudo-labels' precision and
    recall against the unlabelled videos' ground truth (when given).

    ``curves["mAP"][(setting, "teacher"|"student", round)][N]`` and
    ``curves["pl"][("precision"|"recall", round)][N]``: lists over seeds of fractions in [0, 1]
    (None = missing); ``base[setting]``: list over seeds. Returns the matplotlib figure.
    """
    import matplotlib.pyplot as plt

    has_pl = bool(curves.get("pl"))
    fig, axes = plt.subplots(1, 4 if has_pl else 3, figsize=(15 if has_pl else 11.5, 3.4))
    rounds = sorted({k[2] for k in curves["mAP"]})
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    all_n = sorted({n for c in curves["mAP"].values() for n in c})
    for ax, s in zip(axes, SETTINGS, strict=False):
        b = [100 * x for x in base[s] if x is not None]
        if b:
            ax.axhline(np.mean(b), color="k", lw=1, label="base model")
            if len(b) > 1:
                ax.axhspan(np.mean(b) - np.std(b), np.mean(b) + np.std(b), color="k", alpha=0.08)
        for i, r in enumerate(rounds):
            for who, ls in (("teacher", "-"), ("student", ":")):
                ns, m, sd = _points(curves["mAP"].get((s, who, r), {}))
                if not ns:
                    continue
                c = colours[i % len(colours)]
                ax.plot(ns, m, ls, marker="o", ms=3, color=c, label=f"round {r} {who}")
                if any(len(curves["mAP"][(s, who, r)][n]) > 1 for n in ns):
                    ax.fill_between(ns, m - sd, m + sd, color=c, alpha=0.15 if who == "teacher" else 0.07)
        ax.set_xscale("log")
        ax.set_xticks(all_n, [str(n) for n in all_n])
        ax.minorticks_off()
        ax.set_xlabel("unlabelled videos")
        ax.set_title(s)
    axes[0].set_ylabel("average mAP (%)")
    axes[0].legend(fontsize=7)
    if has_pl:
        ax = axes[3]
        for (k, r), vals in sorted(curves["pl"].items()):
            ns, m, sd = _points(vals)
            c = colours[(r - 1) % len(colours)]
            ax.plot(ns, m, "-" if k == "precision" else "--", marker="s", ms=3, color=c, label=f"{k} round {r}")
            ax.fill_between(ns, m - sd, m + sd, color=c, alpha=0.1)
        ax.set_xscale("log")
        ax.set_xticks(all_n, [str(n) for n in all_n])
        ax.minorticks_off()
        ax.set_ylim(0, 100)
        ax.set_xlabel("unlabelled videos")
        ax.set_ylabel("% (tIoU 0.5, web ground truth)")
        ax.set_title("pseudo-labels (analysis only)")
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


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
    md += ["", "## Scale and rounds", "",
           "Average mAP (%) of the self-trained teacher (EMA weights, the exported model) and of the raw "
           "student, per number of unlabelled videos and round; pseudo-label precision / recall (tIoU 0.5) "
           "against the unlabelled videos' ground truth (analysis only, never used by the method).", "",
           "| unlabelled videos | round | threshold | pseudo-labels | precision | recall | teacher CB | CN | GZSL "
           "| student CB | CN | GZSL |", "|---|---|---|---|---|---|---|---|---|---|---|---|",
           f"| 0 (base) | | | | | | {_pct(res['base']['CB'])} | {_pct(res['base']['CN'])} | "
           f"{_pct(res['base']['GZSL'])} | | | |"]
    for row in res["scale"]:
        for r in row["rounds"]:
            pl = r["pseudo_labels"]
            md.append(f"| {row['num_unlabelled']} | {r['round']} | {pl['threshold']:g} | {pl['num_pseudo_labels']} | "
                      f"{_pct(pl.get('precision'))} | {_pct(pl.get('recall'))} | "
                      + " | ".join(_pct(r["teacher"][s]) for s in SETTINGS) + " | "
                      + " | ".join(_pct(r["student"][s]) for s in SETTINGS) + " |")
    md += ["", "## Plots", ""] + [f"![{p}](plots/{p})" for p in plots]
    md += ["", "```", format_table(res), "```", ""]
    return "\n".join(md)


def write_report(ctx: Any) -> str:
    """Write ``results.json``, ``report.md`` and ``plots/`` under the work directory."""
    cq = {(n, r): _candidate_quality(ctx, n, r) for n in ctx.scales() for r in ctx.rounds()}
    res = _collect(ctx, {k: v[1] for k, v in cq.items() if v is not None})
    qual = _quality(ctx, ctx.default_scale(), cq[(ctx.default_scale(), 1)])
    if qual is not None:
        res["pseudo_label_quality"] = {k: v for k, v in qual.items() if not k.startswith("_")}
    plots = _plots(ctx, res, qual, ctx.layout.plots)
    atomic_write_json(ctx.layout.results, res, indent=1)
    out = ctx.layout.report
    with atomic_open(out, "w") as f:
        f.write(_markdown(ctx, res, qual, plots))
    return out
