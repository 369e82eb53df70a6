"""Aggregate ``python -m stovtal.selftrain`` work directories of several seeds.

``python -m stovtal.selftrain.aggregate --out DIR WORKDIR [WORKDIR ...]`` (or
``python -m stovtal.selftrain --seeds 0,1,2 ...``, which runs the seeds and then this) writes,
atomically, under ``DIR``:

- ``aggregate.json``: per model (base; teacher and raw student of every number of unlabelled
  videos N and round) and setting (CB, CN, GZSL), the average mAP of every seed (fractions in
  [0, 1]) and their mean and standard deviation (ddof 0); per N and round the pseudo-labels'
  precision / recall (tIoU 0.5) against the unlabelled videos' ground truth when the work
  directory has it (analysis only);
- ``aggregate.md``: the table N x seed x round and the mean +- std rows;
- ``plots/scale_seeds.png``: mean and spread (+- std band) per N for CB, CN, GZSL, rounds and
  the pseudo-label precision / recall (:func:`stovtal.selftrain.report.scale_figure`).

It reads what the stages wrote (``config.yaml``, ``eval/*.json``, ``pseudo/*/``), not
``results.json``, so runs that are still going (or were stopped) contribute the models they
have evaluated so far; a missing model is shown as n/a and left out of the mean.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Any

import numpy as np

from stovtal.utils.cli import add_debug_flag, cli_entry
from stovtal.utils.fileio import atomic_open, atomic_write_json, read_json

__all__ = ["aggregate", "read_workdir", "write_aggregate"]

SETTINGS = ("CB", "CN", "GZSL")
_EVAL = re.compile(r"^(selftrained|student)-n(\d+)(?:-r(\d+))?\.json$")


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}"


def _pseudo_quality(workdir: str, cfg: Any, n: int, round: int) -> dict[str, float] | None:
    """Precision / recall of run (n, round)'s pseudo-labels against the web ground truth of the
    work directory's synthetic world (None without a finished pseudo-labelling or ground truth)."""
    from stovtal.engine.layout import SelfTrainLayout

    from .analysis import CandidateQuality
    from .filtering import video_thresholds
    from .pseudolabel import load_candidates

    lay = SelfTrainLayout(workdir)
    if not os.path.exists(lay.pseudo_labels(n, round)):
        return None
    gt_path = _web_ground_truth(workdir, cfg)
    if gt_path is None:
        return None
    from stovtal.data.formats import load_annotations

    gt = load_annotations(gt_path)["database"]
    p = cfg.pseudo.for_n(n)
    cands = load_candidates(lay.pseudo_dir(n, round))
    q = CandidateQuality(cands, gt, 0.5, p.dedup_iou if p.dedup else None)
    used = q.evaluate(video_thresholds(cands, p.threshold_mode, p.threshold, p.per_video_ratio, p.quantile,
                                       p.dedup_iou if p.dedup else None), p.min_num, p.max_num)
    return {"precision": used["precision"], "recall": used["recall"], "per_video": used["per_video"],
            "threshold": p.threshold}


def _web_ground_truth(workdir: str, cfg: Any) -> str | None:
    if not cfg.data.is_synthetic:
        return cfg.data.unlabelled_gt or None
    worlds = [d for d in os.listdir(workdir) if d == "world" or d.startswith("world-web")]
    for d in sorted(worlds, key=lambda d: int(d[len("world-web"):]) if d != "world" else 0, reverse=True):
        path = os.path.join(workdir, d, "web_gt.json")
        if os.path.exists(path):
            return path
    return None


def read_workdir(workdir: str, quality: bool = True) -> dict[str, Any]:
    """One work directory: ``{"seed", "base": {setting: mAP}, "runs": {(who, n, round):
    {setting: mAP}}, "pseudo": {(n, round): {precision, recall, ...}}}`` (average mAP, fractions)."""
    from .config import load_config

    cfg_path = os.path.join(workdir, "config.yaml")
    if not os.path.isfile(cfg_path):
        raise FileNotFoundError(f"{workdir}: not a selftrain work directory (no config.yaml)")
    cfg = load_config(cfg_path)
    eval_dir = os.path.join(workdir, "eval")
    out: dict[str, Any] = {"workdir": os.path.abspath(workdir), "seed": cfg.seed, "base": None,
                           "runs": {}, "pseudo": {}}
    names = sorted(os.listdir(eval_dir)) if os.path.isdir(eval_dir) else []
    for name in names:
        path = os.path.join(eval_dir, name)
        if name == "base.json":
            out["base"] = {s: read_json(path)[s]["average_mAP"] for s in SETTINGS}
            continue
        m = _EVAL.match(name)
        if m:
            who = "teacher" if m.group(1) == "selftrained" else "student"
            key = (who, int(m.group(2)), int(m.group(3) or 1))
            out["runs"][key] = {s: read_json(path)[s]["average_mAP"] for s in SETTINGS}
    if quality:
        for n, r in sorted({(k[1], k[2]) for k in out["runs"]}):
            q = _pseudo_quality(workdir, cfg, n, r)
            if q is not None:
                out["pseudo"][(n, r)] = q
    return out


def _stats(values: list[float | None]) -> dict[str, Any]:
    v = [x for x in values if x is not None]
    return {"values": values, "mean": float(np.mean(v)) if v else None, "std": float(np.std(v)) if v else None,
            "num_seeds": len(v)}


