"""``python -m stovtal.eval``."""

import json
import subprocess
import sys

import pytest

from stovtal.data import class_split
from stovtal.eval import detection_map


class _Result:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def _run(*args, capsys=None):
    """Run the CLI in-process (fast); the real ``python -m`` entry point is tested once."""
    from stovtal.eval.__main__ import main

    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return _Result(code, out.out, out.err)


def test_module_entry_point(tmp_path):
    r = subprocess.run([sys.executable, "-m", "stovtal.eval", "--gt", str(tmp_path / "none.json"),
                        "--pred", str(tmp_path / "none.json")], capture_output=True, text=True)
    assert r.returncode == 2 and "none.json: file not found" in r.stderr


def test_eval_cli(tmp_path, capsys):
    split = class_split("thumos14")
    b, n = split.base[0], split.novel[0]
    gt = {"database": {
        "v1": {"subset": "test", "duration": 60.0, "annotations": [{"segment": [1, 5], "label": b}]},
        "v2": {"subset": "test", "duration": 60.0, "annotations": [{"segment": [10, 20], "label": n}]},
        "v3": {"subset": "train", "duration": 60.0, "annotations": [{"segment": [10, 20], "label": n}]}}}
    pred = {"results": {"v1": [{"segment": [1, 5], "label": b, "score": 0.9}],
                        "v2": [{"segment": [12, 20], "label": n, "score": 0.4},
                               {"segment": [30, 40], "label": n, "score": 0.8}]}}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps(pred))
    r = _run("--gt", tmp_path / "gt.json", "--pred", tmp_path / "pred.json", "--subset", "test",
             "--tiou", "0.3:0.7:0.1", "--out", tmp_path / "out.json", "--localization", capsys=capsys)
    assert r.returncode == 0, r.stderr
    out = json.loads((tmp_path / "out.json").read_text())
    test_only = {"database": {k: v for k, v in gt["database"].items() if v["subset"] == "test"}}
    expected = detection_map(test_only, pred, [0.3, 0.4, 0.5, 0.6, 0.7])
    assert out["mAP"] == expected["mAP"] and out["tiou_thresholds"] == [0.3, 0.4, 0.5, 0.6, 0.7]
    assert f"{100 * expected['average_mAP']:.2f}" in r.stdout
    assert "localization" in out

    r = _run("--gt", tmp_path / "gt.json", "--pred", tmp_path / "pred.json", "--subset", "test",
             "--split", "kinetics", "--dataset", "thumos14", "--out", tmp_path / "ov.json", capsys=capsys)
    assert r.returncode == 0, r.stderr
    ov = json.loads((tmp_path / "ov.json").read_text())
    assert ov["partition"]["base"] == 1 and ov["partition"]["novel"] == 1
    assert ov["GZSL"]["base_mAP"] == [1.0] * 5 and "GZSL HM" in r.stdout

    r = _run("--gt", tmp_path / "missing.json", "--pred", tmp_path / "pred.json", capsys=capsys)
    assert r.returncode == 2 and "missing.json" in r.stderr
    r = _run("--gt", tmp_path / "gt.json", "--pred", tmp_path / "pred.json", "--tiou", "a:b", capsys=capsys)
    assert r.returncode == 2 and "--tiou" in r.stderr


def test_eval_cli_reversed_predictions_and_strict(tmp_path, capsys):
    gt = {"database": {"v1": {"subset": "test", "annotations": [{"segment": [1, 5], "label": "a"}]}}}
    pred = {"results": {"v1": [{"segment": [5, 1], "label": "a", "score": 0.9},
                               {"segment": [1, 5], "label": "a", "score": 0.5}],
                        "elsewhere": [{"segment": [1, 5], "label": "a", "score": 0.7}]}}
    (tmp_path / "gt.json").write_text(json.dumps(gt))  # no 'duration': accepted
    (tmp_path / "p.json").write_text(json.dumps(pred))
    out = tmp_path / "r.json"
    with pytest.warns(UserWarning, match="1 prediction"):
        r = _run("--gt", tmp_path / "gt.json", "--pred", tmp_path / "p.json", "--tiou", "0.5",
                 "--out", out, capsys=capsys)
    assert r.returncode == 0
    res = json.loads(out.read_text())
    # two false positives (reversed, absent video) ranked above the true positive: AP 1/3
    assert res["mAP"] == [1 / 3] and res["degenerate_predictions"] == 1
    assert res["absent_video_predictions"] == 1
    r = _run("--gt", tmp_path / "gt.json", "--pred", tmp_path / "p.json", "--strict", capsys=capsys)
    assert r.returncode == 2 and "end 1.0 < start 5.0" in r.stderr
