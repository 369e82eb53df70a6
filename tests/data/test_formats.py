"""Formats: round trips and every bad-input case (errors name the video and the file)."""

import json
import warnings

import numpy as np
import pytest

from stovtal.data import (
    DataError,
    FeatureGrid,
    load_annotations,
    load_embeddings,
    load_features,
    load_predictions,
    load_pseudo_labels,
    save_embeddings,
    write_annotations,
    write_predictions,
)

CLASSES = ["run", "jump"]


def _db(**video):
    base = {"subset": "test", "duration": 10.0, "annotations": [{"segment": [1.0, 2.0], "label": "run"}]}
    base.update(video)
    return {"database": {"vid1": base}}


def _write(tmp_path, obj, name="ann.json"):
    p = tmp_path / name
    p.write_text(json.dumps(obj))
    return p


def test_annotation_round_trip_keeps_unknown_keys(tmp_path):
    db = {"a": {"subset": "train", "duration": 5.0, "fps": 25, "url": "x",
                "annotations": [{"segment": [0.5, 1.5], "label": "jump", "note": 1}]},
          "b": {"subset": "test", "duration": 3, "annotations": []}}
    write_annotations(tmp_path / "a.json", db, version="1.3")
    out = load_annotations(tmp_path / "a.json", classes=CLASSES)
    assert out["version"] == "1.3"
    assert out["database"]["a"]["url"] == "x" and out["database"]["a"]["annotations"][0]["note"] == 1
    assert out["database"]["b"]["duration"] == 3.0
    assert list(load_annotations(tmp_path / "a.json", subset="train")["database"]) == ["a"]


@pytest.mark.parametrize(
    ("video", "message"),
    [
        ({"duration": None}, "duration"),
        ({"duration": -1.0}, "duration"),
        ({"duration": float("nan")}, "duration"),
        ({"annotations": [{"segment": [3.0, 2.0], "label": "run"}]}, "end 2.0 < start 3.0"),
        ({"annotations": [{"segment": [1.0, 2.0], "label": "swim"}]}, "not in the vocabulary"),
        ({"annotations": [{"segment": [float("nan"), 2.0], "label": "run"}]}, "finite"),
        ({"annotations": [{"segment": [1.0], "label": "run"}]}, "[start, end]"),
        ({"annotations": [{"label": "run"}]}, "needs 'segment'"),
        ({"annotations": [{"segment": [11.0, 12.0], "label": "run"}]}, "outside"),
        ({"annotations": "x"}, "must be a list"),
    ],
)
def test_bad_annotations_name_video_and_file(tmp_path, video, message):
    obj = _db(**video)
    if video.get("duration", 0) is None:
        del obj["database"]["vid1"]["duration"]
    p = _write(tmp_path, obj)
    with pytest.raises(DataError) as err:
        load_annotations(p, classes=CLASSES)
    assert "vid1" in str(err.value) and str(p) in str(err.value) and message in str(err.value)


def test_segment_outside_duration_is_clipped_with_warning(tmp_path):
    p = _write(tmp_path, _db(annotations=[{"segment": [-1.0, 12.0], "label": "run"}]))
    with pytest.warns(UserWarning, match="clipped"):
        out = load_annotations(p)
    assert out["database"]["vid1"]["annotations"][0]["segment"] == [0.0, 10.0]


def test_skip_mode_drops_bad_video_with_warning(tmp_path):
    obj = _db()
    obj["database"]["bad"] = {"subset": "test", "annotations": []}
    p = _write(tmp_path, obj)
    with pytest.warns(UserWarning, match="'bad'.*missing 'duration'.*skipped"):
        out = load_annotations(p, on_error="skip")
    assert list(out["database"]) == ["vid1"]


