"""Every stage on a tiny world, stage skipping, results.json schema, sharded resume after SIGKILL."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import pytest

pytest.importorskip("stovtal.engine", reason="needs the models/extract branches")
pytest.importorskip("stovtal.utils.shards", reason="needs the models/extract branches")

from stovtal.selftrain.config import ConfigError, load_config
from stovtal.selftrain.stages import make_context, run_stage
from stovtal.utils.fileio import read_json

from .conftest import PYTHON, TINY, subprocess_env


def test_every_stage_wrote_its_outputs(tiny_run):
    ctx, logs = tiny_run
    n = ctx.default_scale()
    assert n == 16
    for rel in ("base/model.pt", "base/last.pt", f"pseudo/n{n}/pseudo_labels.json", f"retrain/n{n}/teacher.pt",
                "eval/base.json", f"eval/selftrained-n{n}.json", "report.md", "results.json",
                "plots/map.png", "plots/pseudo_labels.png", "plots/actionness_vs_tiou.png",
                "plots/pseudo_pr.png", "plots/adaptive_vs_fixed.png"):
        assert os.path.getsize(ctx.path(rel)) > 0, rel


def test_results_schema(tiny_run):
    ctx, _ = tiny_run
    res = read_json(ctx.path("results.json"))
    for model in ("base", "selftrained"):
        assert set(res[model]) == {"CB", "CN", "GZSL"}
        for s in ("CB", "CN", "GZSL"):
            assert 0.0 <= res[model][s] <= 1.0
            per = res["per_tiou"][model][s]
            assert len(per) == len(res["tiou_thresholds"])
            assert res[model][s] == pytest.approx(sum(per) / len(per))
    q = res["pseudo_label_quality"]
    assert q["num_videos"] == 16 and q["num_gt"] > 0
    for row in q["fixed"]:
        assert 0 <= row["precision"] <= 1 and 0 <= row["recall"] <= 1
    recalls = [r["recall"] for r in q["fixed"]]  # a higher threshold never recalls more
    assert recalls == sorted(recalls, reverse=True)
    assert "CN" in open(ctx.path("report.md")).read()


def test_pseudo_labels_respect_threshold_min_num_and_duration(tiny_run):
    from stovtal.data.formats import load_pseudo_labels
    from stovtal.selftrain.pseudolabel import load_candidates

    ctx, _ = tiny_run
    n = ctx.default_scale()
    path = ctx.path("pseudo", f"n{n}", "pseudo_labels.json")
    db = load_pseudo_labels(path)["database"]  # the shared format validates
    cands = load_candidates(ctx.path("pseudo", f"n{n}"))
    assert set(db) == set(cands) == set(ctx.unlabelled_ids(n))
    thr = ctx.cfg.pseudo.threshold
    for vid, info in db.items():
        acts = [a["actionness"] for a in info["annotations"]]
        assert len(acts) >= 1  # min_num
        assert acts == sorted(acts, reverse=True)
        passing = sum(a >= thr for a in cands[vid]["actionness"])
        assert len(acts) == max(passing, 1)
        for a in info["annotations"]:
            s, e = a["segment"]
            assert 0.0 <= s < e <= info["duration"]


def test_rerun_skips_and_config_change_is_an_error(tiny_run):
    ctx, _ = tiny_run
    out = ctx.path("retrain", f"n{ctx.default_scale()}", "teacher.pt")
    before = os.path.getmtime(out)
    logs: list[str] = []
    ctx2 = make_context(ctx.cfg, ctx.workdir, log=logs.append)
    for stage in ("base", "pseudolabel", "retrain", "eval", "report"):
        run_stage(ctx2, stage)
    assert os.path.getmtime(out) == before
    assert sum("skipped" in line for line in logs) >= 5
    changed = load_config(None, [*TINY, "pseudo.threshold=0.5"])
    ctx3 = make_context(changed, ctx.workdir, log=logs.append)
    run_stage(ctx3, "base")  # the base model does not depend on the threshold
    with pytest.raises(ConfigError, match="different configuration"):
        run_stage(ctx3, "pseudolabel")
    # the labelled share of the retraining epochs (default 0.5) is part of the retraining's identity
    mixed = make_context(load_config(None, [*TINY, "retrain.labelled_fraction=0"]), ctx.workdir, log=logs.append)
    run_stage(mixed, "pseudolabel")
    with pytest.raises(ConfigError, match="different configuration"):
        run_stage(mixed, "retrain")
    # and so is a fixed epoch length
    fixed = make_context(load_config(None, [*TINY, "retrain.epoch_length=6"]), ctx.workdir, log=logs.append)
    with pytest.raises(ConfigError, match="different configuration"):
        run_stage(fixed, "retrain")


def test_stage_alone_needs_its_input(tmp_path):
    cfg = load_config(None, TINY)
    ctx = make_context(cfg, str(tmp_path), log=lambda s: None)
    with pytest.raises(FileNotFoundError, match="run the 'base' stage first"):
        run_stage(ctx, "pseudolabel")


def _copy_without_pseudo(src: str, dst: str) -> None:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("pseudo", "retrain", "eval", "plots", "report.md",
                                                            "results.json"))


def test_pseudolabel_resume_after_sigkill(tiny_run, tmp_path):
    """Kill the pseudolabel stage mid-way (a real subprocess, SIGKILL) and re-run it: the final
    pseudo-labels equal those of an uninterrupted run, byte for byte."""
    ctx, _ = tiny_run
    n = ctx.default_scale()
    # one video per shard, so that the kill lands between shards
    extra = ["--stage", "pseudolabel", *TINY, "pseudo.shard_size=1", "pseudo.batch_size=1"]
    uninterrupted = str(tmp_path / "uninterrupted")
    _copy_without_pseudo(ctx.workdir, uninterrupted)
    r = subprocess.run([PYTHON, "-m", "stovtal.selftrain", "--workdir", uninterrupted, *extra],
                       env=subprocess_env(), capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    reference = open(os.path.join(uninterrupted, "pseudo", f"n{n}", "pseudo_labels.json"), "rb").read()
    work = str(tmp_path / "killed")
    _copy_without_pseudo(ctx.workdir, work)
    args = [PYTHON, "-m", "stovtal.selftrain", "--workdir", work, *extra]
    shard_dir = os.path.join(work, "pseudo", f"n{n}", "shards")
    proc = subprocess.Popen(args, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    killed_with = None
    while time.time() < deadline and proc.poll() is None:
        done = [f for f in os.listdir(shard_dir) if f.startswith("shard-")] if os.path.isdir(shard_dir) else []
        if len(done) >= 2:
            proc.send_signal(signal.SIGKILL)
            killed_with = len(done)
            break
        time.sleep(0.005)
    proc.wait(timeout=60)
    assert killed_with is not None, f"the run ended before it could be killed: {proc.stderr.read()[-2000:]}"
    assert proc.returncode == -signal.SIGKILL
    final = os.path.join(work, "pseudo", f"n{n}", "pseudo_labels.json")
    assert not os.path.exists(final)
    records = [f for f in os.listdir(shard_dir) if f.startswith("shard-")]
    assert 2 <= len(records) < n  # partial progress kept, work left
    for r in records:  # a record implies a complete output
        assert read_json(os.path.join(shard_dir, "outputs", r))
    r = subprocess.run(args, env=subprocess_env(), capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    assert open(final, "rb").read() == reference


def test_scale_runs_nested_subsets_and_reports_a_curve(tiny_run, tmp_path):
    """``--scale 8,20``: 20 > the world's 16 web videos, so the world is enlarged; the base model
    is reused (it does not depend on the web set); one pseudo-labelling + retraining per size, on
    nested subsets; results.json and report.md carry the scale curve."""
    ctx, _ = tiny_run
    work = str(tmp_path / "scale")
    shutil.copytree(ctx.workdir, work, ignore=shutil.ignore_patterns("pseudo", "retrain", "eval", "plots",
                                                                     "report.md", "results.json"))
    logs: list[str] = []
    cfg = load_config(None, [*TINY, "scale=[8,20]"])
    sctx = make_context(cfg, work, log=logs.append)
    assert len(sctx.data.unlabelled) == 20 and sctx.scales() == [8, 20]
    for stage in ("base", "pseudolabel", "retrain", "eval", "report"):
        run_stage(sctx, stage)
    assert any("[base] output exists, skipped" in line for line in logs)
    small, large = sctx.unlabelled_ids(8), sctx.unlabelled_ids(20)
    assert set(small) < set(large)
    for n, ids in ((8, small), (20, large)):
        pl = read_json(os.path.join(work, "pseudo", f"n{n}", "pseudo_labels.json"))["database"]
        assert sorted(pl) == ids
    res = read_json(os.path.join(work, "results.json"))
    assert [r["num_unlabelled"] for r in res["scale"]] == [8, 20]
    assert res["num_unlabelled"] == 20
    final = read_json(os.path.join(work, "eval", "selftrained-n20.json"))
    assert res["selftrained"]["CN"] == final["CN"]["average_mAP"]
    assert os.path.getsize(os.path.join(work, "plots", "scale.png")) > 0
    assert "## Scale" in open(os.path.join(work, "report.md")).read()


def test_exported_seconds_sum_the_epochs_of_every_run(tiny_run):
    """``seconds`` of an exported model counts the epochs of all runs (the epoch history travels
    in ``last.pt`` through a resume), not only the last invocation's."""
    from stovtal.engine.checkpoint import load_checkpoint, load_model

    ctx, _ = tiny_run
    history = load_checkpoint(ctx.path("base", "last.pt"))["history"]
    assert len(history) == 2
    seconds = load_model(ctx.path("base", "model.pt")).meta["seconds"]
    assert seconds == pytest.approx(sum(h["time_s"] for h in history)) and seconds > 0
