"""The error contract of the commands: a user error is one ``error:`` line naming the file,
video or key, and exit status 2; ``--debug`` shows the traceback.

Each case runs the real ``python -m stovtal.<command>`` in a subprocess; the cases of one test
start together (the interpreter start-up dominates) and are checked one by one.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest

import stovtal

MODEL = ["model.embed_dim=16", "model.head_dim=16", "model.num_heads=2", "model.window=7"]


def _env() -> dict[str, str]:
    root = os.path.dirname(os.path.dirname(os.path.abspath(stovtal.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    env.pop("STOVTAL_DEBUG", None)
    return env


def run_all(cases: dict[str, list[str]], cwd: str | None = None, timeout: float = 600) -> dict[str, tuple]:
    """Start ``python -m stovtal.<args>`` for every case at once; ``{case: (rc, stderr)}``."""
    procs = {name: subprocess.Popen([sys.executable, "-m", *args], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, env=_env(), cwd=cwd)
             for name, args in cases.items()}
    out = {}
    for name, p in procs.items():
        _, err = p.communicate(timeout=timeout)
        out[name] = (p.returncode, err)
    return out


def assert_user_error(case: str, result: tuple, *names: str) -> None:
    rc, err = result
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, f"{case}: rc {rc}\n{err}"
    for name in names:
        assert name in lines[0], f"{case}: {name!r} not in {lines[0]!r}"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny synthetic world on disk, used as the user's own data (``data.synthetic=false``)."""
    from stovtal.data.synthetic import SyntheticConfig, SyntheticWorld

    root = str(tmp_path_factory.mktemp("user_errors") / "w")
    SyntheticWorld(SyntheticConfig(num_train=6, num_web=4, num_test=4, feat_dim=16,
                                   snippets_range=(40, 64))).write(root, progress=False)
    return root


def selftrain_data(world: str, **over: str) -> list[str]:
    meta = json.load(open(os.path.join(world, "world.json")))
    d = {"data.synthetic": "false", "data.feature_dir": os.path.join(world, "features"),
         "data.annotations": os.path.join(world, "annotations.json"),
         "data.unlabelled": os.path.join(world, "web.json"), "data.vocab": os.path.join(world, "vocab.npz"),
         "data.base_classes": f"[{','.join(meta['base'])}]", "data.novel_classes": f"[{','.join(meta['novel'])}]",
         "data.feat_dim": "16", **over}
    return [f"{k}={v}" for k, v in d.items()] + MODEL + ["train.epochs=1", "progress=false", "num_threads=1"]


BAD_FEATURES = {
    "truncated": lambda p: open(p, "wb").write(open(p, "rb").read()[:100]),
    "wrong_dim": lambda p: np.save(p, np.zeros((50, 8), np.float32)),
    "nan": lambda p: np.save(p, np.full((50, 16), np.nan, np.float32)),
    "inf": lambda p: np.save(p, np.full((50, 16), np.inf, np.float32)),
    "zero_rows": lambda p: np.save(p, np.zeros((0, 16), np.float32)),
    "pickle": lambda p: open(p, "wb").write(pickle.dumps({"x": 1})),
    "object_array": lambda p: np.save(p, np.array([{"x": 1}], dtype=object), allow_pickle=True),
    "int32": lambda p: np.save(p, np.zeros((50, 16), np.int32)),
    "one_d": lambda p: np.save(p, np.zeros(50, np.float32)),
}


