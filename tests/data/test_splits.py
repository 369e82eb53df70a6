"""Vocabularies and class splits."""

import json

import pytest

from stovtal.data import class_split, load_vocabulary, partition_videos, random_class_split
from stovtal.data.splits import SPLIT_DATASETS, build_split_table, compute_kinetics_split
from stovtal.data.vocab import natural_name, shipped_text_embeddings


def test_vocabulary_sizes_and_verbatim_names():
    sizes = {"thumos14": 20, "activitynet13": 200, "activitynet12": 100, "fineaction": 106,
             "kinetics400": 400}
    for name, n in sizes.items():
        names = load_vocabulary(name)
        assert len(names) == n == len(set(names))
    assert "braid hair " in load_vocabulary("fineaction", strip=False)
    assert "braid hair" in load_vocabulary("fineaction")
    assert load_vocabulary("thumos")[0] == "BaseballPitch"
    with pytest.raises(ValueError, match="unknown vocabulary"):
        load_vocabulary("ucf101")


def test_natural_name():
    assert natural_name("CleanAndJerk") == "clean and jerk"
    assert natural_name("Playing guitarra") == "playing guitarra"
    assert natural_name("braid hair ") == "braid hair"


def test_kinetics_rule_on_toy_vocabulary():
    ident = str.lower  # no lemmatisation: the subset rule alone
    base, novel = compute_kinetics_split(["RunFast", "jump high", "swim"], ["run fast now", "high jump"], ident)
    assert base == ["RunFast", "jump high"] and novel == ["swim"]
    # lemmatisation lets inflected forms match; punctuation around words is dropped
    base, _ = compute_kinetics_split(["Cliff Diving", "in game"], ["diving cliff", "passing ball (in game)"])
    assert base == ["Cliff Diving", "in game"]


@pytest.mark.parametrize("dataset", SPLIT_DATASETS)
def test_shipped_splits_match_recomputation(dataset):
    assert build_split_table(dataset) == _shipped_table(dataset)
    s = class_split(dataset)
    assert set(s.base).isdisjoint(s.novel) and set(s.classes) == set(load_vocabulary(dataset))
    assert s.base and s.novel


def _shipped_table(dataset):
    import json
    from importlib import resources
    return json.loads(resources.files("stovtal.data").joinpath("split_tables", f"{dataset}.json").read_text())


def test_thumos_kinetics_split_examples():
    s = class_split("thumos14", "kinetics")
    # "clean and jerk" and "high jump" are Kinetics-400 classes; "golf swing" is not (K400 has
    # golf chipping / driving / putting), nor is "soccer penalty" ("kicking soccer ball")
    assert {"CleanAndJerk", "HighJump", "Diving"} <= set(s.base)
    assert {"GolfSwing", "SoccerPenalty", "Billiards"} <= set(s.novel)


def test_random_splits():
    names = load_vocabulary("thumos14")
    for kind, n_base in (("random75", 15), ("random50", 10)):
        seen = set()
        for seed in range(10):
            s = class_split("thumos14", kind, seed)
            assert len(s.base) == n_base and len(s.novel) == 20 - n_base
            assert sorted(s.classes) == sorted(names)
            assert (list(s.base), list(s.novel)) == random_class_split(names, 0.75 if kind == "random75" else 0.5, seed)
            seen.add(s.base)
        assert len(seen) == 10
    with pytest.raises(ValueError, match="seed"):
        class_split("thumos14", "random50", 10)
    with pytest.raises(ValueError, match="kind"):
        class_split("thumos14", "random10")
    with pytest.raises(ValueError):
        random_class_split(names, 1.0, 0)


def test_partition_videos():
    db = {"a": {"annotations": [{"label": "x"}]}, "b": {"annotations": [{"label": "y"}]},
          "c": {"annotations": [{"label": "x"}, {"label": "y"}]}, "d": {"annotations": []}}
    assert partition_videos(db, ["x"], ["y"]) == {"base": ["a"], "novel": ["b"], "mixed": ["c"], "empty": ["d"]}
    with pytest.raises(ValueError, match="'a'"):
        partition_videos(db, ["z"], ["y"])


def test_shipped_text_embeddings():
    names, emb = shipped_text_embeddings("thumos14")
    assert names == load_vocabulary("thumos14") and emb.shape == (20, 384)
    assert abs(float((emb**2).sum(1).mean()) - 1.0) < 1e-2


def test_splits_cli(capsys):
    from stovtal.data.__main__ import main

    assert main(["splits", "--dataset", "thumos14"]) == 0
    out = capsys.readouterr().out
    s = class_split("thumos14")
    assert f"{len(s.base)} base, {len(s.novel)} novel" in out and ", ".join(s.novel) in out
    assert main(["splits", "--dataset", "activitynet13", "--kind", "random50", "--seed", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["base"] == list(class_split("activitynet13", "random50", 2).base)
    with pytest.raises(SystemExit):
        main(["splits", "--dataset", "nope"])
    assert "invalid choice" in capsys.readouterr().err


def test_kinetics_matches_are_the_base_classes():
    from stovtal.data.splits import kinetics_matches

    kinetics = set(load_vocabulary("kinetics400"))
    for dataset in SPLIT_DATASETS:
        m = kinetics_matches(dataset)
        assert set(m) <= kinetics and all(m.values())
        assert {c for hits in m.values() for c in hits} <= set(class_split(dataset).base)
    m = kinetics_matches("thumos14")
    # the most specific match only: "diving cliff" contains Diving's lemmas too
    assert m["diving cliff"] == ("CliffDiving",) and m["springboard diving"] == ("Diving",)
    assert len(m) == 12 and {c for hits in m.values() for c in hits} == set(class_split("thumos14").base)
    assert kinetics_matches("activitynet13")["canoeing or kayaking"] == ("Canoeing", "Kayaking")
    with pytest.raises(ValueError, match="kinetics400"):
        kinetics_matches("kinetics400")


def test_kinetics_embeddings_shipped_like_the_others():
    names, emb = shipped_text_embeddings("kinetics400")
    _, thumos = shipped_text_embeddings("thumos14")
    assert names == load_vocabulary("kinetics400") and emb.shape == (400, thumos.shape[1])
    assert emb.dtype == thumos.dtype
    assert abs(float((emb * emb).sum(1).min()) - 1.0) < 1e-2
    # the same encoder: a Kinetics name equal to a THUMOS14 natural name has the same embedding
    t_names, _ = shipped_text_embeddings("thumos14")
    i, j = names.index("clean and jerk"), t_names.index("CleanAndJerk")
    assert float(emb[i] @ thumos[j]) > 0.999
