"""Localisation metrics: recall, AR@AN, class-agnostic mAP."""

import random

import numpy as np
import pytest

from stovtal.eval import detection_map, localization_metrics
from stovtal.eval.proposals import AR_TIOUS


def _iou(a, b):
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    return inter / ((a[1] - a[0]) + (b[1] - b[0]) - inter)


def test_hand_case():
    g = {"database": {"v": {"duration": 100.0, "annotations": [
        {"segment": [10, 20], "label": "a"}, {"segment": [40, 50], "label": "b"}]}}}
    p = {"results": {"v": [
        {"segment": [60, 70], "label": "a", "score": 0.9},
        {"segment": [11, 20], "label": "b", "score": 0.8},  # IoU 0.9 with [10, 20]
        {"segment": [40, 48], "label": "a", "score": 0.7},  # IoU 0.8 with [40, 50]
    ]}}
    m = localization_metrics(g, p, top_n=(1, 2, 3), ar_an=(1, 2, 3))
    assert m["recall@1xGT"] == 0.5  # top 2 proposals
    assert m["recall@5xGT"] == 1.0
    assert (m["recall@1"], m["recall@2"], m["recall@3"]) == (0.0, 0.5, 1.0)
    # AR over 0.5:0.95: [10,20] is recalled up to 0.9 (9 of 10 thresholds), [40,50] up to 0.8 (7)
    assert m["AR@2"] == pytest.approx(9 / 20) and m["AR@3"] == pytest.approx(16 / 20)
    # labels are ignored in the class-agnostic mAP
    assert m["class_agnostic_mAP"][0] == pytest.approx(
        detection_map({"database": {"v": {"duration": 100.0, "annotations": [
            {"segment": s, "label": "x"} for s in ([10, 20], [40, 50])]}}},
            {"results": {"v": [{**q, "label": "x"} for q in p["results"]["v"]]}}, [0.5])["mAP"][0])


def test_recall_matches_brute_force():
    rng = random.Random(7)
    db, res = {}, {}
    for v in range(10):
        gts = []
        for _ in range(rng.randint(1, 4)):
            s = rng.uniform(0, 90)
            gts.append([s, s + rng.uniform(1, 10)])
        props = []
        for _ in range(rng.randint(0, 30)):
            s = rng.uniform(0, 90)
            props.append({"segment": [s, s + rng.uniform(1, 10)], "label": "x", "score": rng.random()})
        db[f"v{v}"] = {"duration": 100.0, "annotations": [{"segment": s, "label": "x"} for s in gts]}
        res[f"v{v}"] = props
    m = localization_metrics({"database": db}, {"results": res}, top_n=(5, 10), ar_an=(5, 10))

    def recall(n_of, thr):
        hits = total = 0
        for v, info in db.items():
            props = sorted(res[v], key=lambda q: -q["score"])
            n = n_of(len(info["annotations"]))
            for a in info["annotations"]:
                total += 1
                hits += any(_iou(a["segment"], q["segment"]) >= thr for q in props[:n])
        return hits / total

    assert m["recall@5"] == pytest.approx(recall(lambda g: 5, 0.5))
    assert m["recall@1xGT"] == pytest.approx(recall(lambda g: g, 0.5))
    assert m["AR@10"] == pytest.approx(np.mean([recall(lambda g: 10, t) for t in AR_TIOUS]))
    assert 0.0 <= m["AR_AUC"] <= 1.0


def test_errors():
    with pytest.raises(ValueError, match="no annotations"):
        localization_metrics({"database": {"v": {"duration": 1.0, "annotations": []}}}, {"results": {}})