def aggregate(workdirs: list[str], quality: bool = True) -> dict[str, Any]:
    """Mean and spread over the work directories (one per seed; seeds must differ)."""
    if not workdirs:
        raise ValueError("aggregate: no work directories given")
    runs = [read_workdir(w, quality) for w in workdirs]
    seeds = [r["seed"] for r in runs]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"aggregate: the work directories repeat a seed ({seeds}): {workdirs}")
    keys = sorted({k for r in runs for k in r["runs"]}, key=lambda k: (k[1], k[2], k[0]))
    ns = sorted({k[1] for k in keys})
    rounds = sorted({k[2] for k in keys})
    res: dict[str, Any] = {
        "seeds": seeds, "workdirs": [r["workdir"] for r in runs],
        "base": {s: _stats([r["base"][s] if r["base"] else None for r in runs]) for s in SETTINGS},
        "scale": [],
    }
    for n in ns:
        row: dict[str, Any] = {"num_unlabelled": n, "rounds": []}
        for rd in rounds:
            entry: dict[str, Any] = {"round": rd}
            for who in ("teacher", "student"):
                entry[who] = {s: _stats([r["runs"].get((who, n, rd), {}).get(s) for r in runs]) for s in SETTINGS}
            entry["pseudo_labels"] = {k: _stats([r["pseudo"].get((n, rd), {}).get(k) for r in runs])
                                      for k in ("precision", "recall", "per_video")}
            row["rounds"].append(entry)
        res["scale"].append(row)
    return res


def _markdown(res: dict[str, Any]) -> str:
    md = ["# Self-training over seeds", "",
          f"Seeds {res['seeds']}; average mAP (%) of the self-trained teacher (EMA weights) and of the raw "
          "student; pseudo-label precision / recall (%, tIoU 0.5) against the unlabelled videos' ground "
          "truth (analysis only). Mean +- std (ddof 0) over the seeds that have the value.", "",
          "| unlabelled videos | seed | round | teacher CB | CN | GZSL | student CB | CN | GZSL | PL precision "
          "| PL recall |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for i, seed in enumerate(res["seeds"]):
        b = res["base"]
        md.append(f"| 0 (base) | {seed} | | " + " | ".join(_pct(b[s]["values"][i]) for s in SETTINGS)
                  + " | | | | | |")
    b = res["base"]
    md.append("| 0 (base) | mean +- std | | " + " | ".join(_mean_std(b[s]) for s in SETTINGS) + " | | | | | |")
    for row in res["scale"]:
        for e in row["rounds"]:
            for i, seed in enumerate(res["seeds"]):
                md.append(f"| {row['num_unlabelled']} | {seed} | {e['round']} | "
                          + " | ".join(_pct(e[w][s]["values"][i]) for w in ("teacher", "student") for s in SETTINGS)
                          + " | " + " | ".join(_pct(e["pseudo_labels"][k]["values"][i]) for k in ("precision", "recall"))
                          + " |")
            md.append(f"| {row['num_unlabelled']} | mean +- std | {e['round']} | "
                      + " | ".join(_mean_std(e[w][s]) for w in ("teacher", "student") for s in SETTINGS)
                      + " | " + " | ".join(_mean_std(e["pseudo_labels"][k]) for k in ("precision", "recall")) + " |")
    md += ["", "![scale over seeds](plots/scale_seeds.png)", ""]
    return "\n".join(md)


def _mean_std(st: dict[str, Any]) -> str:
    if st["mean"] is None:
        return "n/a"
    return f"{100 * st['mean']:.2f} +- {100 * st['std']:.2f}"


def _figure(res: dict[str, Any]):
    from .report import scale_figure

    curves: dict[str, dict[tuple, dict[int, list[float | None]]]] = {"mAP": {}, "pl": {}}
    for row in res["scale"]:
        n = row["num_unlabelled"]
        for e in row["rounds"]:
            for who in ("teacher", "student"):
                for s in SETTINGS:
                    curves["mAP"].setdefault((s, who, e["round"]), {})[n] = e[who][s]["values"]
            for k in ("precision", "recall"):
                vals = e["pseudo_labels"][k]["values"]
                if any(v is not None for v in vals):
                    curves["pl"].setdefault((k, e["round"]), {})[n] = vals
    return scale_figure(curves, {s: res["base"][s]["values"] for s in SETTINGS},
                        f"mean +- std over seeds {res['seeds']}")


def write_aggregate(out_dir: str, workdirs: list[str], quality: bool = True) -> dict[str, Any]:
    """Write ``aggregate.json``, ``aggregate.md`` and ``plots/scale_seeds.png`` under ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = aggregate(workdirs, quality)
    os.makedirs(os.path.join(out_dir, "plots"), exist_ok=True)
    if res["scale"]:
        fig = _figure(res)
        with atomic_open(os.path.join(out_dir, "plots", "scale_seeds.png"), "wb") as f:
            fig.savefig(f, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
    atomic_write_json(os.path.join(out_dir, "aggregate.json"), res, indent=1)
    with atomic_open(os.path.join(out_dir, "aggregate.md"), "w") as f:
        f.write(_markdown(res))
    return res


@cli_entry
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m stovtal.selftrain.aggregate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("workdirs", nargs="+", help="selftrain work directories, one per seed")
    p.add_argument("--out", required=True, help="where aggregate.json, aggregate.md and plots/ go")
    p.add_argument("--no-quality", action="store_true",
                   help="skip the pseudo-label precision / recall (reads every candidate; slower at large N)")
    add_debug_flag(p)
    args = p.parse_args(argv)
    write_aggregate(args.out, args.workdirs, quality=not args.no_quality)
    print(open(os.path.join(args.out, "aggregate.md")).read())
    return 0


if __name__ == "__main__":
    sys.exit(main())
