"""The authors' retraining recipe: base-class labelled set on real-format data, the retraining
schedule of the retrain section, and the teacher's initial weights."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from stovtal.data import save_embeddings
from stovtal.selftrain.config import ConfigError, load_config, validate
from stovtal.selftrain.stages import make_context


def _write_real_format(root):
    """A tiny dataset in the user-data formats whose training subset holds novel-class actions."""
    feats = root / "features"
    feats.mkdir()
    rng = np.random.default_rng(0)
    train = {
        "base_only": [("a", 2, 10)],
        "base_and_novel": [("a", 2, 10), ("c", 20, 30)],
        "novel_only": [("c", 5, 15)],
        "other_base": [("b", 10, 20), ("a", 25, 30)],
    }
    db = {}
    for vid, anns in train.items():
        db[vid] = {"subset": "train", "duration": 40.0,
                   "annotations": [{"segment": [s, e], "label": c} for c, s, e in anns]}
    db["t0"] = {"subset": "test", "duration": 40.0, "annotations": [{"segment": [3, 9], "label": "d"}]}
    web = {f"u{i}": {"subset": "web", "duration": 40.0, "annotations": []} for i in range(3)}
    for vid in [*db, *web]:
        np.save(feats / f"{vid}.npy", rng.standard_normal((300, 8)).astype(np.float32))
    (root / "ann.json").write_text(json.dumps({"database": db}))
    (root / "web.json").write_text(json.dumps({"database": web}))
    save_embeddings(root / "vocab.npz", ["a", "b", "c", "d"], rng.standard_normal((4, 8)))
    return [f"data.feature_dir={feats}", f"data.annotations={root / 'ann.json'}",
            f"data.unlabelled={root / 'web.json'}", f"data.vocab={root / 'vocab.npz'}",
            "data.synthetic=false", "data.base_classes=[a,b]", "data.novel_classes=[c,d]",
            "data.feat_dim=8", "progress=false", "num_threads=1"]


def test_labelled_set_holds_base_class_videos_only(tmp_path):
    args = _write_real_format(tmp_path)
    cfg = load_config(None, args)
    validate(cfg)
    ctx = make_context(cfg, str(tmp_path / "run"), log=lambda _: None)
    ds = ctx.labelled_dataset()
    # videos with a novel-class action (c) are left out; the rest are class-agnostic
    assert sorted(ds.video_ids) == ["base_only", "other_base"]
    assert {a["label"] for info in ds.infos for a in info["annotations"]} == {"action"}
    assert sum(len(info["annotations"]) for info in ds.infos) == 3
    cfg = load_config(None, [*args, "data.base_classes=[d]", "data.novel_classes=[a,b,c]"])
    ctx = make_context(cfg, str(tmp_path / "run2"), log=lambda _: None)
    with pytest.raises(ConfigError, match="only base-class actions"):
        ctx.labelled_dataset()


def test_retraining_schedule_follows_the_base_run():
    from stovtal.selftrain.config import retrain_train_overrides

    cfg = load_config(None, ["train.lr=4e-4", "train.epochs=30", "retrain.train.batch_size=2"])
    over = retrain_train_overrides(cfg)
    assert over["lr"] == pytest.approx(4e-5)  # the authors: base lr / 10
    assert over["warmup_epochs"] == 2 and over["epochs"] == 4  # 2 warm-up + 2 epochs
    assert over["batch_size"] == 2
    over = retrain_train_overrides(load_config(None, ["retrain.lr_scale=0.5", "retrain.epochs=4"]))
    assert over["lr"] == pytest.approx(2.5e-4) and over["epochs"] == 6
    for bad, key in (("retrain.train.lr=1e-3", "retrain.train.lr"),
                     ("retrain.train.epochs=3", "retrain.train.epochs"),
                     ("retrain.lr_scale=0", "retrain.lr_scale"),
                     ("retrain.teacher_init=best", "retrain.teacher_init")):
        with pytest.raises(ConfigError, match=key):
            validate(load_config(None, [bad]))


@pytest.mark.parametrize("init,weights", [("raw", "model"), ("ema", "ema")])
def test_teacher_starts_from_the_chosen_base_weights(tiny_run, tmp_path, monkeypatch, init, weights):
    from stovtal.engine.checkpoint import load_model
    from stovtal.selftrain import stages, teacher

    ctx, _ = tiny_run
    work = tmp_path / "run"
    shutil.copytree(ctx.workdir, work, ignore=shutil.ignore_patterns("retrain", "eval", "report*"))
    from .conftest import TINY

    cfg = load_config(None, [*TINY, f"retrain.teacher_init={init}"])
    ctx2 = make_context(cfg, str(work), log=lambda _: None)
    seen = {}

    class Stop(Exception):
        pass

    def capture(student, base_state, *args, **kwargs):
        seen["state"] = base_state
        raise Stop

    monkeypatch.setattr(teacher, "make_trainer", capture)
    with pytest.raises(Stop):
        stages.stage_retrain(ctx2, ctx2.default_scale())
    want = load_model(work / "base" / "last.pt", weights=weights).state_dict
    raw = load_model(work / "base" / "last.pt", weights="model").state_dict
    ema = load_model(work / "base" / "last.pt", weights="ema").state_dict
    assert any(not torch.equal(raw[k], ema[k]) for k in raw)  # the choice matters
    assert all(torch.equal(seen["state"][k], want[k]) for k in want)

