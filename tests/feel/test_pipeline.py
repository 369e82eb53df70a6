"""End-to-end FEEL on a tiny synthetic world: results schema, label hygiene, resume."""

import copy
import json
import os
import random
import subprocess
import sys

import pytest
import torch

from stovtal.engine.checkpoint import load_model, save_model
from stovtal.eval import nmi
from stovtal.feel.__main__ import main
from stovtal.feel.config import load_config
from stovtal.feel.data import load_feel_data
from stovtal.feel.pipeline import nearest_names, run_feel

TINY = [
    "iterations=2", "progress=false", "num_threads=1",
    "data.world.num_web=60", "data.world.num_test=20",
    "cluster.n_init=3", "cluster.k1=8", "cluster.k2=3",
    "model.embed_dim=32", "train.epochs=2", "train.batch_size=8", "train.lr=3e-3",
    "naming.vocab_npz=auto",
]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("feel_world")
    cfg = load_config(None, [*TINY, f"workdir={root}"])
    return str(root), load_feel_data(cfg.data, cfg.workdir, progress=False)


def _cfg(workdir, *extra):
    return load_config(None, [*TINY, f"workdir={workdir}", *extra])


@pytest.fixture(scope="module")
def full_run(world, tmp_path_factory):
    """An uninterrupted 2-iteration run, shared by the schema and the resume tests."""
    _, data = world
    workdir = tmp_path_factory.mktemp("feel_full")
    return run_feel(_cfg(workdir), data=data, log=lambda s: None), workdir


def test_end_to_end_results_schema_and_outcome(world, full_run):
    _, data = world
    res, tmp_path = full_run
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk == res
    assert set(res) == {"iterations", "final"}
    assert len(res["iterations"]) == 2
    for rec in res["iterations"]:
        assert set(rec) == {"nmi_kmeans", "nmi_cci", "selected_fraction", "average_mAP"}
        assert all(0.0 <= v <= 1.0 for v in rec.values())
    assert set(res["final"]) == {"average_mAP", "mAP"}
    assert len(res["final"]["mAP"]) == 7
    assert res["final"]["average_mAP"] == pytest.approx(sum(res["final"]["mAP"]) / 7)
    # IIS: per-cluster ceil(p0 * n_c) >= p0 overall in iteration 1, everything at the last one
    assert 0.5 <= res["iterations"][0]["selected_fraction"] < 1.0
    assert res["iterations"][1]["selected_fraction"] == 1.0
    # clustering carries real signal: better than a random partition with the same cluster sizes
    details = json.loads((tmp_path / "details.json").read_text())
    ck = load_model(tmp_path / "ckpt" / "iter_1.pt").meta
    true = [data.classes.index(a["annotations"][0]["label"]) for a in
            (data.train.gt["database"][v] for v in data.train.ids)]
    rng = random.Random(0)
    chance = []
    for _ in range(5):
        perm = ck["labels"].tolist()
        rng.shuffle(perm)
        chance.append(nmi(true, perm))
    assert res["iterations"][0]["nmi_kmeans"] > max(chance) + 0.05
    assert res["final"]["average_mAP"] > 0.0
    assert (tmp_path / "feel.png").stat().st_size > 0
    assert (tmp_path / "predictions_iter2.json").exists()
    assert len(details["cluster_names"]) == details["num_clusters"]


def test_training_labels_never_influence_training(world, tmp_path):
    """Scrambling the training videos' ground truth changes NMI only, nothing the method does."""
    _, data = world
    res_a = run_feel(_cfg(tmp_path / "a", "iterations=1"), data=data, log=lambda s: None)
    scrambled = copy.deepcopy(data)
    db = scrambled.train.gt["database"]
    labels = [a["label"] for v in db.values() for a in v["annotations"]]
    random.Random(1).shuffle(labels)
    it = iter(labels)
    for v in db.values():
        for a in v["annotations"]:
            a["label"] = next(it)
    res_b = run_feel(_cfg(tmp_path / "b", "iterations=1"), data=scrambled, log=lambda s: None)
    ma, mb = load_model(tmp_path / "a" / "ckpt" / "iter_1.pt"), load_model(tmp_path / "b" / "ckpt" / "iter_1.pt")
    assert ma.kind == "cola" and ma.model_config["num_classes"] == mb.model_config["num_classes"]
    ca, cb = ma.meta, mb.meta
    assert torch.equal(ca["labels"], cb["labels"]) and torch.equal(ca["selected"], cb["selected"])
    assert all(torch.equal(ma.state_dict[k], mb.state_dict[k]) for k in ma.state_dict)
    assert res_a["final"] == res_b["final"]
    assert res_a["iterations"][0]["nmi_cci"] != res_b["iterations"][0]["nmi_cci"]


