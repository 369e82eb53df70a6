"""Pseudo-label selection: thresholds, min_num / max_num, clipping, de-duplication, subsets."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import stovtal.ops as ops
from stovtal.selftrain.filtering import (
    nested_subset,
    select_pseudo_labels,
    select_video,
    video_thresholds,
)

needs_nms = pytest.mark.skipif(not hasattr(ops, "temporal_nms"), reason="stovtal.ops.temporal_nms not built")


def reference_select(segs, act, duration, threshold, min_num, max_num):
    """Independent loop version (no de-duplication)."""
    items = []
    for i, ((s, e), a) in enumerate(zip(segs, act, strict=True)):
        s, e = min(max(s, 0.0), duration), min(max(e, 0.0), duration)
        if e > s:
            items.append((-a, i, s, e, a))
    items.sort()
    kept = [x for x in items if x[4] >= threshold]
    if len(kept) < min_num:
        kept = items[:min_num]
    if max_num > 0:
        kept = kept[:max_num]
    return [(s, e) for _, _, s, e, _ in kept], [a for *_, a in kept]


def test_threshold_filters_and_min_num():
    segs = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0], [6.0, 7.0]])
    act = np.array([0.2, 0.9, 0.01, 0.5])
    s, a = select_video(segs, act, 10.0, threshold=0.3)
    assert a.tolist() == [0.9, 0.5]
    assert s.tolist() == [[2.0, 3.0], [6.0, 7.0]]
    # nothing passes: min_num keeps the best one(s) anyway
    s, a = select_video(segs, act, 10.0, threshold=0.95, min_num=1)
    assert a.tolist() == [0.9]
    s, a = select_video(segs, act, 10.0, threshold=0.95, min_num=3)
    assert a.tolist() == [0.9, 0.5, 0.2]
    s, a = select_video(segs, act, 10.0, threshold=0.95, min_num=0)
    assert len(a) == 0 and s.shape == (0, 2)
    s, a = select_video(segs, act, 10.0, threshold=0.0, max_num=2)
    assert a.tolist() == [0.9, 0.5]
    # a lower threshold keeps a superset
    assert len(select_video(segs, act, 10.0, 0.1)[1]) == 3


def test_clipping_to_duration():
    segs = np.array([[-2.0, 1.0], [8.0, 12.0], [11.0, 13.0], [3.0, 3.0]])
    act = np.array([0.9, 0.8, 0.7, 0.6])
    s, a = select_video(segs, act, 10.0, threshold=0.0)
    assert s.tolist() == [[0.0, 1.0], [8.0, 10.0]]  # fully outside / empty ones are dropped
    assert a.tolist() == [0.9, 0.8]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.floats(-5, 25), st.floats(0, 10), st.floats(0, 1)), min_size=0, max_size=12),
    st.floats(0, 1), st.integers(0, 3), st.integers(0, 4),
)
def test_select_matches_reference(rows, threshold, min_num, max_num):
    segs = np.array([[s, s + w] for s, w, _ in rows], dtype=np.float64).reshape(-1, 2)
    act = np.array([a for *_, a in rows], dtype=np.float64)
    s, a = select_video(segs, act, 20.0, threshold, min_num, max_num)
    rs, ra = reference_select(segs.tolist(), act.tolist(), 20.0, threshold, min_num, max_num)
    assert s.tolist() == [list(x) for x in rs]
    assert a.tolist() == ra


@needs_nms
def test_dedup_at_tiou_half():
    segs = np.array([[0.0, 10.0], [1.0, 10.0], [0.0, 4.0], [20.0, 30.0]])
    act = np.array([0.9, 0.8, 0.7, 0.6])  # IoU(0,1) = 0.9 (removed), IoU(0,2) = 0.4 (kept)
    s, a = select_video(segs, act, 40.0, 0.0, dedup_iou=0.5)
    assert a.tolist() == [0.9, 0.7, 0.6]
    s, a = select_video(segs, act, 40.0, 0.0, dedup_iou=None)
    assert len(a) == 4
    # min_num counts distinct segments after de-duplication
    s, a = select_video(segs, act, 40.0, 0.85, min_num=2, dedup_iou=0.5)
    assert a.tolist() == [0.9, 0.7]


def _cands():
    return {
        "v1": {"duration": 10.0, "segments": [[0, 1], [2, 3], [4, 5]], "actionness": [0.8, 0.4, 0.1]},
        "v2": {"duration": 10.0, "segments": [[0, 2], [5, 6]], "actionness": [0.2, 0.15]},
        "v3": {"duration": 10.0, "fps": 25.0, "segments": [], "actionness": []},
    }


def test_adaptive_thresholds():
    c = _cands()
    assert video_thresholds(c, "fixed", 0.3) == {"v1": 0.3, "v2": 0.3, "v3": 0.3}
    pv = video_thresholds(c, "per_video", 0.05, ratio=0.5)
    assert pv["v1"] == pytest.approx(0.4) and pv["v2"] == pytest.approx(0.1) and pv["v3"] == 0.05
    q = video_thresholds(c, "quantile", 0.0, quantile=0.5)
    expect = float(np.quantile([0.8, 0.4, 0.1, 0.2, 0.15], 0.5))
    assert list(q.values()) == pytest.approx([expect] * 3)
    with pytest.raises(ValueError, match="threshold mode"):
        video_thresholds(c, "bogus", 0.3)


def test_select_pseudo_labels_format():
    db = select_pseudo_labels(_cands(), "per_video", 0.05, min_num=1, ratio=0.5)["database"]
    assert [a["actionness"] for a in db["v1"]["annotations"]] == [0.8, 0.4]
    assert [a["actionness"] for a in db["v2"]["annotations"]] == [0.2, 0.15]
    assert db["v3"]["annotations"] == [] and db["v3"]["fps"] == 25.0
    assert all(a["label"] == "action" for v in db.values() for a in v["annotations"])
    with pytest.raises(ValueError, match="threshold must be >= 0"):
        select_pseudo_labels(_cands(), threshold=-0.1)
    bad = {"v": {"duration": 5.0, "segments": [[0, 1]], "actionness": [float("nan")]}}
    with pytest.raises(ValueError, match="NaN"):
        select_pseudo_labels(bad)
    bad = {"v": {"duration": 5.0, "segments": [[0, 1], [1, 2]], "actionness": [0.3]}}
    with pytest.raises(ValueError, match="2 segments but 1"):
        select_pseudo_labels(bad)


def test_nested_subsets():
    pool = [f"web_{i:05d}" for i in range(500)]
    small, big = nested_subset(pool, 50, seed=3), nested_subset(pool, 200, seed=3)
    assert len(small) == 50 and len(big) == 200 and set(small) <= set(big)
    assert nested_subset(list(reversed(pool)), 50, seed=3) == small  # order does not matter
    grown = nested_subset(pool + [f"more_{i}" for i in range(100)], 50, 3)
    assert set(grown) - set(small) <= {f"more_{i}" for i in range(100)}  # old members keep their rank
    assert nested_subset(pool, 50, seed=4) != small
    assert nested_subset(pool, None, 0) == sorted(pool) == nested_subset(pool, 10_000, 0)
    with pytest.raises(ValueError, match="duplicate"):
        nested_subset(["a", "a"], 1, 0)