def test_missing_and_corrupt_annotation_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_annotations(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        load_annotations(bad)
    with pytest.raises(DataError, match="database"):
        load_annotations(_write(tmp_path, {"results": {}}))


def test_pseudo_labels_need_actionness(tmp_path):
    good = _db(annotations=[{"segment": [1.0, 2.0], "label": "run", "actionness": 0.7}])
    assert load_pseudo_labels(_write(tmp_path, good))["database"]["vid1"]["annotations"][0]["actionness"] == 0.7
    for bad in (None, 1.5, "x"):
        ann = {"segment": [1.0, 2.0], "label": "run"}
        if bad is not None:
            ann["actionness"] = bad
        p = _write(tmp_path, _db(annotations=[ann]), "pl.json")
        with pytest.raises(DataError, match="vid1.*pl.json.*actionness"):
            load_pseudo_labels(p)


def test_predictions_round_trip_and_errors(tmp_path):
    res = {"v": [{"segment": [1, 2], "label": "run", "score": 0.5}]}
    write_predictions(tmp_path / "p.json", res)
    assert load_predictions(tmp_path / "p.json", CLASSES)["results"]["v"][0]["segment"] == [1.0, 2.0]
    cases = [
        ({"segment": [2, 1], "label": "run", "score": 0.5}, "end 1.0 < start 2.0"),
        ({"segment": [1, 2], "label": "run", "score": float("nan")}, "score"),
        ({"segment": [1, 2], "label": "swim", "score": 0.5}, "not in the vocabulary"),
        ({"segment": [1, 2], "label": "run"}, "needs"),
    ]
    for pred, msg in cases:
        p = _write(tmp_path, {"results": {"v": [pred]}}, "bad.json")
        with pytest.raises(DataError) as err:
            load_predictions(p, CLASSES)
        assert "'v'" in str(err.value) and "bad.json" in str(err.value) and msg in str(err.value)


def test_feature_file_errors_name_video_and_file(tmp_path):
    np.save(tmp_path / "ok.npy", np.ones((4, 3), np.float32))
    assert load_features(tmp_path, "ok", feat_dim=3).shape == (4, 3)
    assert isinstance(load_features(tmp_path, "ok"), np.memmap)
    np.save(tmp_path / "rank3.npy", np.ones((2, 2, 2), np.float32))
    np.save(tmp_path / "nan.npy", np.array([[0.0, np.nan]], np.float32))
    np.save(tmp_path / "inf.npy", np.array([[0.0, np.inf]], np.float32))
    np.save(tmp_path / "int.npy", np.ones((2, 3), np.int64))
    np.save(tmp_path / "empty.npy", np.ones((0, 3), np.float32))
    (tmp_path / "garbage.npy").write_bytes(b"\x93NUMPY garbage")
    cases = [("missing", FileNotFoundError, "not found"), ("rank3", DataError, "rank 2"),
             ("nan", DataError, "NaN"), ("inf", DataError, "NaN or Inf"), ("int", DataError, "floating"),
             ("empty", DataError, "T = 0"), ("garbage", DataError, "unreadable"),
             ("ok", DataError, "dim 3 != expected 5")]
    for vid, exc, msg in cases:
        with pytest.raises(exc) as err:
            load_features(tmp_path, vid, feat_dim=5 if vid == "ok" else None)
        assert f"'{vid}'" in str(err.value) and str(tmp_path / f"{vid}.npy") in str(err.value)
        assert msg in str(err.value)


def test_embeddings_round_trip_and_errors(tmp_path):
    names = ["a", "b"]
    emb = np.arange(6, dtype=np.float32).reshape(2, 3)
    save_embeddings(tmp_path / "v.npz", names, emb)
    n, e = load_embeddings(tmp_path / "v.npz")
    assert n == names and e.dtype == np.float32 and np.array_equal(e, emb)
    np.savez(tmp_path / "nokey.npz", names=np.array(names))
    np.savez(tmp_path / "shape.npz", names=np.array(names), embeddings=np.ones((3, 2)))
    np.savez(tmp_path / "nan.npz", names=np.array(names), embeddings=np.full((2, 2), np.nan))
    np.savez(tmp_path / "dup.npz", names=np.array(["a", "a"]), embeddings=np.ones((2, 2)))
    (tmp_path / "corrupt.npz").write_bytes(b"PK\x03\x04 nonsense")
    for name, msg in [("nokey", "'embeddings'"), ("shape", "[K, E]"), ("nan", "NaN"),
                      ("dup", "duplicate"), ("corrupt", "not a readable")]:
        with pytest.raises(ValueError, match=msg) as err:
            load_embeddings(tmp_path / f"{name}.npz")
        assert f"{name}.npz" in str(err.value)
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        load_embeddings(tmp_path / "missing.npz")
    with pytest.raises(ValueError):
        save_embeddings(tmp_path / "x.npz", ["a"], emb)


def test_feature_grid_conventions():
    g = FeatureGrid(fps=30.0, feature_stride=4, num_frames=16)
    # snippet i covers frames [4i, 4i + 16): its centre is at (4i + 8) / 30 s
    assert np.allclose(g.centres(3), [(4 * i + 8) / 30 for i in range(3)])
    t = np.array([0.0, 1.0, 7.3])
    assert np.allclose(g.grid_to_seconds(g.seconds_to_grid(t)), t)
    assert g.seconds_to_grid(8 / 30) == pytest.approx(0.0)
    assert g.num_snippets(10.0) == (300 - 16) // 4 + 1
    with pytest.raises(ValueError):
        FeatureGrid(fps=0.0, feature_stride=4, num_frames=16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert g.seconds_to_grid(1.0, fps=15.0) == pytest.approx(15 / 4 - 2)
