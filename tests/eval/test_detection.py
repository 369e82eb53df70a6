"""Detection mAP: hand-computed cases and an independent loop reference."""

import random
import warnings

import numpy as np
import pytest

from stovtal.data import DataError
from stovtal.eval import detection_map
from stovtal.eval.reference import detection_map_reference


def gt(**videos):
    return {"database": {v: {"subset": "test", "duration": 100.0,
                             "annotations": [{"segment": list(s), "label": c} for s, c in anns]}
                         for v, anns in videos.items()}}


def pred(**videos):
    return {"results": {v: [{"segment": list(s), "label": c, "score": p} for s, c, p in ps]
                        for v, ps in videos.items()}}


def test_perfect_and_threshold_dependence():
    g = gt(v=[((10, 20), "a")])
    assert detection_map(g, pred(v=[((10, 20), "a", 0.9)]), [0.5, 0.95])["mAP"] == [1.0, 1.0]
    # IoU of [10, 20] and [12, 20] is 0.8
    r = detection_map(g, pred(v=[((12, 20), "a", 0.9)]), [0.5, 0.8, 0.9])
    assert r["mAP"] == [1.0, 1.0, 0.0] and r["average_mAP"] == pytest.approx(2 / 3)


def test_duplicates_and_ordering():
    g = gt(v=[((10, 20), "a")])
    # a duplicate below the true positive does not hurt: precision [1, 1/2], recall [1, 1]
    assert detection_map(g, pred(v=[((10, 20), "a", 0.9), ((10, 20), "a", 0.8)]), [0.5])["mAP"] == [1.0]
    # a false positive ranked first: precision [0, 1/2], recall [0, 1] -> AP 0.5
    r = detection_map(g, pred(v=[((50, 60), "a", 0.9), ((10, 20), "a", 0.8)]), [0.5])
    assert r["mAP"] == [0.5]


def test_ties_keep_file_order():
    g = gt(v=[((10, 20), "a")])
    fp_first = pred(v=[((50, 60), "a", 0.5), ((10, 20), "a", 0.5)])
    tp_first = pred(v=[((10, 20), "a", 0.5), ((50, 60), "a", 0.5)])
    assert detection_map(g, fp_first, [0.5])["mAP"] == [0.5]
    assert detection_map(g, tp_first, [0.5])["mAP"] == [1.0]


def test_interpolated_precision():
    g = gt(v=[((10, 20), "a"), ((40, 50), "a")])
    p = pred(v=[((10, 20), "a", 0.9), ((70, 80), "a", 0.8), ((40, 50), "a", 0.7)])
    # precision [1, 1/2, 2/3], recall [1/2, 1/2, 1]: AP = 1/2 * 1 + 1/2 * 2/3
    assert detection_map(g, p, [0.5])["mAP"][0] == pytest.approx(0.5 + 1 / 3)


def test_greedy_matching_takes_highest_iou_unmatched():
    g = gt(v=[((0, 10), "a"), ((8, 20), "a")])
    # first prediction overlaps both; IoU 0.6 with [8, 20] and 0.25 with [0, 10]
    p = pred(v=[((8, 18), "a", 0.9), ((0, 10), "a", 0.8)])
    assert detection_map(g, p, [0.5])["mAP"] == [1.0]
    # at 0.2 too: the first takes [8, 20] (higher IoU), the second still finds [0, 10]
    assert detection_map(g, p, [0.2])["mAP"] == [1.0]


def test_videos_without_ground_truth_and_unknown_videos():
    g = gt(v=[((10, 20), "a")], empty=[])
    # a prediction on a ground-truth video without annotations is a false positive
    r = detection_map(g, pred(empty=[((10, 20), "a", 0.9)], v=[((10, 20), "a", 0.5)]), [0.5])
    assert r["mAP"] == [0.5]
    # a prediction on a video outside the ground truth is a false positive (ActivityNet)
    r = detection_map(g, pred(other=[((10, 20), "a", 0.9)], v=[((10, 20), "a", 0.5)]), [0.5])
    assert r["mAP"] == [0.5] and r["absent_video_predictions"] == 1
    assert r["ignored_predictions"] == 0
    # ranked below the true positive it costs nothing
    r = detection_map(g, pred(other=[((10, 20), "a", 0.1)], v=[((10, 20), "a", 0.5)]), [0.5])
    assert r["mAP"] == [1.0]
    # a label without ground truth is not evaluated (counted)
    r = detection_map(g, pred(v=[((10, 20), "z", 0.9), ((10, 20), "a", 0.5)]), [0.5])
    assert r["mAP"] == [1.0] and r["ignored_predictions"] == 1


