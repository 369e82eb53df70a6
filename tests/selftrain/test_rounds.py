"""Self-training rounds (``retrain.rounds``), the per-N pseudo-label threshold, the raw student's
evaluation and the aggregate over seeds, on the tiny world."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest

pytest.importorskip("stovtal.engine", reason="needs the models/extract branches")

from stovtal.config import PseudoLabelConfig
from stovtal.selftrain.config import ConfigError, load_config, validate
from stovtal.selftrain.stages import make_context, run_stage
from stovtal.utils.fileio import read_json

from .conftest import PYTHON, TINY, subprocess_env


def _copy(src: str, dst: str, *drop: str) -> None:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("eval", "plots", "report.md", "results.json", *drop))


# --------------------------------------------------------------------------- config


def test_threshold_by_n_takes_the_largest_key_not_above_n():
    p = PseudoLabelConfig(threshold=0.05, threshold_by_n={10000: 0.10, 100000: 0.05})
    assert [p.threshold_for(n) for n in (1, 5000, 9999, 10000, 50000, 99999, 100000, 10**6)] == \
        [0.05, 0.05, 0.05, 0.10, 0.10, 0.10, 0.05, 0.05]
    assert PseudoLabelConfig(threshold=0.3).threshold_for(10**6) == 0.3
    q = p.for_n(20000)
    assert q.threshold == 0.10 and q.threshold_by_n == p.threshold_by_n and p.threshold == 0.05


@pytest.mark.parametrize(("override", "match"), [
    ("retrain.rounds=0", "retrain.rounds: must be >= 1"),
    ("retrain.rounds=-2", "retrain.rounds: must be >= 1"),
    ("retrain.rounds=2.5", "retrain.rounds"),
    ("pseudo.threshold_by_n={100: 0.0001}", r"pseudo.threshold_by_n.100: .* below pseudo.candidate_floor"),
])
def test_bad_rounds_and_thresholds_name_the_key(override, match):
    with pytest.raises(ConfigError, match=match):
        validate(load_config(None, [*TINY, override]), check_paths=False)


def test_threshold_by_n_survives_the_written_config(tmp_path):
    """config.yaml (what a run writes, and what --config and the aggregate read) keeps the
    per-N thresholds' integer keys."""
    from stovtal.selftrain.config import to_yaml

    cfg = load_config(None, [*TINY, "pseudo.threshold_by_n={10000: 0.1, 100000: 0.05}", "retrain.rounds=2"])
    path = tmp_path / "config.yaml"
    path.write_text(to_yaml(cfg))
    back = load_config(str(path))
    assert back.pseudo.threshold_by_n == {10000: 0.1, 100000: 0.05} and back.retrain.rounds == 2
    assert back.pseudo.threshold_for(20000) == 0.1


def test_round_one_fingerprints_do_not_depend_on_the_number_of_rounds(tiny_run):
    ctx, _ = tiny_run
    one = make_context(load_config(None, TINY), ctx.workdir, log=lambda s: None)
    two = make_context(load_config(None, [*TINY, "retrain.rounds=2"]), ctx.workdir, log=lambda s: None)
    assert one.fp_pseudo(16) == two.fp_pseudo(16) and one.fp_retrain(16) == two.fp_retrain(16)
    assert len({two.fp_pseudo(16, 2), two.fp_pseudo(16), two.fp_retrain(16, 2), two.fp_retrain(16)}) == 4
    # a per-N threshold equal to the plain one labels the same way: same fingerprint; another value: not
    same = make_context(load_config(None, [*TINY, "pseudo.threshold_by_n={16: 0.2}"]), ctx.workdir, log=lambda s: None)
    other = make_context(load_config(None, [*TINY, "pseudo.threshold_by_n={16: 0.3}"]), ctx.workdir, log=lambda s: None)
    assert same.fp_pseudo(16) == one.fp_pseudo(16) and other.fp_pseudo(16) != one.fp_pseudo(16)
    assert other.fp_pseudo(8) == one.fp_pseudo(8)  # 8 < 16: the plain threshold


def test_per_n_threshold_is_used_by_the_pseudolabel_stage(tiny_run, tmp_path):
    from stovtal.selftrain.pseudolabel import load_candidates

    ctx, _ = tiny_run
    work = str(tmp_path / "pn")
    _copy(ctx.workdir, work, "pseudo", "retrain")
    c = make_context(load_config(None, [*TINY, "scale=[8,16]", "pseudo.threshold_by_n={16: 0.5}"]), work,
                     log=lambda s: None)
    run_stage(c, "pseudolabel")
    for n, thr in ((8, 0.2), (16, 0.5)):
        pl = read_json(c.layout.pseudo_labels(n))
        assert pl["info"]["threshold"] == thr
        cands = load_candidates(c.layout.pseudo_dir(n))
        for vid, info in pl["database"].items():
            passing = sum(a >= thr for a in cands[vid]["actionness"])
            assert len(info["annotations"]) == max(passing, 1)  # min_num 1


# --------------------------------------------------------------------------- rounds, end to end


