"""The CLI: --help, and bad configurations rejected before any work starts."""

from __future__ import annotations

import os
import subprocess

import pytest

pytest.importorskip("stovtal.engine", reason="needs the models/extract branches")

from stovtal.selftrain.__main__ import main
from stovtal.selftrain.config import ConfigError, load_config, validate

from .conftest import PYTHON, subprocess_env


def test_help_lists_the_options():
    r = subprocess.run([PYTHON, "-m", "stovtal.selftrain", "--help"], capture_output=True, text=True,
                       env=subprocess_env(), timeout=120)
    assert r.returncode == 0, r.stderr
    for word in ("--config", "--workdir", "--stage", "--scale", "--seeds", "retrain.rounds", "threshold_by_n",
                 "key=value", "pseudolabel", "retrain",
                 "./runs/selftrain"):
        assert word in r.stdout


@pytest.mark.parametrize("override, key", [
    ("pseudo.threshold=-0.1", "pseudo.threshold"),
    ("pseudo.min_num=-1", "pseudo.min_num"),
    ("pseudo.threshold_mode=bogus", "pseudo.threshold_mode"),
    ("retrain.teacher_decay=1.5", "retrain.teacher_decay"),
    ("retrain.student_init=nothing", "retrain.student_init"),
    ("retrain.labelled_fraction=1.0", "retrain.labelled_fraction"),
    ("retrain.labelled_fraction=-0.2", "retrain.labelled_fraction"),
    ("eval.tiou_thresholds=[0.5,1.5]", "eval.tiou_thresholds"),
    ("train.epochs=0", "train"),
    ("model.window=4", "model"),
    ("data.world.num_web=-3", "data.world"),
    ("pseudo.no_such_key=1", "no_such_key"),
    ("pseudo.threshold=abc", "threshold"),
    ("retrain.rounds=0", "retrain.rounds"),
    ("retrain.rounds=1.5", "retrain.rounds"),
    ("retrain.rounds=two", "retrain.rounds"),
    ("retrain.epoch_length=1", "retrain.epoch_length"),
    ("retrain.epoch_length=-4", "retrain.epoch_length"),
    ("retrain.epoch_length=2.5", "retrain.epoch_length"),
    ("pseudo.threshold_by_n={1000: 1.5}", "pseudo.threshold_by_n.1000"),
    ("pseudo.threshold_by_n={0: 0.1}", "pseudo.threshold_by_n"),
    ("pseudo.threshold_by_n={many: 0.1}", "threshold_by_n"),
])
def test_bad_values_fail_before_work(tmp_path, capsys, override, key):
    workdir = tmp_path / "run"
    assert main(["--workdir", str(workdir), override]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and key in err
    assert not workdir.exists()  # nothing was started


def test_missing_feature_dir(tmp_path, capsys):
    for name in ("ann.json", "web.json"):
        (tmp_path / name).write_text('{"database": {}}')
    (tmp_path / "vocab.npz").write_bytes(b"")
    missing = tmp_path / "no_features"
    args = ["data.synthetic=false", f"data.feature_dir={missing}", f"data.annotations={tmp_path / 'ann.json'}",
            f"data.unlabelled={tmp_path / 'web.json'}", f"data.vocab={tmp_path / 'vocab.npz'}",
            "data.base_classes=[a]", "data.novel_classes=[b]"]
    assert main(["--workdir", str(tmp_path / "run"), *args]) == 2
    err = capsys.readouterr().err
    assert "data.feature_dir" in err and str(missing) in err and "does not exist" in err
    with pytest.raises(ConfigError, match="data.annotations"):
        validate(load_config(None, ["data.synthetic=false", f"data.feature_dir={tmp_path}"]))
    # a missing --config file names the file
    assert main(["--config", str(tmp_path / "nope.yaml"), "--workdir", str(tmp_path / "run")]) == 2
    assert "nope.yaml" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "run")


def test_bad_scale(tmp_path, capsys):
    assert main(["--workdir", str(tmp_path / "r"), "--scale", "10,x"]) == 2
    assert "--scale" in capsys.readouterr().err
    assert main(["--workdir", str(tmp_path / "r"), "--scale", "10,10"]) == 2
    assert "duplicate" in capsys.readouterr().err


def test_subprocess_bad_threshold(tmp_path):
    r = subprocess.run([PYTHON, "-m", "stovtal.selftrain", "--workdir", str(tmp_path / "w"),
                        "pseudo.threshold=-1"], capture_output=True, text=True, env=subprocess_env(), timeout=120)
    assert r.returncode == 2
    assert "pseudo.threshold" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "w").exists()