def test_bad_inputs_of_selftrain(world, tmp_path):
    db = json.load(open(os.path.join(world, "annotations.json")))["database"]
    cases, names = {}, {}
    for case, corrupt in BAD_FEATURES.items():
        feats = tmp_path / case
        shutil.copytree(os.path.join(world, "features"), feats)
        for vid in (v for v, info in db.items() if info["subset"] == "train"):  # whichever is read first
            corrupt(str(feats / f"{vid}.npy"))
        cases[case] = ["stovtal.selftrain", "--stage", "base", "--workdir", str(tmp_path / f"run_{case}"),
                       *selftrain_data(world, **{"data.feature_dir": str(feats)})]
        names[case] = ("video 'train_", f"{feats}{os.sep}train_")
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"database": {"v": ')
    no_db = tmp_path / "no_db.json"
    no_db.write_text('{"videos": {}}')
    for case, path in (("malformed_json", bad_json), ("no_database", no_db)):
        cases[case] = ["stovtal.selftrain", "--stage", "base", "--workdir", str(tmp_path / f"run_{case}"),
                       *selftrain_data(world, **{"data.annotations": str(path)})]
        names[case] = (str(path),)
    # a base/last.pt of another architecture: the resumed trainer names the file
    other = tmp_path / "run_other_arch"
    os.makedirs(other / "base")
    import torch

    from stovtal.models import ActionLocalizer, LocalizerConfig

    m = ActionLocalizer(LocalizerConfig(input_dim=16, embed_dim=8, head_dim=8, num_heads=2, window=7))
    torch.save({"model": m.state_dict()}, other / "base" / "last.pt")
    cases["other_architecture"] = ["stovtal.selftrain", "--stage", "base", "--workdir", str(other),
                                   *selftrain_data(world)]
    names["other_architecture"] = (str(other / "base" / "last.pt"), "do not fit")
    cases["config_nan"] = ["stovtal.selftrain", "--workdir", str(tmp_path / "x"), "pseudo.threshold=.nan"]
    names["config_nan"] = ("pseudo.threshold",)
    # base.checkpoint: a missing file, a localizer for 8-d features (the data's are 16-d), a class-aware one
    from stovtal.engine.checkpoint import save_model

    missing = str(tmp_path / "no_such_model.pt")
    for case, kw in (("base_missing", None), ("base_input_dim", {"input_dim": 8}),
                     ("base_class_aware", {"input_dim": 16, "head_num_classes": 3})):
        path = missing
        if kw is not None:
            path = str(tmp_path / f"{case}.pt")
            cfg = LocalizerConfig(embed_dim=8, head_dim=8, num_heads=2, window=7, **kw)
            save_model(path, cfg, ActionLocalizer(cfg).state_dict())
        cases[case] = ["stovtal.selftrain", "--stage", "base", "--workdir", str(tmp_path / f"run_{case}"),
                       *selftrain_data(world, **{"base.checkpoint": path})]
        names[case] = ("base.checkpoint", path)
    names["base_input_dim"] += ("input_dim 8", "16 channels")
    names["base_class_aware"] += ("class-aware",)
    results = run_all(cases)
    for case, res in results.items():
        assert_user_error(case, res, *names[case])


def test_bad_inputs_of_train_infer_eval(world, tmp_path):
    from stovtal import train

    meta = json.load(open(os.path.join(world, "world.json")))
    data = [f"data.world_dir={world}", "data.world.num_train=6", "data.world.num_web=4",
            "data.world.num_test=4", "data.world.feat_dim=16", "data.world.snippets_range=[40,64]",
            *MODEL, "train.epochs=1", "train.batch_size=2", "train.progress=false", "num_threads=1"]
    work = tmp_path / "trained"
    assert train.main(["--workdir", str(work), "--no-eval", *data]) == 0
    ckpt = str(work / "last.pt")
    empty_ckpt = tmp_path / "empty.pt"
    empty_ckpt.write_bytes(b"")
    empty_vocab = tmp_path / "vocab.txt"
    empty_vocab.write_text("\n")
    no_db = tmp_path / "no_db.json"
    no_db.write_text('{"videos": {}}')
    own = ["data.synthetic=false", f"data.feature_dir={os.path.join(world, 'features')}",
           f"data.annotations={no_db}", "data.train_subset=train", "data.test_subset=test",
           "data.feat_dim=16", f"data.base_classes=[{','.join(meta['base'])}]",
           f"data.novel_classes=[{','.join(meta['novel'])}]", f"text.npz={os.path.join(world, 'vocab.npz')}"]
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"database": {"v": {"subset": "test", "duration": 10.0, "annotations": [
        {"segment": [1, 2], "label": "A"}]}}}))
    cases = {
        "missing_ckpt": (["stovtal.infer", "--ckpt", str(tmp_path / "none.pt"), "--out", str(tmp_path / "p.json")],
                         ("none.pt",)),
        "empty_ckpt": (["stovtal.infer", "--ckpt", str(empty_ckpt), "--out", str(tmp_path / "p.json")],
                       ("empty.pt",)),
        "ckpt_other_architecture": (["stovtal.infer", "--ckpt", ckpt, "--out", str(tmp_path / "p.json"),
                                     "model.embed_dim=8", "model.head_dim=8"], (ckpt, "do not fit")),
        "empty_vocab_file": (["stovtal.infer", "--ckpt", ckpt, "--out", str(tmp_path / "p.json"),
                              "--vocab-file", str(empty_vocab)], ("vocab.txt",)),
        "train_no_database": (["stovtal.train", "--workdir", str(tmp_path / "t2"), *own, *MODEL],
                              ("no_db.json", "database")),
        "train_config_key": (["stovtal.train", "--workdir", str(tmp_path / "t3"), "train.epochs=0"],
                             ("train.epochs",)),
        "eval_missing_predictions": (["stovtal.eval", "--gt", str(gt), "--pred", str(tmp_path / "none.json")],
                                    ("none.json",)),
        "feel_config_key": (["stovtal.feel", "--workdir", str(tmp_path / "f"), "iis.schedule=fast"],
                            ("iis.schedule",)),
        "text_missing_vocab": (["stovtal.text", "encode", "--vocab", str(tmp_path / "nope.txt"), "--model", "x",
                                "--checkpoint", "y", "--out", str(tmp_path / "o.npz")], ("nope.txt",)),
        "data_web_missing_world": (["stovtal.data", "web", "--root", str(tmp_path / "nowhere"),
                                    "--num-videos", "3"], ("nowhere",)),
    }
    results = run_all({k: v[0] for k, v in cases.items()})
    for case, res in results.items():
        assert_user_error(case, res, *cases[case][1])