def test_reversed_and_zero_length_predictions_are_false_positives():
    g = gt(v=[((10, 20), "a")])
    for seg in ((20, 10), (15, 15)):
        p = pred(v=[(seg, "a", 0.9), ((10, 20), "a", 0.5)])
        with pytest.warns(UserWarning, match="1 prediction.*end <= start"):
            r = detection_map(g, p, [0.0, 0.5])
        assert r["mAP"] == [0.5, 0.5] and r["degenerate_predictions"] == 1
        with pytest.warns(UserWarning):
            assert detection_map(g, p, [0.0, 0.5], validate=False)["mAP"] == [0.5, 0.5]
    # strict: end < start is an error naming the video
    with pytest.raises(DataError, match="video 'v'.*end 10.0 < start 20.0"):
        detection_map(g, pred(v=[((20, 10), "a", 0.9)]), [0.5], strict=True)


def test_ground_truth_needs_no_duration():
    g = {"database": {"v": {"annotations": [{"segment": [10, 20], "label": "a"}]}}}
    assert detection_map(g, pred(v=[((10, 20), "a", 0.9)]), [0.5])["mAP"] == [1.0]


def test_empty_predictions_and_missing_classes():
    g = gt(v=[((10, 20), "a"), ((30, 40), "b")])
    r = detection_map(g, {"results": {}}, [0.3, 0.5])
    assert r["mAP"] == [0.0, 0.0] and set(r["per_class"]) == {"a", "b"}
    r = detection_map(g, pred(v=[((10, 20), "a", 0.9)]), [0.5], classes=["a", "b", "c"])
    assert r["per_class"] == {"a": [1.0], "b": [0.0]} and r["mAP"] == [0.5]
    assert r["classes"] == ["a", "b"] and r["num_gt"] == {"a": 1, "b": 1}


def test_bad_inputs():
    g = gt(v=[((10, 20), "a")])
    with pytest.raises(DataError, match="not in the vocabulary"):
        detection_map(g, pred(v=[((10, 20), "z", 0.9)]), [0.5], classes=["a"])
    with pytest.raises(DataError, match="score"):
        detection_map(g, pred(v=[((10, 20), "a", float("nan"))]), [0.5])
    with pytest.raises(ValueError, match="tiou"):
        detection_map(g, pred(), [1.5])
    with pytest.raises(ValueError, match="tiou"):
        detection_map(g, pred(), [])
    with pytest.raises(ValueError, match="no annotations"):
        detection_map(gt(v=[]), pred(), [0.5])
    with pytest.raises(DataError, match="database"):
        detection_map({"v": {}}, pred(), [0.5])


def _random_case(rng: random.Random):
    classes = ["a", "b", "c", "d"][: rng.randint(1, 4)]
    db, res = {}, {}
    for v in range(rng.randint(1, 8)):
        anns = []
        for _ in range(rng.randint(0, 6)):
            s = round(rng.uniform(0, 90), rng.choice([0, 3]))
            anns.append(((s, s + rng.choice([1.0, 2.5, rng.uniform(0.1, 10)])), rng.choice(classes)))
        preds = []
        for _ in range(rng.randint(0, 15)):
            if anns and rng.random() < 0.5:  # near a ground truth (or an exact copy)
                (s, e), c = rng.choice(anns)
                d = 0 if rng.random() < 0.3 else rng.uniform(-2, 2)
                seg = (s + d, max(s + d, e + rng.uniform(-2, 2)))
                c = c if rng.random() < 0.8 else rng.choice(classes)
            else:
                s = rng.uniform(0, 90)
                seg, c = (s, s + rng.uniform(-1, 10)), rng.choice(classes)  # some end < start
            preds.append((seg, c, rng.choice([0.5, 0.25, round(rng.random(), 2)])))  # many ties
        db[f"v{v}"], res[f"v{v}"] = anns, preds
    res["not_in_gt"] = [((1, 2), classes[0], 0.99)]
    return gt(**db), pred(**res)