def test_second_round_runs_resumes_after_a_kill_and_is_reported(tiny_run, tmp_path):
    """Round 2 on the tiny run's work directory (round 1 reused): SIGKILL the run once round 2's
    pseudo-labels are written, run again: round 1 and the round-2 pseudo-labels are reused,
    round 2 retrains, and results.json / report.md carry both rounds, teacher and raw student.
    The round-2 pseudo-labels are those of round 1's teacher."""
    from stovtal.selftrain.pseudolabel import pseudo_label_distributed

    ctx, _ = tiny_run
    n = ctx.default_scale()
    work = str(tmp_path / "r2")
    _copy(ctx.workdir, work)
    lay = ctx.layout.__class__(work)
    r1_teacher, r2_labels, r2_teacher = lay.teacher(n), lay.pseudo_labels(n, 2), lay.teacher(n, 2)
    r1_mtime = os.path.getmtime(r1_teacher)
    # a longer round-2 retraining (same fingerprint: the epochs are set for every round) would
    # change round 1's fingerprint too, so the kill is timed on the file instead
    args = [PYTHON, "-m", "stovtal.selftrain", "--workdir", work, *TINY, "retrain.rounds=2"]
    proc = subprocess.Popen(args, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline, killed = time.time() + 300, False
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(r2_labels):
            proc.send_signal(signal.SIGKILL)
            killed = True
            break
        time.sleep(0.002)
    proc.wait(timeout=60)
    assert killed, f"the run ended before round 2's pseudo-labels appeared: {proc.stderr.read()[-2000:]}"
    assert proc.returncode == -signal.SIGKILL
    assert not os.path.exists(r2_teacher) and not os.path.exists(os.path.join(work, "results.json"))
    labels_mtime = os.path.getmtime(r2_labels)
    r = subprocess.run(args, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert os.path.getmtime(r1_teacher) == r1_mtime  # round 1 reused
    assert os.path.getmtime(r2_labels) == labels_mtime  # round 2's pseudo-labels reused
    assert os.path.exists(r2_teacher)

    # round 2's pseudo-labels come from round 1's teacher (re-done here, compared byte for byte)
    c = make_context(load_config(None, [*TINY, "retrain.rounds=2"]), work, log=lambda s: None)
    redo = str(tmp_path / "redo")
    db = pseudo_label_distributed(c.load_model(r1_teacher), c.unlabelled_set(), c.unlabelled_ids(n), redo,
                                  c.pseudo_config(n), device=c.device, progress=False)
    assert db["database"] == read_json(r2_labels)["database"]

    res = read_json(os.path.join(work, "results.json"))
    assert res["rounds"] == 2
    (row,) = res["scale"]
    assert [e["round"] for e in row["rounds"]] == [1, 2]
    for e, (teacher, student) in zip(row["rounds"], (("selftrained-n16", "student-n16"),
                                                     ("selftrained-n16-r2", "student-n16-r2")), strict=True):
        for s in ("CB", "CN", "GZSL"):
            assert e["teacher"][s] == read_json(os.path.join(work, "eval", f"{teacher}.json"))[s]["average_mAP"]
            assert e["student"][s] == read_json(os.path.join(work, "eval", f"{student}.json"))[s]["average_mAP"]
        assert 0 <= e["pseudo_labels"]["precision"] <= 1 and 0 <= e["pseudo_labels"]["recall"] <= 1
    assert res["selftrained"] == row["rounds"][1]["teacher"]  # the last round is the run's result
    assert res["selftrained_student"] == row["rounds"][1]["student"]
    assert set(res["pseudo_labels"]) == {"n16", "n16-r2"}
    report = open(os.path.join(work, "report.md")).read()
    assert "| 16 | 1 |" in report and "| 16 | 2 |" in report
    assert os.path.getsize(os.path.join(work, "plots", "scale.png")) > 0
    # the raw student is evaluated from the retraining state's raw weights, not the teacher's
    from stovtal.engine.checkpoint import load_model

    raw = load_model(lay.retrain_state(n, 2), weights="model").state_dict
    ema = load_model(r2_teacher).state_dict
    assert any(not np.array_equal(raw[k].numpy(), ema[k].numpy()) for k in raw if raw[k].is_floating_point())


def test_report_is_rewritten_when_sizes_are_added(tiny_run, tmp_path):
    """A second call with one more size in the same directory reuses the first's stages and
    rewrites results.json / report.md (a call with the same sizes and rounds skips the report)."""
    ctx, _ = tiny_run
    work = str(tmp_path / "more")
    shutil.copytree(ctx.workdir, work)
    logs: list[str] = []
    c = make_context(load_config(None, TINY), work, log=logs.append)
    run_stage(c, "report")
    assert any("[report] output exists, skipped" in line for line in logs)
    c = make_context(load_config(None, [*TINY, "scale=[8,16]"]), work, log=logs.append)
    for stage in ("base", "pseudolabel", "retrain", "eval", "report"):
        run_stage(c, stage)
    res = read_json(os.path.join(work, "results.json"))
    assert [r["num_unlabelled"] for r in res["scale"]] == [8, 16]
    assert "| 8 | 1 |" in open(os.path.join(work, "report.md")).read()


# --------------------------------------------------------------------------- aggregate over seeds


def _fake_workdir(root: str, seed: int, values: dict[str, tuple[float, float, float]]) -> str:
    """A work directory with only config.yaml and eval/<name>.json (average mAP given)."""
    from stovtal.selftrain.config import to_yaml

    d = os.path.join(root, f"seed{seed}")
    os.makedirs(os.path.join(d, "eval"))
    cfg = load_config(None, [f"seed={seed}"])
    with open(os.path.join(d, "config.yaml"), "w") as f:
        f.write(to_yaml(cfg))
    for name, vals in values.items():
        with open(os.path.join(d, "eval", f"{name}.json"), "w") as f:
            json.dump({s: {"average_mAP": v} for s, v in zip(("CB", "CN", "GZSL"), vals, strict=True)}, f)
    return d


def test_aggregate_mean_and_spread_over_seeds(tmp_path):
    from stovtal.selftrain.aggregate import main, write_aggregate

    a = _fake_workdir(str(tmp_path), 0, {"base": (0.8, 0.3, 0.5), "selftrained-n10": (0.7, 0.4, 0.6),
                                         "student-n10": (0.6, 0.2, 0.4), "selftrained-n10-r2": (0.5, 0.5, 0.5),
                                         "student-n10-r2": (0.1, 0.1, 0.1), "selftrained-n30": (0.9, 0.6, 0.7),
                                         "student-n30": (0.9, 0.6, 0.7)})
    b = _fake_workdir(str(tmp_path), 1, {"base": (0.6, 0.1, 0.3), "selftrained-n10": (0.5, 0.2, 0.2),
                                         "student-n10": (0.6, 0.2, 0.4), "selftrained-n10-r2": (0.7, 0.1, 0.3)})
    out = str(tmp_path / "agg")
    res = write_aggregate(out, [a, b])
    assert res["seeds"] == [0, 1]
    assert res["base"]["CB"]["mean"] == pytest.approx(0.7) and res["base"]["CB"]["std"] == pytest.approx(0.1)
    n10 = res["scale"][0]
    assert n10["num_unlabelled"] == 10 and [e["round"] for e in n10["rounds"]] == [1, 2]
    assert n10["rounds"][0]["teacher"]["GZSL"]["mean"] == pytest.approx(0.4)
    assert n10["rounds"][0]["teacher"]["GZSL"]["std"] == pytest.approx(0.2)
    assert n10["rounds"][0]["student"]["CN"]["std"] == pytest.approx(0.0)
    assert n10["rounds"][1]["teacher"]["CN"]["values"] == [0.5, 0.1]
    assert n10["rounds"][1]["student"]["CB"] == {"values": [0.1, None], "mean": pytest.approx(0.1), "std": 0.0,
                                                 "num_seeds": 1}
    n30 = res["scale"][1]  # seed 1 has not got there: the mean is seed 0's, the row says n/a
    assert n30["rounds"][0]["teacher"]["CN"]["values"] == [0.6, None]
    assert n30["rounds"][0]["teacher"]["CN"]["mean"] == pytest.approx(0.6)
    assert n30["rounds"][1]["teacher"]["CN"]["mean"] is None
    md = open(os.path.join(out, "aggregate.md")).read()
    assert "| 10 | mean +- std | 1 | 60.00 +- 10.00 | 30.00 +- 10.00 | 40.00 +- 20.00 |" in md
    assert "| 30 | 1 | 1 | n/a |" in md
    assert os.path.getsize(os.path.join(out, "plots", "scale_seeds.png")) > 0
    assert read_json(os.path.join(out, "aggregate.json"))["seeds"] == [0, 1]
    # the same seed twice is refused; so is a directory that is not a work directory
    c = str(tmp_path / "again")
    os.makedirs(c)
    shutil.copytree(a, os.path.join(c, "seed0"))
    with pytest.raises(ValueError, match="repeat a seed"):
        write_aggregate(out, [a, os.path.join(c, "seed0")])
    assert main(["--out", out, str(tmp_path)]) == 2


def test_seeds_option_runs_every_seed_and_aggregates(tmp_path, capsys):
    from stovtal.selftrain.__main__ import main

    work = tmp_path / "seeds"
    assert main(["--workdir", str(work), "--seeds", "0,1", *TINY]) == 0
    for s in (0, 1):
        assert read_json(str(work / f"seed{s}" / "results.json"))["seed"] == s
    agg = read_json(str(work / "aggregate.json"))
    assert agg["seeds"] == [0, 1] and agg["scale"][0]["num_unlabelled"] == 16
    want = [read_json(str(work / f"seed{s}" / "eval" / "selftrained-n16.json"))["CN"]["average_mAP"] for s in (0, 1)]
    assert agg["scale"][0]["rounds"][0]["teacher"]["CN"]["values"] == want
    assert (work / "plots" / "scale_seeds.png").stat().st_size > 0
    assert main(["--workdir", str(work), "--seeds", "0,0", *TINY]) == 2
    assert "--seeds" in capsys.readouterr().err
    assert main(["--workdir", str(work), "--seeds", "0,1", "--seed", "3", *TINY]) == 2
