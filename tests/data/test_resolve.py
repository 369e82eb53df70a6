"""The data resolver shared by train, infer, selftrain and feel: the synthetic world and the
user's files, the class split, the world's place, and errors naming the key and the file."""

import json
import os

import pytest

from stovtal.config import DataConfig
from stovtal.data.resolve import resolve_data, vocabulary_names
from stovtal.data.splits import class_split

WORLD = {"seed": 3, "feat_dim": 16, "num_train": 3, "num_web": 2, "num_test": 3, "snippets_range": [20, 30],
         "web_shard_size": 2}


def test_synthetic_world_spec(tmp_path):
    root = tmp_path / "w"
    spec = resolve_data(DataConfig(synthetic=True, world_dir=str(root), world=WORLD, max_seq_len=77))
    meta = json.loads((root / "world.json").read_text())
    assert spec.world_dir == str(root) and spec.world is not None and spec.world.num_web == 2
    assert spec.annotation_file == str(root / "annotations.json")
    assert spec.feature_dir == spec.unlabelled_feature_dir == str(root / "features")
    assert spec.unlabelled_file == str(root / "web.json") and spec.unlabelled_gt_file == str(root / "web_gt.json")
    assert spec.vocab_npz == str(root / "vocab.npz")
    assert (spec.base, spec.novel, spec.vocabulary) == (meta["base"], meta["novel"], meta["classes"])
    assert spec.classes == meta["base"] + meta["novel"]
    assert (spec.grid.fps, spec.grid.feature_stride, spec.grid.num_frames) == (
        meta["fps"], meta["feature_stride"], meta["num_frames"])
    assert (spec.feat_dim, spec.max_seq_len) == (16, 77)
    assert (spec.train_subset, spec.val_subset, spec.test_subset) == ("train", "", "test")
    # a complete world is reused, not rewritten
    stamp = os.path.getmtime(root / "world.json")
    assert resolve_data(DataConfig(synthetic=True, world_dir=str(root), world=WORLD)).world_dir == str(root)
    assert os.path.getmtime(root / "world.json") == stamp


def test_world_place_and_enlarged_web_set(tmp_path):
    seen = []

    def place(w):
        seen.append(w.num_web)
        return str(tmp_path / f"web{w.num_web}")

    spec = resolve_data(DataConfig(synthetic=True, world=WORLD), world_dir=place, min_web=4)
    assert seen == [4] and spec.world_dir == str(tmp_path / "web4") and spec.world.num_web == 4
    assert len(json.loads((tmp_path / "web4" / "web.json").read_text())["database"]) == 4
    # data.world_dir wins over the app's place; min_web below num_web changes nothing
    spec = resolve_data(DataConfig(synthetic=True, world=WORLD, world_dir=str(tmp_path / "mine")),
                        world_dir=place, min_web=1)
    assert spec.world_dir == str(tmp_path / "mine") and spec.world.num_web == 2 and seen == [4]


def test_bad_world_key_is_named(tmp_path):
    with pytest.raises(ValueError, match="data.world"):
        resolve_data(DataConfig(synthetic=True, world={"no_such_key": 1}), world_dir=str(tmp_path))


@pytest.fixture()
def files(tmp_path):
    feats = tmp_path / "feats"
    feats.mkdir()
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"database": {}}))
    return str(ann), str(feats)


def test_user_files_with_a_shipped_split(files):
    ann, feats = files
    spec = resolve_data(DataConfig(annotations=ann, feature_dir=feats, vocabulary="thumos14", split="random50",
                                   split_seed=1, feat_dim=8, fps=25.0))
    split = class_split("thumos14", "random50", 1)
    assert (spec.base, spec.novel) == (list(split.base), list(split.novel))
    assert spec.vocabulary == spec.classes and spec.world is None and spec.world_dir == ""
    assert (spec.annotation_file, spec.feature_dir, spec.unlabelled_feature_dir) == (ann, feats, feats)
    assert (spec.feat_dim, spec.grid.fps, spec.vocab_npz, spec.unlabelled_gt_file) == (8, 25.0, "", "")


def test_user_files_with_listed_classes_and_unlabelled_videos(files, tmp_path):
    ann, feats = files
    cfg = DataConfig(annotations=ann, feature_dir=feats, base_classes=["a", "b"], novel_classes=["c"],
                     unlabelled="web.json", unlabelled_subset="web", unlabelled_feature_dir="webfeats",
                     unlabelled_gt="gt.json", vocab="v.npz", feat_dim=None)
    spec = resolve_data(cfg)
    assert (spec.base, spec.novel, spec.vocabulary, spec.feat_dim) == (["a", "b"], ["c"], ["a", "b", "c"], None)
    assert (spec.unlabelled_file, spec.unlabelled_subset, spec.unlabelled_feature_dir, spec.unlabelled_gt_file,
            spec.vocab_npz) == ("web.json", "web", "webfeats", "gt.json", "v.npz")
    cfg.novel_classes = ["b"]
    with pytest.raises(ValueError, match=r"both base and novel: \['b'\]"):
        resolve_data(cfg)


def test_without_a_split_the_vocabulary_is_read_as_configured(files, tmp_path):
    ann, feats = files
    spec = resolve_data(DataConfig(annotations=ann, feature_dir=feats, vocabulary="thumos14"), split=False)
    assert (spec.base, spec.novel) == ([], []) and spec.vocabulary == vocabulary_names("thumos14")
    assert len(spec.vocabulary) == 20
    names = tmp_path / "names.txt"
    names.write_text("jump\n\n run \n")
    spec = resolve_data(DataConfig(annotations=ann, feature_dir=feats, vocabulary=str(names)), split=False)
    assert spec.vocabulary == ["jump", "run"]
    names.write_text("\n")
    with pytest.raises(ValueError, match="no class names"):
        vocabulary_names(str(names))


def test_missing_user_files_are_named(files, tmp_path):
    ann, feats = files
    with pytest.raises(ValueError, match="data.annotations is required"):
        resolve_data(DataConfig(synthetic=False, feature_dir=feats, vocabulary="thumos14"))
    missing = str(tmp_path / "nope.json")
    with pytest.raises(FileNotFoundError, match=rf"{missing}: annotation file not found \(data.annotations\)"):
        resolve_data(DataConfig(annotations=missing, feature_dir=feats, vocabulary="thumos14"))
    with pytest.raises(FileNotFoundError, match=r"feature directory not found \(data.feature_dir\)"):
        resolve_data(DataConfig(annotations=ann, feature_dir=str(tmp_path / "nofeats"), vocabulary="thumos14"))
