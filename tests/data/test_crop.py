"""Training crops (``stovtal.data.crop``) against an oracle written from ActionFormer's
``truncate_feats`` rule (happyharrycn/actionformer_release ``libs/datasets/data_utils.py``,
with the ``offset`` its datasets pass: ``num_frames / 2 / feat_stride``).

The oracle works like the reference: float32 tensors, the window length drawn only for videos
of at most ``max_seq_len`` snippets with a crop ratio, up to ``trials`` starts until a segment
keeps ``trunc_thresh`` of itself inside the offset-widened window. Both sides draw through the
same ``randint`` on generators with the same seed, so they must pick the same window.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stovtal.data.crop import CropRule, crop_window, torch_randint, window_length


def oracle(T, segments, max_seq_len, trunc_thresh, offset, crop_ratio, randint, trials=200):
    """(start, stop, kept mask, kept segments relative to start) by the reference's rule, or
    (0, T, all, segments) when the reference returns the video unchanged."""
    segs = torch.as_tensor(np.asarray(segments, dtype=np.float32).reshape(-1, 2))
    length = max_seq_len
    if T <= max_seq_len:
        if crop_ratio is None:
            return 0, T, torch.ones(len(segs), dtype=torch.bool), segs
        length = randint(max(round(crop_ratio[0] * T), 1), min(round(crop_ratio[1] * T), T))
        if length == T:
            return 0, T, torch.ones(len(segs), dtype=torch.bool), segs
    for _ in range(trials):
        s = randint(0, T - length)
        lo = torch.full((len(segs),), float(s)) - offset
        hi = torch.full((len(segs),), float(s + length)) + offset
        left = torch.maximum(lo, segs[:, 0])
        right = torch.minimum(hi, segs[:, 1])
        ratio = (right - left).clamp(min=0) / (segs[:, 1] - segs[:, 0]).abs()
        keep = ratio >= trunc_thresh
        if keep.any():
            break
    return s, s + length, keep, torch.stack([left[keep], right[keep]], 1) - s


def _both(T, segs, rule, seed=0):
    ours = crop_window(T, segs, rule, torch_randint(torch.Generator().manual_seed(seed)))
    ref = oracle(T, segs, rule.max_seq_len, rule.trunc_thresh, rule.offset, rule.crop_ratio,
                 torch_randint(torch.Generator().manual_seed(seed)), rule.trials)
    return ours, ref


def _assert_same(ours, ref):
    start, stop, keep, segs = ref
    assert (ours.start, ours.stop) == (start, stop)
    assert ours.keep.tolist() == keep.tolist()
    assert ours.segments.shape == tuple(segs.shape)
    np.testing.assert_allclose(ours.segments, segs.double().numpy(), rtol=0, atol=1e-4)


# segments on a 1/8 grid: exact in float32 and float64, so both sides see the same ratios
_coord = st.integers(-64, 8 * 400).map(lambda k: k / 8)
_segment = st.tuples(_coord, st.integers(1, 8 * 120).map(lambda k: k / 8)).map(lambda p: (p[0], p[0] + p[1]))


@settings(max_examples=300, deadline=None)
@given(T=st.integers(1, 400), segs=st.lists(_segment, min_size=1, max_size=8),
       max_seq_len=st.integers(1, 300), ratio=st.sampled_from([None, (0.9, 1.0), (0.5, 1.0), (0.3, 0.6), (1.0, 1.0)]),
       thresh=st.sampled_from([0.25, 0.5, 0.75, 1.0, 0.3, 0.9]), offset=st.sampled_from([0.0, 0.5, 2.0]),
       seed=st.integers(0, 2**31 - 1))
def test_same_window_and_segments_as_the_reference_rule(T, segs, max_seq_len, ratio, thresh, offset, seed):
    rule = CropRule(max_seq_len, ratio, thresh, offset)
    _assert_same(*_both(T, segs, rule, seed))


def test_a_long_video_is_cropped_to_max_seq_len_keeping_a_segment():
    segs = [[10.0, 20.0], [300.0, 330.0], [900.0, 905.0]]
    rule = CropRule(100, None, 0.5, 2.0)
    for seed in range(20):
        ours, ref = _both(1000, segs, rule, seed)
        _assert_same(ours, ref)
        assert ours.stop - ours.start == 100 and ours.keep.any()


def test_short_videos_are_left_whole_without_crop_ratio():
    # segments reaching past the video stay as they are (no clipping without a crop)
    segs = [[-3.0, 4.0], [40.0, 55.0]]
    w = crop_window(50, segs, CropRule(64, None, 0.5, 2.0), torch_randint(torch.Generator().manual_seed(0)))
    assert (w.start, w.stop) == (0, 50) and w.keep.all()
    np.testing.assert_array_equal(w.segments, segs)


def test_crop_ratio_crops_short_videos_to_lengths_in_range():
    # T = 25: round(0.9 * 25) = round(22.5) = 22 (halves to even, as Python's round)
    rule = CropRule(2304, (0.9, 1.0), 0.5, 2.0)
    g = torch.Generator().manual_seed(0)
    lengths = {window_length(25, rule, torch_randint(g)) for _ in range(400)}
    assert lengths == {22, 23, 24, 25}
    starts = set()
    for seed in range(60):
        ours, ref = _both(25, [[3.0, 8.0], [15.0, 24.5]], rule, seed)
        _assert_same(ours, ref)
        starts.add(ours.start)
    assert starts == {0, 1, 2, 3}


def test_whole_when_the_drawn_length_is_the_video():
    rule = CropRule(2304, (1.0, 1.0), 0.5, 2.0)
    w = crop_window(37, [[-5.0, 50.0]], rule, torch_randint(torch.Generator().manual_seed(1)))
    assert (w.start, w.stop) == (0, 37)
    np.testing.assert_array_equal(w.segments, [[-5.0, 50.0]])
    # a one-snippet video cannot be cropped
    assert crop_window(1, [[0.0, 1.0]], CropRule(8, (0.9, 1.0)), torch_randint()).stop == 1


def test_tiny_ratio_gives_one_snippet():
    # round(0.02 * 10) = 0 < 1: the reference's randint(1, 0) would fail; stovtal takes 1 snippet
    rule = CropRule(100, (0.01, 0.02), 0.5, 0.0)
    assert window_length(10, rule, torch_randint(torch.Generator().manual_seed(0))) == 1


def test_no_segment_survives_after_all_trials():
    # one long segment: no window of 10 (+ 2 x 2 offset) holds half of it
    rule = CropRule(10, None, 0.5, 2.0)
    g = torch.Generator().manual_seed(3)
    w = crop_window(100, [[0.0, 100.0]], rule, torch_randint(g))
    assert w.keep.tolist() == [False] and w.segments.shape == (0, 2)
    # the last of the 200 draws is the window, and nothing more was drawn
    g2 = torch.Generator().manual_seed(3)
    draws = [int(torch.randint(0, 91, (1,), generator=g2)) for _ in range(200)]
    assert w.start == draws[-1]
    assert torch.equal(g.get_state(), g2.get_state())
    _assert_same(*_both(100, [[0.0, 100.0]], rule, 3))


def test_video_without_segments_takes_one_draw():
    rule = CropRule(10, None, 0.5, 2.0)
    g = torch.Generator().manual_seed(5)
    w = crop_window(100, np.zeros((0, 2)), rule, torch_randint(g))
    g2 = torch.Generator().manual_seed(5)
    assert w.start == int(torch.randint(0, 91, (1,), generator=g2)) and w.stop == w.start + 10
    assert torch.equal(g.get_state(), g2.get_state()) and w.segments.shape == (0, 2)


@pytest.mark.parametrize(("start", "seg", "want"), [
    # window [start, start + 20) of a 100-snippet video, widened by offset 2: [start - 2, start + 22]
    (0, [-1.5, 3.0], [-1.5, 3.0]),      # starts before the video, inside the widened window: whole
    (0, [-6.0, 2.0], [-2.0, 2.0]),      # exactly half inside: kept, clipped
    (0, [-7.0, 1.0], None),             # 3/8 inside: dropped
    (10, [25.0, 40.0], None),           # 7/15 inside: dropped
    (10, [25.0, 36.0], [15.0, 22.0]),   # 7/11 inside: kept, clipped to start + 22
    (80, [95.0, 101.0], [15.0, 21.0]),  # reaches past the video's end, inside the widened window
])
def test_segments_at_the_borders(start, seg, want):
    rule = CropRule(20, None, 0.5, 2.0)
    w = crop_window(100, [seg], rule, lambda a, b: start)
    assert (w.start, w.stop) == (start, start + 20)
    assert w.keep.tolist() == [want is not None]
    np.testing.assert_array_equal(w.segments, np.asarray([want] if want else np.zeros((0, 2))))
    _assert_same(w, oracle(100, [seg], 20, 0.5, 2.0, None, lambda a, b: start))


def test_zero_length_segments_are_never_kept():
    w = crop_window(50, [[5.0, 5.0], [6.0, 9.0]], CropRule(20, None, 1.0, 0.0), lambda a, b: 0)
    assert w.keep.tolist() == [False, True]


@pytest.mark.parametrize(("kwargs", "msg"), [
    ({"max_seq_len": 0}, "max_seq_len must be >= 1"),
    ({"crop_ratio": (0.9,)}, "crop_ratio must be"),
    ({"crop_ratio": (1.0, 0.9)}, "crop_ratio must be"),
    ({"crop_ratio": (0.0, 0.5)}, "crop_ratio must be"),
    ({"crop_ratio": (0.5, 1.5)}, "crop_ratio must be"),
    ({"trunc_thresh": 0.0}, "trunc_thresh must be in"),
    ({"trunc_thresh": 1.5}, "trunc_thresh must be in"),
    ({"offset": -1.0}, "offset must be >= 0"),
    ({"trials": 0}, "trials must be >= 1"),
])
def test_bad_rules(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        CropRule(**{"max_seq_len": 10, **kwargs})
