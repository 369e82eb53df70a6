"""The synthetic world: determinism, subsets, statistics, writing/resuming, and the dataset
reading it back."""

import json
import math
import os

import numpy as np
import pytest
import torch

from stovtal.data import VideoFeatureDataset, collate_videos, load_annotations, load_embeddings
from stovtal.data.synthetic import WEB_SPEC, SyntheticConfig, SyntheticWorld
from stovtal.data.vocab import load_vocabulary

SMALL = SyntheticConfig(seed=3, feat_dim=64, num_train=6, num_web=5, num_test=8,
                        snippets_range=(40, 90), web_shard_size=2)


@pytest.fixture(scope="module")
def world():
    return SyntheticWorld(SMALL)


@pytest.fixture(scope="module")
def root(world, tmp_path_factory):
    path = tmp_path_factory.mktemp("world")
    world.write(path)
    return path


def test_deterministic_and_index_addressable(world):
    a, b = world.generate("web", 4), SyntheticWorld(SMALL).generate("web", 4)
    assert np.array_equal(a["feats"], b["feats"]) and a["annotations"] == b["annotations"]
    streamed = list(world.iter_web_videos(3, 5))
    assert [v["video_id"] for v in streamed] == ["web_0000003", "web_0000004"]
    assert np.array_equal(streamed[1]["feats"], a["feats"])
    other = SyntheticWorld(SyntheticConfig(**{**SMALL.to_dict(), "seed": 4,
                                              "snippets_range": (40, 90)})).generate("web", 4)
    assert not np.array_equal(other["feats"][:10], a["feats"][:10])
    # any index, far beyond num_web
    assert world.generate("web", 10**6)["feats"].shape[1] == 64


def test_subsets_use_the_right_classes(world):
    base, novel = set(world.base), set(world.novel)
    train_labels = {a["label"] for v in world.iter_videos("train", 0, 30) for a in v["annotations"]}
    test_labels = {a["label"] for v in world.iter_videos("test", 0, 60) for a in v["annotations"]}
    assert train_labels <= base
    assert test_labels & novel and test_labels & base


def test_video_statistics(world):
    g = world.grid
    for v in world.iter_videos("test", 0, 20):
        T = v["feats"].shape[0]
        assert 40 <= T <= 90 and v["feats"].dtype == np.float32 and np.isfinite(v["feats"]).all()
        assert v["duration"] == pytest.approx(((T - 1) * g.feature_stride + g.num_frames) / g.fps)
        segs = sorted(a["segment"] for a in v["annotations"])
        assert segs, "every labelled video has at least one action"
        for (s, e), nxt in zip(segs, segs[1:] + [None], strict=True):
            assert 0 <= s < e <= v["duration"]
            if nxt is not None:
                assert e <= nxt[0]
    one = SyntheticWorld(SyntheticConfig(**{**SMALL.to_dict(), "snippets_range": (40, 90),
                                            "test_classes_per_video": (1.0,)}))
    assert all(len({a["label"] for a in v["annotations"]}) == 1 for v in one.iter_videos("test", 0, 20))


def test_action_snippets_carry_their_class_signal():
    """In the default 512-d world, snippets of an action of class c are closer to c's text
    embedding than the background snippets of the same video are, and a snippet's nearest
    text embedding is its class far above chance (the signal every method relies on)."""
    world = SyntheticWorld(SyntheticConfig(seed=1))
    E = world.text_embeddings
    own, bg, correct, total = [], [], 0, 0
    for v in world.iter_videos("test", 0, 20):
        f = v["feats"] / np.linalg.norm(v["feats"], axis=1, keepdims=True)
        centres = world.grid.centres(len(f))
        label = np.full(len(f), -1)
        for a in v["annotations"]:
            label[(centres >= a["segment"][0]) & (centres <= a["segment"][1])] = world.classes.index(a["label"])
        sims = f @ E.T
        fg = label >= 0
        for c in set(label[fg].tolist()):
            own.append(sims[label == c, c].mean())
            bg.append(sims[~fg, c].mean() if (~fg).any() else np.nan)
        correct += int((sims[fg].argmax(1) == label[fg]).sum())
        total += int(fg.sum())
    own, bg = np.array(own), np.array(bg)
    ok = ~np.isnan(bg)
    assert (own[ok] > bg[ok]).mean() > 0.9
    assert correct / total > 3.0 / len(world.classes)