def test_resume_after_killed_iteration_equals_uninterrupted_run(world, full_run, tmp_path):
    _, data = world
    full, _ = full_run
    class Killed(Exception):
        pass

    def kill_after_iteration_1(line: str) -> None:  # logged once the iteration's files are written
        if "iteration 1/" in line:
            raise Killed

    with pytest.raises(Killed):
        run_feel(_cfg(tmp_path / "resumed"), data=data, log=kill_after_iteration_1)
    state = json.loads((tmp_path / "resumed" / "state.json").read_text())
    assert len(state["records"]) == 1 and not (tmp_path / "resumed" / "results.json").exists()
    # a kill during iteration 2 leaves a stray temporary file at most; it must not matter
    (tmp_path / "resumed" / "ckpt" / ".iter_2.pt.partial.tmp").write_bytes(b"garbage")
    logs = []
    resumed = run_feel(_cfg(tmp_path / "resumed"), data=data, log=logs.append)
    assert any("resuming after iteration 1" in s for s in logs)
    assert resumed == full
    # rerunning a finished run does no work and returns the same results
    assert run_feel(_cfg(tmp_path / "resumed"), data=data, log=lambda s: None) == full
    # a different config in the same work directory is refused
    with pytest.raises(ValueError, match="different config"):
        run_feel(_cfg(tmp_path / "resumed", "cluster.lam=0.3"), data=data, log=lambda s: None)


def test_cli_bad_config_and_bad_data(tmp_path, capsys):
    assert main(["iis.schedule=fast"]) == 2
    assert "iis.schedule" in capsys.readouterr().err
    assert main(["--config", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err
    bad = tmp_path / "ann.json"
    bad.write_text("{not json")
    rc = main(["--workdir", str(tmp_path / "w"), "--no-progress", f"data.annotations={bad}",
               f"data.feature_dir={tmp_path}"])
    assert rc == 2 and "ann.json" in capsys.readouterr().err
    assert os.path.exists(tmp_path / "w")


def test_cluster_names_are_centred_against_hub_names():
    g = torch.Generator().manual_seed(0)
    names = ["a", "b", "c", "d"]
    protos = torch.nn.functional.normalize(torch.randn(4, 16, generator=g), dim=1)
    # every name shares a component, and every video a larger offset that is closest to the
    # hub "d" (a modality gap): uncentred, all clusters are named "d"
    shared = torch.randn(16, generator=g)
    emb = protos + 0.5 * shared
    gap = 3.0 * emb[3]
    labels = torch.arange(3).repeat_interleave(5)
    videos = protos[labels] + gap + 0.05 * torch.randn(15, 16, generator=g)
    uncentred = torch.nn.functional.normalize(videos, dim=1)
    clusters = [uncentred[labels == c].mean(0) for c in range(3)]
    assert all(int((c @ torch.nn.functional.normalize(emb, dim=1).T).argmax()) == 3 for c in clusters)
    named = nearest_names(videos, labels, emb, names)
    assert [r["name"] for r in named] == ["a", "b", "c"]
    assert [r["size"] for r in named] == [5, 5, 5]
    # an empty cluster id gets no name; a dimension mismatch is an error
    named = nearest_names(videos, torch.where(labels == 1, 2, labels), emb, names)
    assert named[1] == {"cluster": 1, "size": 0, "name": None}
    with pytest.raises(ValueError, match="dim"):
        nearest_names(videos[:, :8], labels, emb, names)


def test_infer_runs_feel_model_like_feel_itself(world, full_run, tmp_path, capsys):
    """FEEL's iteration-2 model file -> python -m stovtal.infer gives FEEL's own predictions file."""
    from stovtal.infer import main as infer_main

    root, _ = world
    _, workdir = full_run
    ckpt = str(workdir / "ckpt" / "iter_2.pt")
    expected = json.loads((workdir / "predictions_iter2.json").read_text())
    assert sum(len(v) for v in expected["results"].values()) > 0
    # the run's world was written by the `world` fixture into another directory: point at it
    world_dir = f"data.world_dir={os.path.join(root, 'world')}"
    out = tmp_path / "pred.json"
    assert infer_main(["--ckpt", ckpt, "--out", str(out), "--device", "cpu", "--eval",
                       "--eval-json", str(tmp_path / "m.json"), world_dir]) == 0
    assert json.loads(out.read_text()) == expected
    full = json.loads((workdir / "state.json").read_text())["records"][1]
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["average_mAP"] == pytest.approx(full["average_mAP"], abs=1e-12)
    assert metrics["mAP"] == pytest.approx(full["mAP"], abs=1e-12)
    assert "cluster-matched mAP" in capsys.readouterr().out
    # a FEEL model's vocabulary is its clusters
    assert infer_main(["--ckpt", ckpt, "--out", str(out), "--classes", "a,b", world_dir]) == 2
    assert "--classes" in capsys.readouterr().err

    # a model file of a FEEL version that did not store its run config: refused without --config
    # (one-line error from the command line), loads with FEEL's defaults and the run's overrides
    mf = load_model(ckpt)
    old = str(tmp_path / "old.pt")
    save_model(old, mf.model_config, mf.state_dict, kind="cola",
               meta={k: v for k, v in mf.meta.items() if k != "run_config"})
    proc = subprocess.run([sys.executable, "-m", "stovtal.infer", "--ckpt", old, "--out", str(out)],
                          capture_output=True, text=True, timeout=300,
                          env={**{k: v for k, v in os.environ.items() if k != "STOVTAL_DEBUG"},
                               "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"})
    errors = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr
    assert "old.pt" in errors[0] and "no run config" in errors[0] and "--config" in errors[0]
    out.unlink()
    assert infer_main(["--ckpt", old, "--out", str(out), "--config", "default", *TINY,
                       f"workdir={workdir}", world_dir]) == 0
    assert json.loads(out.read_text()) == expected
