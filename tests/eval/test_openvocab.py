"""CB / CN / GZSL breakdown."""

import pytest

from stovtal.eval import detection_map, open_vocab_breakdown

BASE, NOVEL = ["a", "b"], ["x"]


def _gt():
    vids = {"vb": [((10, 20), "a"), ((30, 40), "b")], "vn": [((10, 20), "x")],
            "vm": [((10, 20), "a"), ((50, 60), "x")], "ve": []}
    return {"database": {v: {"subset": "test", "duration": 100.0,
                             "annotations": [{"segment": list(s), "label": c} for s, c in anns]}
                         for v, anns in vids.items()}}


def _perfect(labels):
    g = _gt()["database"]
    return {"results": {v: [{**a, "score": 0.9} for a in info["annotations"] if a["label"] in labels]
                        for v, info in g.items()}}


def test_perfect_predictions():
    out = open_vocab_breakdown(_gt(), [0.5, 0.7], BASE, NOVEL, gzsl=_perfect(BASE + NOVEL),
                               cb=_perfect(BASE), cn=_perfect(NOVEL))
    assert out["partition"] == {"base": 1, "novel": 1, "mixed": 1, "empty": 1}
    assert out["CB"]["mAP"] == [1.0, 1.0] and out["CN"]["mAP"] == [1.0, 1.0]
    assert out["GZSL"]["average_mAP"] == 1.0 and out["GZSL"]["average_harmonic_mAP"] == 1.0
    # CB only sees the base-only video: one instance per base class
    assert out["CB"]["num_gt"] == {"a": 1, "b": 1} and out["CN"]["num_gt"] == {"x": 1}


def test_gzsl_base_novel_split_and_harmonic_mean():
    out = open_vocab_breakdown(_gt(), [0.5], BASE, NOVEL, gzsl=_perfect(BASE))
    g = out["GZSL"]
    assert g["base_mAP"] == [1.0] and g["novel_mAP"] == [0.0] and g["harmonic_mAP"] == [0.0]
    assert g["mAP"] == pytest.approx([2 / 3])
    assert out["CB"] is None and out["CN"] is None
    assert g["mAP"] == detection_map(_gt(), _perfect(BASE), [0.5], classes=BASE + NOVEL)["mAP"]


def test_cb_ignores_mixed_videos_and_checks_vocabularies():
    cb = _perfect(BASE)
    cb["results"]["vm"] = [{"segment": [70, 80], "label": "a", "score": 1.0}]  # outside CB videos
    out = open_vocab_breakdown(_gt(), [0.5], BASE, NOVEL, cb=cb)
    assert out["CB"]["mAP"] == [1.0]
    with pytest.raises(ValueError, match="not in the vocabulary"):
        open_vocab_breakdown(_gt(), [0.5], BASE, NOVEL, cb=_perfect(NOVEL))
    with pytest.raises(ValueError, match="both"):
        open_vocab_breakdown(_gt(), [0.5], ["a", "x"], NOVEL)
    with pytest.raises(ValueError, match="vocabulary"):
        open_vocab_breakdown(_gt(), [0.5], ["a"], NOVEL)