def test_written_world_files(world, root):
    meta = json.loads((root / "world.json").read_text())
    assert (meta["fps"], meta["feature_stride"], meta["num_frames"], meta["feat_dim"]) == (30.0, 4, 16, 64)
    assert meta["base"] == world.base and meta["novel"] == world.novel
    names, emb = load_embeddings(root / "vocab.npz")
    assert names == world.classes and emb.shape == (20, 64)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    ann = load_annotations(root / "annotations.json", classes=world.classes)["database"]
    assert sum(v["subset"] == "train" for v in ann.values()) == 6
    assert sum(v["subset"] == "test" for v in ann.values()) == 8
    web = load_annotations(root / "web.json")["database"]
    web_gt = load_annotations(root / "web_gt.json")["database"]
    assert len(web) == 5 and all(not v["annotations"] for v in web.values())
    assert all(web_gt[v]["annotations"] for v in web)
    assert len(os.listdir(root / "features")) == 19


def test_write_skips_complete_world_and_resumes(world, root, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("regenerated a complete world")

    monkeypatch.setattr(SyntheticWorld, "generate", boom)
    world.write(root)  # complete: nothing regenerated
    monkeypatch.undo()
    # an interrupted write: no world.json, some feature files missing
    import shutil
    part = tmp_path / "part"
    shutil.copytree(root, part)
    os.remove(part / "world.json")
    os.remove(part / "features" / "test_0000002.npy")
    world.write(part)
    assert np.array_equal(np.load(part / "features" / "test_0000002.npy"),
                          np.load(root / "features" / "test_0000002.npy"))
    assert (part / "annotations.json").read_text() == (root / "annotations.json").read_text()
    with pytest.raises(ValueError, match="different synthetic world"):
        SyntheticWorld(SyntheticConfig(**{**SMALL.to_dict(), "seed": 9, "snippets_range": (40, 90)})).write(root)


def test_config_validation():
    with pytest.raises(ValueError, match="profile"):
        SyntheticConfig(profile="medium")
    with pytest.raises(ValueError, match="sum"):
        SyntheticConfig(test_classes_per_video=(0.5, 0.2))
    with pytest.raises(ValueError, match="unknown"):
        SyntheticConfig.from_dict({"bogus": 1})
    assert SyntheticConfig.from_dict(SMALL.to_dict()) == SMALL


def test_long_profile_activitynet(tmp_path):
    w = SyntheticWorld(SyntheticConfig(vocabulary="activitynet13", profile="long", feat_dim=32,
                                       snippets_range=(60, 80)))
    v = w.generate("test", 0)
    fracs = [(a["segment"][1] - a["segment"][0]) / v["duration"] for a in v["annotations"]]
    assert w.grid.feature_stride == 16 and max(fracs) > 0.1
    assert len(w.base) + len(w.novel) == 200


def test_dataset_reads_world_back(world, root):
    meta = json.loads((root / "world.json").read_text())
    ds = VideoFeatureDataset(root / "annotations.json", root / "features", world.classes, world.grid,
                             subset="test", feat_dim=64)
    assert len(ds) == 8
    item = ds[3]
    raw = np.load(root / "features" / f"{item['video_id']}.npy")
    assert item["feats"].shape == (64, raw.shape[0]) and item["feats"].dtype == torch.float32
    assert torch.equal(item["feats"], torch.from_numpy(raw).T)
    gt = load_annotations(root / "annotations.json")["database"][item["video_id"]]["annotations"]
    secs = ds.to_seconds(item["segments"].double(), item)
    assert np.allclose(secs.numpy(), [a["segment"] for a in gt], atol=1e-4)
    assert item["labels"].tolist() == [world.classes.index(a["label"]) for a in gt]
    assert (item["fps"], item["feat_stride"], item["feat_num_frames"]) == (meta["fps"], 4, 16)

    batch = collate_videos([ds[i] for i in range(4)])
    lengths = [ds[i]["feats"].shape[1] for i in range(4)]
    assert batch["feats"].shape == (4, 64, max(lengths))
    assert batch["masks"].sum(1).tolist() == lengths
    for i, n in enumerate(lengths):
        assert torch.all(batch["feats"][i, :, n:] == 0)
    assert batch["video_id"] == [ds[i]["video_id"] for i in range(4)]
    assert collate_videos([ds[0]], pad_to_multiple=32)["feats"].shape[-1] % 32 == 0


def test_training_crop(world, root):
    g = torch.Generator().manual_seed(0)
    ds = VideoFeatureDataset(root / "annotations.json", root / "features", world.classes, world.grid,
                             subset="train", max_seq_len=16, training=True, generator=g)
    full = VideoFeatureDataset(root / "annotations.json", root / "features", world.classes, world.grid,
                               subset="train")
    for i in range(len(ds)):
        item, ref = ds[i], full[i]
        o = item["offset_snippets"]
        assert item["feats"].shape[1] == 16 and torch.equal(item["feats"], ref["feats"][:, o:o + 16])
        assert item["offset_frames"] == 4 * o
        if len(item["segments"]):
            # clipped to the window widened by the grid offset (16 frames / 2 / stride 4 = 2)
            assert item["segments"].min() >= -2 and item["segments"].max() <= 18
            # every kept (clipped) segment lies inside one of the full video's segments
            shifted = item["segments"] + o
            inside = (shifted[:, None, 0] >= ref["segments"][None, :, 0] - 1e-4) & \
                     (shifted[:, None, 1] <= ref["segments"][None, :, 1] + 1e-4)
            assert inside.any(1).all()


def test_training_crop_ratio_crops_short_videos(world, root):
    """With crop_ratio, videos shorter than max_seq_len are cropped too; the item is the
    window of stovtal.data.crop (same draws), its segments, labels and features."""
    from stovtal.data.crop import CropRule, crop_window, torch_randint

    full = VideoFeatureDataset(root / "annotations.json", root / "features", world.classes, world.grid,
                               subset="train")
    g, g_ref = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    ds = VideoFeatureDataset(root / "annotations.json", root / "features", world.classes, world.grid,
                             subset="train", max_seq_len=100_000, training=True, crop_ratio=(0.5, 0.8),
                             trunc_thresh=0.3, generator=g)
    rule = CropRule(100_000, (0.5, 0.8), 0.3, world.grid.offset)
    shorter = 0
    for i in range(len(ds)):
        item, ref = ds[i], full[i]
        T = ref["feats"].shape[1]
        w = crop_window(T, ref["segments"].double().numpy(), rule, torch_randint(g_ref))
        o = item["offset_snippets"]
        assert (o, o + item["feats"].shape[1]) == (w.start, w.stop)
        shorter += w.stop - w.start < T
        assert torch.equal(item["feats"], ref["feats"][:, w.start:w.stop])
        assert torch.allclose(item["segments"].double(), torch.from_numpy(w.segments), atol=1e-5)
        assert item["labels"].tolist() == ref["labels"][torch.from_numpy(w.keep)].tolist()
    assert shorter == len(ds)  # 50-80% of every video
    with pytest.raises(ValueError, match="crop_ratio must be"):
        VideoFeatureDataset(root / "annotations.json", root / "features", world.classes, world.grid,
                            subset="train", max_seq_len=16, training=True, crop_ratio=(0.9, 1.1))


def test_dataset_uses_mmap(world, root, monkeypatch):
    import stovtal.data.formats as formats

    modes = []
    real = np.load

    def spy(*args, **kwargs):
        modes.append(kwargs.get("mmap_mode"))
        return real(*args, **kwargs)

    monkeypatch.setattr(formats.np, "load", spy)
    ds = VideoFeatureDataset(root / "annotations.json", root / "features", world.classes, world.grid,
                             subset="test")
    ds[0]
    assert modes and all(m == "r" for m in modes)


def test_dataset_bad_inputs(world, root, tmp_path):
    import shutil
    feats = tmp_path / "features"
    shutil.copytree(root / "features", feats)
    os.remove(feats / "test_0000001.npy")
    np.save(feats / "test_0000002.npy", np.full((50, 64), np.nan, np.float32))
    with pytest.raises(FileNotFoundError, match="test_0000001.*test_0000001.npy"):
        VideoFeatureDataset(root / "annotations.json", feats, world.classes, world.grid, subset="test")
    with pytest.warns(UserWarning, match="test_0000001.*skipped"):
        ds = VideoFeatureDataset(root / "annotations.json", feats, world.classes, world.grid,
                                 subset="test", on_error="skip")
    assert len(ds) == 7
    with pytest.raises(ValueError, match="test_0000002.*NaN"):
        ds[ds.video_ids.index("test_0000002")]
    with pytest.raises(ValueError, match="dim 64 != expected 32"):
        VideoFeatureDataset(root / "annotations.json", root / "features", world.classes, world.grid,
                            subset="test", feat_dim=32)
    with pytest.raises(ValueError, match="not in the vocabulary"):
        VideoFeatureDataset(root / "annotations.json", root / "features", world.base, world.grid,
                            subset="test")
    with pytest.raises(ValueError, match="empty batch"):
        collate_videos([])


def test_web_shard_ranges(world):
    assert world.web_shard_ranges(9) == [(0, 2), (2, 4), (4, 6), (6, 8), (8, 9)]
    assert world.web_shard_ranges(7, 3) == [(3, 4), (4, 6), (6, 7)]
    assert world.web_shard_ranges(0) == []
    with pytest.raises(ValueError, match="start"):
        world.web_shard_ranges(2, 5)


def test_write_web_beyond_num_web_resumes_and_shards(world, root, tmp_path, monkeypatch):
    import shutil

    from stovtal.data.__main__ import main

    part = tmp_path / "w"
    shutil.copytree(root, part)
    own = {f: (part / "features" / f).read_bytes() for f in os.listdir(part / "features")}
    calls = []
    real = SyntheticWorld.generate

    def counting(self, subset, index):
        calls.append((subset, index))
        return real(self, subset, index)

    monkeypatch.setattr(SyntheticWorld, "generate", counting)
    # worker 0 of 2 writes shards 0, 2, 4 of [0, 9) and cannot merge yet
    assert world.write_web(part, 9, shard="0/2") is None
    assert not (part / "web-9.json").exists()
    web, web_gt = world.write_web(part, 9, shard="1/2")
    # shards [0, 2) and [2, 4) are the world's own (num_web = 5); video 4 (of its partial shard
    # [4, 5)) has its features and is regenerated only for its metadata; the rest once each
    assert sorted(calls) == [("web", i) for i in range(4, 9)]
    db = load_annotations(web, classes=world.classes)["database"]
    gt = load_annotations(web_gt, classes=world.web_classes)["database"]
    ids = [f"web_{i:07d}" for i in range(9)]
    assert list(db) == ids and list(gt) == ids and all(not v["annotations"] for v in db.values())
    for i in (2, 7, 8):  # inside and beyond num_web (5): the indexed video, features and labels
        v = real(world, "web", i)
        assert gt[v["video_id"]]["annotations"] == v["annotations"] and gt[v["video_id"]]["annotations"]
        assert np.array_equal(np.load(part / "features" / f"{v['video_id']}.npy"), v["feats"])
    for f, data in own.items():  # the world's own files are untouched
        assert (part / "features" / f).read_bytes() == data
    # the first num_web videos are the world's own web set
    assert load_annotations(part / "web_gt.json")["database"] == {k: gt[k] for k in ids[:5]}

    # resume: shard [6, 8) lost its marker and one feature file -> only it is regenerated
    calls.clear()
    os.remove(world.web_shard_files(part, 6, 8)[0])
    os.remove(part / "features" / "web_0000007.npy")
    os.remove(part / "web-9.json")
    assert world.write_web(part, 9) == (web, web_gt)
    assert sorted(calls) == [("web", 6), ("web", 7)]
    assert load_annotations(web)["database"] == db
    calls.clear()
    world.write_web(part, 9)  # complete: nothing regenerated
    assert calls == []
    monkeypatch.undo()

    # the CLI (world from world.json; another num_web is the same world)
    assert main(["web", "--root", str(part), "--num-videos", "10", "--quiet"]) == 0
    assert len(load_annotations(part / "web-10.json")["database"]) == 10
    bigger = SyntheticWorld(SyntheticConfig(**{**SMALL.to_dict(), "num_web": 50, "snippets_range": (40, 90)}))
    assert bigger.write_web(part, 3) is not None
    other = SyntheticWorld(SyntheticConfig(**{**SMALL.to_dict(), "seed": 9, "snippets_range": (40, 90)}))
    with pytest.raises(ValueError, match="different synthetic world"):
        other.write_web(part, 3)
    with pytest.raises(ValueError, match="different synthetic world"):
        other.write_web_shard(part, 0, 2)
    with pytest.raises(FileNotFoundError, match="no synthetic world"):
        world.write_web(tmp_path / "empty", 3)
    with pytest.raises(ValueError, match="num_videos"):
        world.write_web(part, -1)
    with pytest.raises(ValueError, match="shard spec"):
        world.write_web(part, 4, shard="2/2")


# ----------------------------------------------------------------- the Kinetics web set
# a tiny world for statistics: few dimensions, so thousands of videos take seconds
STATS = SyntheticConfig(seed=5, feat_dim=16, num_train=0, num_web=0, num_test=0)


@pytest.fixture(scope="module")
def stats_world():
    return SyntheticWorld(STATS)


def test_web_labels_come_from_kinetics(stats_world):
    w = stats_world
    kinetics = load_vocabulary("kinetics400")
    assert w.config.web_profile == "kinetics" and w.web_classes == kinetics
    labels = [a for v in w.iter_web_videos(0, 300) for a in v["annotations"]]
    assert {a["label"] for a in labels} <= set(kinetics)
    assert len({a["label"] for a in labels}) > 200  # drawn from the whole vocabulary
    for a in labels:  # a matched Kinetics action names the target class it shows
        assert a.get("target_label") == (w.web_targets[a["label"]][0] if a["label"] in w.web_targets else None)
    # and it shows that class's visual prototype; the others have their own
    for k, t in w.web_targets.items():
        assert np.array_equal(w._web.prototypes[kinetics.index(k)], w.prototypes[w.classes.index(t[0])])
    own = np.delete(w._web.prototypes, [kinetics.index(k) for k in w.web_targets], axis=0)
    assert np.abs(own @ w.prototypes.T).max() < 0.99


def test_web_target_share_is_as_specified(stats_world):
    """The share of web actions that are target classes is matched Kinetics classes / 400 (12/400
    for THUMOS14). Two-sided test at 4 binomial standard deviations (false alarm ~6e-5)."""
    w = stats_world
    assert w.web_target_share == pytest.approx(12 / 400)
    flags = [("target_label" in a) for v in w.iter_web_videos(0, 2500) for a in v["annotations"]]
    n, k, p = len(flags), sum(flags), w.web_target_share
    sd = math.sqrt(n * p * (1 - p))
    assert n > 3500 and abs(k - n * p) <= 4 * sd, (k, n * p, sd)


def test_web_domain_shift_magnitudes(stats_world):
    """The documented shift (module docstring): half as long, more action per video, several
    actions, rougher and stronger noise; the labelled and test videos are those of the target
    web profile."""
    w = stats_world

    def summary(videos):
        dur, fg, ncls, step = [], [], [], []
        for v in videos:
            segs = [a["segment"] for a in v["annotations"]]
            dur.append(v["duration"])
            fg.append(sum(e - s for s, e in segs) / v["duration"])
            ncls.append(len({a["label"] for a in v["annotations"]}))
            step.append(np.linalg.norm(np.diff(v["feats"], axis=0), axis=1).mean())
        return {k: float(np.mean(x)) for k, x in zip(("dur", "fg", "ncls", "step"), (dur, fg, ncls, step),
                                                      strict=True)}

    web = summary(w.iter_web_videos(0, 400))
    test = summary(w.iter_videos("test", 0, 400))
    # durations: snippets range x 0.5 (T uniform: the means' ratio is 0.5 up to sampling error)
    assert web["dur"] / test["dur"] == pytest.approx(WEB_SPEC.length_factor, abs=0.04)
    assert web["fg"] > test["fg"] + 0.08  # measured 0.54 / 0.39 on the default world
    assert web["ncls"] > 1.35 and test["ncls"] < 1.25  # 1.50 / 1.14
    # snippet-to-snippet change is dominated by the AR(1) noise: E|n_t - n_t-1| ~ norm sqrt(2(1-rho))
    for got, norm, rho in ((web["step"], STATS.noise_norm * WEB_SPEC.noise_norm_factor, WEB_SPEC.noise_smoothness),
                           (test["step"], STATS.noise_norm, STATS.noise_smoothness)):
        assert got == pytest.approx(norm * math.sqrt(2 * (1 - rho)), rel=0.1)
    assert w._web.scene_norm == pytest.approx(1.5 * STATS.scene_norm) and len(w._web.scene_protos) == 64
    target = SyntheticWorld(SyntheticConfig(**{**STATS.to_dict(), "web_profile": "target"}))
    for subset in ("train", "test"):
        a, b = w.generate(subset, 3), target.generate(subset, 3)
        assert np.array_equal(a["feats"], b["feats"]) and a["annotations"] == b["annotations"]
    assert {a["label"] for v in target.iter_web_videos(0, 20) for a in v["annotations"]} <= set(target.classes)


def test_web_profile_option_and_old_worlds(root, tmp_path):
    with pytest.raises(ValueError, match="web_profile"):
        SyntheticConfig(web_profile="youtube")
    with pytest.raises(ValueError, match="kinetics400"):
        SyntheticConfig(vocabulary="kinetics400", web_profile="kinetics")
    # a world written before the option has the "target" web set: read as such, and never reused
    # for a world with the Kinetics web set
    import shutil

    old = tmp_path / "old"
    shutil.copytree(root, old)
    meta = json.loads((old / "world.json").read_text())
    meta["config"]["web_profile"] = "target"
    (old / "world.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="web_profile"):
        SyntheticWorld(SMALL).write(old)
    del meta["config"]["web_profile"]
    (old / "world.json").write_text(json.dumps(meta))
    assert SyntheticWorld.from_root(old).config.web_profile == "target"
    with pytest.raises(ValueError, match=r"differs in \['web_profile'\]"):
        SyntheticWorld(SMALL).write(old)
    assert SyntheticWorld(SyntheticConfig(**{**SMALL.to_dict(), "web_profile": "target"})).is_complete(old)