def test_matches_loop_reference_on_random_cases():
    rng = random.Random(1234)
    checked = 0
    thresholds = [0.1, 0.3, 0.5, 0.7, 0.95]
    while checked < 150:
        g, p = _random_case(rng)
        if not any(v["annotations"] for v in g["database"].values()):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # reversed segments
            ours = detection_map(g, p, thresholds)
        ref = detection_map_reference(g, p, thresholds)
        assert ours["mAP"] == ref["mAP"]  # bit-equal: same operations in the same order
        for c, aps in ref["per_class"].items():
            assert ours["per_class"][c] == aps
        checked += 1


def test_reference_interpolation_hand_case():
    from stovtal.eval.reference import interpolated_ap
    assert interpolated_ap([1.0, 0.5, 2 / 3], [0.5, 0.5, 1.0]) == pytest.approx(0.5 + 1 / 3)


def test_bulk_checks_reject_what_the_validator_rejects():
    g = gt(v=[((10, 20), "a")])
    bad = [
        ([{"segment": [10, 20], "label": "a", "score": "0.9"}], "score"),  # a string that parses
        ([{"segment": [10, 20], "label": "a", "score": True}], "score"),  # bool is not a number
        ([{"segment": [10, True], "label": "a", "score": 0.9}], "finite numbers"),
        ([{"segment": [10, 20, 30], "label": "a", "score": 0.9}], r"\[start, end\]"),
        ([{"segment": "10-20", "label": "a", "score": 0.9}], r"\[start, end\]"),
        ([{"segment": [10, float("inf")], "label": "a", "score": 0.9}], "finite"),
        ([{"segment": [10, 20], "label": 3, "score": 0.9}], "label"),
        ([{"segment": [10, 20], "score": 0.9}], "needs"),
        ([[10, 20, "a", 0.9]], "needs"),
        ({"segment": [10, 20], "label": "a", "score": 0.9}, "must be a list"),
    ]
    for entries, msg in bad:
        p = {"results": {"ok": [{"segment": [1, 2], "label": "a", "score": 0.1}], "v": entries}}
        with pytest.raises(DataError, match=msg):
            detection_map(g, p, [0.5])
    p = {"results": {"ok": [{"segment": [1, 2], "label": "a", "score": 0.1}],
                     "v": [{"segment": [20, 10], "label": "a", "score": 0.9}]}}
    with pytest.raises(DataError, match="end"):
        detection_map(g, p, [0.5], strict=True)
    with pytest.raises(DataError, match="results"):
        detection_map(g, {"results": [1]}, [0.5])
    # accepted number types: ints, numpy floats, tuples; same result as plain floats
    ok = {"results": {"v": [{"segment": (10, np.float64(20.0)), "label": "a", "score": 1}]}}
    assert detection_map(g, ok, [0.5])["mAP"] == [1.0]


def test_validate_false_gives_the_same_result():
    rng = random.Random(7)
    for _ in range(20):
        g, p = _random_case(rng)
        if any(v["annotations"] for v in g["database"].values()):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # reversed segments
                a = detection_map(g, p, [0.3, 0.5, 0.7])
                b = detection_map(g, p, [0.3, 0.5, 0.7], validate=False)
            assert a["mAP"] == b["mAP"] and a["per_class"] == b["per_class"]


def test_matches_loop_reference_on_crowded_groups():
    """Adversarial for the step-wise matching: one class, many ground truths per video (with
    exact duplicates and IoU ties), long prediction lists, thresholds 0 and 1."""
    rng = random.Random(99)
    thresholds = [0.0, 0.2, 0.5, 0.75, 1.0]
    for _ in range(8):
        db, res = {}, {}
        for v in range(rng.randint(1, 4)):
            anns = []
            for _ in range(rng.randint(1, 25)):
                s = float(rng.randint(0, 40))
                anns.append(((s, s + rng.choice([2.0, 4.0, 8.0])), rng.choice("ab")))
            anns += anns[: rng.randint(0, 3)]  # duplicated ground truth
            preds = []
            for _ in range(rng.randint(0, 120)):
                (s, e), c = rng.choice(anns)
                d = rng.choice([0.0, 0.0, 1.0, -1.0, 2.0])
                preds.append(((s + d, e + rng.choice([0.0, 1.0])), c, rng.choice([0.9, 0.5, 0.1])))
            db[f"v{v}"], res[f"v{v}"] = anns, preds
        g, p = gt(**db), pred(**res)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zero-length predictions
            ours = detection_map(g, p, thresholds)
        ref = detection_map_reference(g, p, thresholds)
        assert ours["mAP"] == ref["mAP"]  # bit-equal: same operations in the same order
        for c, aps in ref["per_class"].items():
            assert ours["per_class"][c] == aps