def test_debug_shows_the_traceback(tmp_path):
    args = ["stovtal.eval", "--gt", str(tmp_path / "none.json"), "--pred", str(tmp_path / "none.json")]
    res = run_all({"plain": args, "debug": [*args, "--debug"]})
    assert_user_error("plain", res["plain"], "none.json")
    rc, err = res["debug"]
    assert rc == 1 and "Traceback" in err and "none.json" in err


def test_busy_workdir_names_the_holder(tmp_path):
    from stovtal.utils.workdir_lock import workdir_lock

    work = tmp_path / "run"
    with workdir_lock(work):
        res = run_all({"busy": ["stovtal.selftrain", "--workdir", str(work), "--quiet", "num_threads=1"]})
    assert_user_error("busy", res["busy"], str(work), f"PID {os.getpid()}")


def _with_duplicate(db: dict, vid: str, subset: str) -> str:
    """Annotation JSON text in which ``vid`` appears a second time, with another subset."""
    text = json.dumps({"database": db})
    copy = json.dumps({**db[vid], "subset": subset})
    return text[:-2] + f', "{vid}": {copy}' + "}}"


def test_bad_values_and_silent_results_are_errors(world, tmp_path):
    """Non-finite or out-of-range config values name their key before any work; labels outside
    the vocabulary and repeated video ids name the video / file instead of changing results."""
    meta = json.load(open(os.path.join(world, "world.json")))
    db = json.load(open(os.path.join(world, "annotations.json")))["database"]
    train_vid = next(v for v, info in sorted(db.items()) if info["subset"] == "train" and info["annotations"])
    test_vid = next(v for v, info in sorted(db.items()) if info["subset"] == "test")
    typo = {**db, train_vid: {**db[train_vid], "annotations": [
        {**db[train_vid]["annotations"][0], "label": "NotAClass"}]}}
    (tmp_path / "typo.json").write_text(json.dumps({"database": typo}))
    (tmp_path / "leak.json").write_text(_with_duplicate(db, test_vid, "train"))
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps({"results": {}}))
    own_train = ["data.synthetic=false", f"data.feature_dir={os.path.join(world, 'features')}",
                 "data.train_subset=train", "data.test_subset=test", "data.feat_dim=16",
                 f"data.base_classes=[{','.join(meta['base'])}]", f"data.novel_classes=[{','.join(meta['novel'])}]",
                 f"text.npz={os.path.join(world, 'vocab.npz')}", *MODEL]
    st = ["stovtal.selftrain", "--stage", "base"]
    cases = {
        "selftrain model.nms.min_score=.nan": ([*st, "--workdir", str(tmp_path / "a"), "model.nms.min_score=.nan"],
                                               ("model.nms.min_score",)),
        "selftrain model.nms.sigma=.nan": ([*st, "--workdir", str(tmp_path / "a"), "model.nms.sigma=.nan"],
                                           ("model.nms.sigma",)),
        "selftrain train.weight_decay=.nan": ([*st, "--workdir", str(tmp_path / "a"), "train.weight_decay=.nan"],
                                              ("train.weight_decay",)),
        "selftrain train.lr=.inf": ([*st, "--workdir", str(tmp_path / "a"), "train.lr=.inf"], ("train.lr",)),
        "selftrain model.pre_nms_threshold=.nan": ([*st, "--workdir", str(tmp_path / "a"),
                                                    "model.pre_nms_threshold=.nan"], ("model.pre_nms_threshold",)),
        "train train.lr=.inf": (["stovtal.train", "--workdir", str(tmp_path / "b"), "train.lr=.inf"],
                                ("train.lr",)),
        "feel localize.nms_iou=.nan": (["stovtal.feel", "--workdir", str(tmp_path / "c"), "localize.nms_iou=.nan"],
                                       ("localize.nms_iou",)),
        "feel localize.class_threshold=.nan": (["stovtal.feel", "--workdir", str(tmp_path / "c"),
                                                "localize.class_threshold=.nan"], ("localize.class_threshold",)),
        "feel localize.thresholds=[-1]": (["stovtal.feel", "--workdir", str(tmp_path / "c"),
                                           "localize.thresholds=[-1]"], ("localize.thresholds",)),
        "selftrain label not in the vocabulary": (
            [*st, "--workdir", str(tmp_path / "d"),
             *selftrain_data(world, **{"data.annotations": str(tmp_path / "typo.json")})],
            (train_vid, "typo.json", "NotAClass")),
        "train label not in the vocabulary": (
            ["stovtal.train", "--workdir", str(tmp_path / "e"), *own_train,
             f"data.annotation_file={tmp_path / 'typo.json'}"], (train_vid, "typo.json", "NotAClass")),
        "selftrain test video repeated as train": (
            [*st, "--workdir", str(tmp_path / "f"),
             *selftrain_data(world, **{"data.annotations": str(tmp_path / "leak.json")})],
            ("leak.json", test_vid, "twice")),
        "eval ground truth repeated": (["stovtal.eval", "--gt", str(tmp_path / "leak.json"), "--pred", str(pred)],
                                       ("leak.json", test_vid, "twice")),
    }
    results = run_all({k: v[0] for k, v in cases.items()})
    for case, res in results.items():
        assert_user_error(case, res, *cases[case][1])
    assert not any((tmp_path / d).exists() for d in "abc")  # refused before any work


def test_torchrun_ranks_stop_together_on_a_busy_work_directory(tmp_path):
    """Rank 0 takes the work-directory lock for the job; when another run holds it, every rank
    stops with the same one-line error (none waits for the others)."""
    from stovtal.utils.workdir_lock import workdir_lock

    work, logs = tmp_path / "work", tmp_path / "logs"
    work.mkdir()
    # each rank's stderr in its own file (-r 2), so that the ranks' lines cannot interleave
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "--log-dir", str(logs), "-r", "2",
           "-m", "stovtal.selftrain", "--workdir", str(work), "--quiet", "num_threads=1"]
    with workdir_lock(work):
        proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0, proc.stderr[-3000:]
    rank_logs = sorted(logs.rglob("stderr.log"))
    assert len(rank_logs) == 2, (rank_logs, proc.stderr[-3000:])
    for log in rank_logs:
        lines = [ln for ln in log.read_text().splitlines() if ln.startswith("error:")]
        assert len(lines) == 1 and f"in use by PID {os.getpid()}" in lines[0], log.read_text()[-3000:]
    assert not (work / "world").exists()  # no rank started working
