"""The data resolver and ``stovtal.engine.builders`` hand the data section's crop settings to
the training set."""

from __future__ import annotations

import json

import numpy as np

from stovtal.config import DataConfig
from stovtal.data.resolve import resolve_data
from stovtal.engine.builders import build_dataset


def _user_data(tmp_path, **crop):
    feats = tmp_path / "features"
    feats.mkdir()
    db = {}
    for i in range(4):
        np.save(feats / f"v{i}.npy", np.random.default_rng(i).standard_normal((40, 8)).astype(np.float32))
        db[f"v{i}"] = {"subset": "training", "duration": 40 * 4 / 30.0,
                       "annotations": [{"segment": [1.0, 3.0], "label": "a"}]}
    (tmp_path / "ann.json").write_text(json.dumps({"database": db}))
    return DataConfig(annotations=str(tmp_path / "ann.json"), feature_dir=str(feats), feat_dim=8,
                      max_seq_len=64, base_classes=["a"], novel_classes=["b"], **crop)


def test_training_set_gets_the_crop_settings(tmp_path):
    spec = resolve_data(_user_data(tmp_path, crop_ratio=[0.5, 0.75], trunc_thresh=0.25))
    assert (spec.crop_ratio, spec.trunc_thresh) == ((0.5, 0.75), 0.25)
    train = build_dataset(spec, "training", training=True)
    rule = train.crop_rule
    assert (rule.max_seq_len, rule.crop_ratio, rule.trunc_thresh, rule.offset) == (64, (0.5, 0.75), 0.25, 2.0)
    # 40-snippet videos (shorter than max_seq_len) are cropped to 20..30 snippets
    assert all(20 <= train[i]["feats"].shape[1] <= 30 for i in range(len(train)))
    # evaluation sets are never cropped
    test = build_dataset(spec, "training")
    assert all(test[i]["feats"].shape[1] == 40 for i in range(len(test)))


def test_without_crop_ratio_short_videos_stay_whole(tmp_path):
    spec = resolve_data(_user_data(tmp_path))
    assert (spec.crop_ratio, spec.trunc_thresh) == (None, 0.5)
    train = build_dataset(spec, "training", training=True)
    assert all(train[i]["feats"].shape[1] == 40 for i in range(len(train)))
