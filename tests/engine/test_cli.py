import json
import os

import pytest

import stovtal  # noqa: F401
from stovtal.config import load_config

TINY = [
    "data.world.num_train=8", "data.world.num_web=0", "data.world.num_test=8",
    "data.world.snippets_range=[64,96]", "data.world.feat_dim=32",
    "model.embed_dim=32", "model.head_dim=32", "model.window=5",
    "train.epochs=1", "train.batch_size=4", "train.progress=false", "num_threads=1",
]


@pytest.mark.parametrize("module", ["train", "infer"])
def test_help_lists_options(module, capsys):
    import importlib

    main = importlib.import_module(f"stovtal.{module}").main
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--config" in out
    if module == "train":
        assert "train:" in out and "ema_decay" in out and "--resume" in out
    else:
        assert "--classes" in out and "--ckpt" in out


def test_config_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="train.epochs"):
        load_config("synthetic", ["train.epochs=0"])
    with pytest.raises(ValueError, match="nope"):
        load_config("synthetic", ["model.nope=1"])
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_config(str(tmp_path / "missing.yaml"))
    with pytest.raises(ValueError, match="annotation_file"):
        load_config("synthetic", ["data.synthetic=false"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ValueError, match="bad.yaml"):
        load_config(str(bad))
    for name in ("synthetic", "thumos14", "activitynet", "fineaction"):
        load_config(name)  # every shipped config is valid


def test_train_then_infer_with_another_vocabulary(tmp_path, capsys):
    from stovtal import infer, train

    world = str(tmp_path / "world")
    work = str(tmp_path / "run")
    assert train.main(["--workdir", work, f"data.world_dir={world}", *TINY]) == 0
    table = capsys.readouterr().out
    assert "CB" in table and "CN" in table and "GZSL" in table
    res = json.load(open(os.path.join(work, "eval.json")))
    assert 0.0 <= res["summary"]["CN"] <= 1.0 and res["num_videos"] == 8
    meta = json.load(open(os.path.join(world, "world.json")))
    novel = meta["novel"][:3]
    out = str(tmp_path / "pred.json")
    assert infer.main(["--ckpt", os.path.join(work, "best.pt"), "--out", out, "--classes", ",".join(novel)]) == 0
    preds = json.load(open(out))["results"]
    assert len(preds) == 8
    assert {d["label"] for dets in preds.values() for d in dets} <= set(novel)
    assert infer.main(["--ckpt", os.path.join(work, "best.pt"), "--out", out, "--classes", "not a class"]) == 2
    assert "no embedding" in capsys.readouterr().err
    # resume after the last epoch is a no-op that keeps the weights
    assert train.main(["--workdir", work, "--resume", "--no-eval", f"data.world_dir={world}", *TINY]) == 0
