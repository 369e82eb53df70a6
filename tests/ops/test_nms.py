"""temporal_nms and soft_nms: every semantic point of the contract, against the
independent references in stovtal.ops.reference, plus reference-free properties."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stovtal.ops import reference, segment_iou, soft_nms, temporal_nms

from .candidates import clustered_candidates

NAN = float("nan")
INF = float("inf")


def assert_soft_equal(out, expected, exact=True):
    """Same selection; float64 values equal up to a few ulp (libm vs. vectorised exp,
    summation order of voting), float32 up to the default tolerance."""
    seg, sc, idx = out
    eseg, esc, eidx = expected
    assert idx.dtype == torch.long
    assert torch.equal(idx, eidx)
    tol = {"rtol": 1e-12, "atol": 1e-15} if exact else {}
    torch.testing.assert_close(sc, esc, **tol)
    torch.testing.assert_close(seg, eseg, **tol)


# ---------------------------------------------------------------- temporal_nms


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("num_labels", [None, 1, 7])
@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.7, 1.0])
def test_temporal_nms_matches_reference(dtype, num_labels, threshold):
    g = torch.Generator().manual_seed(11)
    seg, sc, lab = clustered_candidates(200, g, num_labels, dtype)
    for max_keep in (-1, 5):
        out = temporal_nms(seg, sc, threshold, lab, max_keep)
        assert torch.equal(out, reference.temporal_nms(seg, sc, threshold, lab, max_keep))


def test_suppression_is_strictly_greater_than_threshold():
    # IoU([0, 2], [1, 2]) = 1 / 2 exactly.
    seg = torch.tensor([[0.0, 2.0], [1.0, 2.0]])
    sc = torch.tensor([0.9, 0.8])
    assert temporal_nms(seg, sc, 0.5).tolist() == [0, 1]  # 0.5 > 0.5 is false (ActionFormer's >= would drop 1)
    assert temporal_nms(seg, sc, 0.4999).tolist() == [0]


def test_greedy_only_kept_candidates_suppress():
    # 0 overlaps 1 and 1 overlaps 2, but 0 and 2 are disjoint: 1 is suppressed by 0, and a
    # suppressed candidate never suppresses, so 2 survives.
    seg = torch.tensor([[0.0, 10.0], [5.0, 15.0], [11.0, 21.0]])
    sc = torch.tensor([0.9, 0.8, 0.7])
    assert temporal_nms(seg, sc, 0.2).tolist() == [0, 2]


def test_output_is_in_score_order_with_ties_by_lower_index():
    seg = torch.tensor([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0], [6.0, 7.0], [0.0, 1.0]])
    sc = torch.tensor([0.5, 0.9, 0.5, 0.9, 0.5])
    # disjoint except 4 == 0 (identical, equal score: the lower index wins)
    assert temporal_nms(seg, sc, 0.5).tolist() == [1, 3, 0, 2]


def test_all_equal_scores_and_identical_segments():
    g = torch.Generator().manual_seed(12)
    seg, _, _ = clustered_candidates(200, g)
    sc = torch.full((200,), 0.25, dtype=torch.float64)
    out = temporal_nms(seg, sc, 0.3)
    assert torch.equal(out, reference.temporal_nms(seg, sc, 0.3))
    assert bool((out[1:] > out[:-1]).all())  # all ties: kept in index order
    same = torch.tensor([[3.0, 5.0]]).repeat(6, 1)
    assert temporal_nms(same, torch.ones(6), 0.99).tolist() == [0]
    assert temporal_nms(same, torch.ones(6), 1.0).tolist() == list(range(6))  # IoU 1 is not > 1


def test_zero_length_segments_never_suppress():
    seg = torch.tensor([[1.0, 1.0], [1.0, 1.0], [0.0, 2.0], [3.0, 2.0]])  # two points, one span, one reversed
    sc = torch.tensor([0.9, 0.8, 0.7, 0.6])
    assert temporal_nms(seg, sc, 0.0).tolist() == [0, 1, 2, 3]
    assert temporal_nms(seg, sc, 0.5).tolist() == [0, 1, 2, 3]
    # identical zero-length segments have IoU 0 (ActionFormer: 0 / 2e-6 = 0 as well)
    assert temporal_nms(seg[:2], sc[:2], 0.0).tolist() == [0, 1]
    # below 0 every IoU exceeds the threshold: one segment per label survives
    assert temporal_nms(seg, sc, -0.1).tolist() == [0]
    assert torch.equal(temporal_nms(seg, sc, -0.1), reference.temporal_nms(seg, sc, -0.1))


def test_per_label_nms():
    seg = torch.tensor([[0.0, 10.0], [0.0, 10.0], [1.0, 10.0], [50.0, 60.0]])
    sc = torch.tensor([0.5, 0.9, 0.7, 0.8])
    labels = torch.tensor([3, 8, 3, 3])
    # 1 only competes with label 8; within label 3, 2 suppresses 0 (IoU 0.9).
    assert temporal_nms(seg, sc, 0.5, labels).tolist() == [1, 3, 2]
    assert temporal_nms(seg, sc, 0.5).tolist() == [1, 3]


def test_per_label_equals_separate_runs_merged_by_score():
    g = torch.Generator().manual_seed(13)
    seg, sc, lab = clustered_candidates(500, g, num_labels=6)
    lab = lab * 1000 - 2500  # arbitrary (negative, sparse) label values
    merged = []
    for value in lab.unique():
        idx = torch.nonzero(lab == value).flatten()
        merged.append(idx[temporal_nms(seg[idx], sc[idx], 0.4)])
    merged = torch.cat(merged)
    merged = merged[torch.sort(sc[merged], descending=True, stable=True).indices]
    assert torch.equal(temporal_nms(seg, sc, 0.4, lab), merged)
    assert torch.equal(temporal_nms(seg, sc, 0.4, lab.int()), merged)  # any integer dtype


def test_max_keep_truncates():
    g = torch.Generator().manual_seed(14)
    seg, sc, lab = clustered_candidates(300, g, num_labels=4)
    full = temporal_nms(seg, sc, 0.3, lab)
    assert len(full) > 10
    assert torch.equal(temporal_nms(seg, sc, 0.3, lab, max_keep=10), full[:10])
    assert torch.equal(temporal_nms(seg, sc, 0.3, lab, max_keep=0), full)
    assert torch.equal(temporal_nms(seg, sc, 0.3, lab, max_keep=10**6), full)


def test_empty_and_single():
    out = temporal_nms(torch.zeros(0, 2), torch.zeros(0), 0.5)
    assert out.shape == (0,) and out.dtype == torch.long
    assert temporal_nms(torch.zeros(0, 2), torch.zeros(0), 0.5, torch.zeros(0, dtype=torch.long)).shape == (0,)
    assert temporal_nms(torch.tensor([[1.0, 2.0]]), torch.tensor([-3.0]), 0.5).tolist() == [0]


def test_infinite_scores_are_ordered():
    seg = torch.tensor([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]])
    assert temporal_nms(seg, torch.tensor([0.0, INF, -INF]), 0.5).tolist() == [1, 0, 2]


def test_matches_torchvision_on_unit_height_boxes():
    tv = pytest.importorskip("torchvision")
    g = torch.Generator().manual_seed(15)
    seg, sc, lab = clustered_candidates(600, g, num_labels=5, dtype=torch.float32)
    ones = torch.ones(600, 1)
    boxes = torch.cat([seg[:, :1], 0 * ones, seg[:, 1:], ones], 1)
    assert torch.equal(temporal_nms(seg, sc, 0.35), tv.ops.nms(boxes, sc, 0.35))
    assert torch.equal(temporal_nms(seg, sc, 0.35, lab), tv.ops.batched_nms(boxes, sc, lab, 0.35))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_compares_in_float32(dtype):
    g = torch.Generator().manual_seed(16)
    seg, sc, lab = clustered_candidates(300, g, num_labels=3, dtype=torch.float32)
    seg, sc = seg.to(dtype), sc.to(dtype)
    expected = reference.temporal_nms(seg.float(), sc.float(), 0.3, lab)
    assert torch.equal(temporal_nms(seg, sc, 0.3, lab), expected)
    got = soft_nms(seg, sc, 0.3, 0.5, 0.01, "gaussian", lab)
    exp = reference.soft_nms(seg.float(), sc.float(), 0.3, 0.5, 0.01, "gaussian", lab)
    assert torch.equal(got[2], exp[2])
    torch.testing.assert_close(got[1], exp[1].to(dtype))
    assert got[0].dtype == dtype and got[1].dtype == dtype


def test_non_contiguous_inputs():
    g = torch.Generator().manual_seed(17)
    seg, sc, lab = clustered_candidates(400, g, num_labels=3)
    seg_nc = seg.t().contiguous().t()
    sc_nc = torch.stack([sc, sc], 1)[:, 0]
    lab_nc = torch.stack([lab, lab], 1)[:, 1]
    assert not (seg_nc.is_contiguous() or sc_nc.is_contiguous() or lab_nc.is_contiguous())
    assert torch.equal(temporal_nms(seg_nc, sc_nc, 0.3, lab_nc), temporal_nms(seg, sc, 0.3, lab))
    assert_soft_equal(
        soft_nms(seg_nc, sc_nc, 0.3, 0.5, 0.1, "linear", lab_nc, voting_threshold=0.6),
        soft_nms(seg, sc, 0.3, 0.5, 0.1, "linear", lab, voting_threshold=0.6),
    )


# ---------------------------------------------------------------- soft_nms


@pytest.mark.parametrize("method", ["linear", "gaussian"])
@pytest.mark.parametrize("num_labels", [None, 5])
@pytest.mark.parametrize("voting", [None, 0.7])
def test_soft_nms_matches_reference(method, num_labels, voting):
    g = torch.Generator().manual_seed(21)
    seg, sc, lab = clustered_candidates(250, g, num_labels)
    for max_keep, min_score in [(-1, 0.001), (40, 0.0), (-1, 0.3)]:
        args = (seg, sc, 0.3, 0.5, min_score, method, lab, max_keep, voting)
        assert_soft_equal(soft_nms(*args), reference.soft_nms(*args))


def test_soft_nms_float32_matches_reference():
    g = torch.Generator().manual_seed(22)
    seg, sc, lab = clustered_candidates(300, g, 4, torch.float32)
    for method in ("linear", "gaussian"):
        args = (seg, sc, 0.2, 0.4, 0.01, method, lab, -1, 0.75)
        assert_soft_equal(soft_nms(*args), reference.soft_nms(*args), exact=False)


def test_soft_nms_linear_decays_only_at_or_above_threshold():
    # IoU with the first: 0.5 exactly, 0.25 exactly, 0.
    seg = torch.tensor([[0.0, 4.0], [2.0, 4.0], [3.0, 4.0], [10.0, 11.0]], dtype=torch.float64)
    sc = torch.tensor([1.0, 0.8, 0.7, 0.6], dtype=torch.float64)
    _, scores, idx = soft_nms(seg, sc, 0.5, 0.5, 0.0, "linear")
    assert idx.tolist() == [0, 2, 3, 1]
    # 1: IoU 0.5 >= 0.5 -> 0.8 * 0.5 = 0.4, then IoU(2, 1) = 0.5 -> 0.2; 2: IoU 0.25 < 0.5 -> 0.7.
    assert scores.tolist() == [1.0, 0.7, 0.6, 0.2]


def test_soft_nms_gaussian_ignores_threshold():
    seg = torch.tensor([[0.0, 4.0], [2.0, 4.0], [20.0, 21.0]], dtype=torch.float64)
    sc = torch.tensor([1.0, 0.9, 0.1], dtype=torch.float64)
    _, scores, idx = soft_nms(seg, sc, 1.0, 0.5, 0.0, "gaussian")
    assert idx.tolist() == [0, 1, 2]
    torch.testing.assert_close(scores, torch.tensor([1.0, 0.9 * torch.exp(torch.tensor(-0.25 / 0.5)).item(), 0.1], dtype=torch.float64))


def test_soft_nms_min_score_is_strict_and_selected_never_dropped():
    seg = torch.tensor([[0.0, 2.0], [1.0, 2.0], [10.0, 11.0], [20.0, 21.0]], dtype=torch.float64)
    sc = torch.tensor([1.0, 0.5, 0.05, 0.3], dtype=torch.float64)
    # 1 decays to exactly 0.25: kept at min_score 0.25, dropped just above.
    assert soft_nms(seg, sc, 0.5, 0.5, 0.25, "linear")[2].tolist() == [0, 3, 1]
    assert soft_nms(seg, sc, 0.5, 0.5, 0.2500001, "linear")[2].tolist() == [0, 3]
    # All below min_score: the first selection is kept anyway, the rest dropped after it.
    _, scores, idx = soft_nms(seg, sc, 0.5, 0.5, 2.0, "gaussian")
    assert idx.tolist() == [0] and scores.tolist() == [1.0]
    # Identical segments decay to 0 under linear: kept at min_score 0 (0 < 0 is false).
    same = torch.tensor([[1.0, 3.0]] * 3, dtype=torch.float64)
    _, scores, idx = soft_nms(same, torch.tensor([0.5, 0.9, 0.7], dtype=torch.float64), 0.5, 0.5, 0.0, "linear")
    assert idx.tolist() == [1, 0, 2] and scores.tolist() == [0.9, 0.0, 0.0]


def test_soft_nms_ties_go_to_lowest_index():
    # 0 and 2 tie at 1.0 -> 0 first; 2 then decays to 0.5, tying with 1 -> 1 first.
    seg = torch.tensor([[0.0, 2.0], [10.0, 11.0], [1.0, 2.0]], dtype=torch.float64)
    sc = torch.tensor([1.0, 0.5, 1.0], dtype=torch.float64)
    out_seg, scores, idx = soft_nms(seg, sc, 0.3, 0.5, 0.0, "linear")
    assert idx.tolist() == [0, 1, 2] and scores.tolist() == [1.0, 0.5, 0.5]
    assert torch.equal(out_seg, seg[idx])  # no voting: the input segments
    equal = torch.full((50,), 0.5, dtype=torch.float64)
    g = torch.Generator().manual_seed(23)
    cand, _, _ = clustered_candidates(50, g)
    for method in ("linear", "gaussian"):
        args = (cand, equal, 0.2, 0.5, 0.01, method)
        assert_soft_equal(soft_nms(*args), reference.soft_nms(*args))


def test_soft_nms_per_label_equals_separate_runs():
    g = torch.Generator().manual_seed(24)
    seg, sc, lab = clustered_candidates(300, g, num_labels=4)
    got = soft_nms(seg, sc, 0.3, 0.5, 0.01, "gaussian", lab)
    parts = []
    for value in lab.unique():
        idx = torch.nonzero(lab == value).flatten()
        _, s, i = soft_nms(seg[idx], sc[idx], 0.3, 0.5, 0.01, "gaussian")
        parts.append((s, idx[i]))
    scores = torch.cat([p[0] for p in parts])
    index = torch.cat([p[1] for p in parts])
    # merge by selection score, ties by lower input index (sort by index, then stably by score)
    by_index = torch.argsort(index)
    order = by_index[torch.sort(scores[by_index], descending=True, stable=True).indices]
    assert torch.equal(got[2], index[order])
    torch.testing.assert_close(got[1], scores[order], rtol=0, atol=0)


def test_score_voting_formula():
    seg = torch.tensor([[0.0, 10.0], [1.0, 10.0], [0.0, 5.0], [0.0, 10.0], [30.0, 30.0]], dtype=torch.float64)
    sc = torch.tensor([0.9, 0.3, 0.8, 0.6, 0.7], dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 1, 0])
    out_seg, scores, idx = soft_nms(seg, sc, 0.99, 0.5, 0.0, "linear", labels, voting_threshold=0.7)
    assert idx.tolist() == [0, 2, 4, 3, 1]
    # 0 votes with itself (w 0.9 x IoU 1) and 1 (w 0.3 x IoU 0.9); 2 (IoU 0.5) and 3 (other label) do not.
    torch.testing.assert_close(out_seg[0], torch.tensor([0.27 / 1.17, 10.0], dtype=torch.float64))
    torch.testing.assert_close(out_seg[1], seg[2])  # only itself
    torch.testing.assert_close(out_seg[2], seg[4])  # zero length: IoU 0 with everything, unchanged
    torch.testing.assert_close(out_seg[3], seg[3])
    # 1 votes with 0 (w 0.9 x 0.9) and itself (w 0.3 x 1)
    torch.testing.assert_close(out_seg[4], torch.tensor([0.3 / 1.11, 10.0], dtype=torch.float64))
    assert scores.tolist() == sc[idx].tolist()  # voting leaves scores alone (nothing decayed here)
    # A negative score weighs 0: segment 0 keeps itself, segment 1 moves onto segment 0.
    neg_sc = torch.tensor([0.5, -0.4], dtype=torch.float64)
    neg_seg, _, neg_idx = soft_nms(seg[:2], neg_sc, 0.99, 0.5, -1.0, "linear", voting_threshold=0.7)
    assert neg_idx.tolist() == [0, 1]
    assert neg_seg.tolist() == [[0.0, 10.0], [0.0, 10.0]]


def seg_voting_rule(segments, scores, labels, kept, threshold):
    """Score voting written from ActionFormer's rule, one kept segment at a time in
    Python floats: every candidate j of the kept one's label with IoU >= threshold
    weighs max(score_j, 0) * IoU; weighted mean of (start, end); no weight -> unchanged."""
    seg, sc = segments.tolist(), scores.tolist()
    lab = [0] * len(sc) if labels is None else labels.tolist()
    out = []
    for k in kept.tolist():
        ks, ke = seg[k]
        total = start = end = 0.0
        for j, (js, je) in enumerate(seg):
            if lab[j] != lab[k]:
                continue
            inter = max(min(ke, je) - max(ks, js), 0.0)
            union = max(ke - ks, 0.0) + max(je - js, 0.0) - inter
            iou = inter / union if union > 0 else 0.0
            if iou >= threshold:
                w = max(sc[j], 0.0) * iou
                total, start, end = total + w, start + w * js, end + w * je
        out.append([start / total, end / total] if total > 0 else [ks, ke])
    return torch.tensor(out, dtype=torch.float64).reshape(-1, 2)


@pytest.mark.parametrize("num_labels", [None, 4])
@pytest.mark.parametrize("threshold", [0.3, 0.75, 1.0])
def test_score_voting_matches_the_rule(num_labels, threshold):
    g = torch.Generator().manual_seed(26)
    seg, sc, lab = clustered_candidates(300, g, num_labels)
    sc[::7] = -sc[::7]  # some negative scores (weight 0)
    seg[::11, 1] = seg[::11, 0]  # some zero-length segments (IoU 0 with all)
    for method in ("linear", "gaussian"):
        out_seg, _, idx = soft_nms(seg, sc, 0.3, 0.5, -1.0, method, lab, 80, threshold)
        plain_seg, _, plain_idx = soft_nms(seg, sc, 0.3, 0.5, -1.0, method, lab, 80)
        assert torch.equal(idx, plain_idx) and torch.equal(plain_seg, seg[idx])
        torch.testing.assert_close(out_seg, seg_voting_rule(seg, sc, lab, idx, threshold), rtol=1e-12, atol=1e-12)
        moved = (out_seg != seg[idx]).any(1)
        assert 0 < int(moved.sum()) < len(idx)  # the test exercises both cases


def test_gaussian_weight_is_float64_exp_rounded_once():
    """The gaussian weight for float32 inputs is exp(-iou^2 / sigma) computed in float64 from
    the float32 IoU and sigma and rounded to float32 once (bit-identical on every backend).

    Each label holds [0, b] (score 1, selected first) and [0, a] (score 1): IoU = a / b in
    float32 exactly, and the second selection's score is the weight itself."""
    pairs = [(a, b) for b in range(2, 60) for a in range(1, b)]
    n = len(pairs)
    seg = torch.zeros(2 * n, 2)
    seg[0::2, 1] = torch.tensor([float(b) for _, b in pairs])
    seg[1::2, 1] = torch.tensor([float(a) for a, _ in pairs])
    labels = torch.arange(n).repeat_interleave(2)
    sigma = 0.5
    _, scores, idx = soft_nms(seg, torch.ones(2 * n), 0.0, sigma, 0.0, "gaussian", labels)
    weight = dict(zip(idx.tolist(), scores.tolist(), strict=True))
    sigma32 = float(torch.tensor(sigma, dtype=torch.float32))
    for g, (a, b) in enumerate(pairs):
        assert weight[2 * g] == 1.0
        iou = float(torch.tensor(float(a)) / torch.tensor(float(b)))  # the float32 IoU
        expected = float(torch.tensor(math.exp(-(iou * iou) / sigma32), dtype=torch.float64).float())
        assert weight[2 * g + 1] == expected, (a, b)
    # pinned values (float32 bits); glibc's expf of the float32 argument gives
    # 0x1.a4fa9cp-2, 0x1.71193ap-2 and 0x1.7a5d12p-1 for the first three
    pinned = {(2, 3): "0x1.a4fa9ep-2", (5, 7): "0x1.711938p-2", (7, 18): "0x1.7a5d10p-1", (1, 2): "0x1.368b30p-1"}
    for (a, b), bits in pinned.items():
        assert weight[2 * pairs.index((a, b)) + 1] == float.fromhex(bits), (a, b)


def test_gaussian_weight_float64():
    pairs = [(a, b) for b in range(2, 40) for a in range(1, b)]
    n = len(pairs)
    seg = torch.zeros(2 * n, 2, dtype=torch.float64)
    seg[0::2, 1] = torch.tensor([float(b) for _, b in pairs])
    seg[1::2, 1] = torch.tensor([float(a) for a, _ in pairs])
    labels = torch.arange(n).repeat_interleave(2)
    _, scores, idx = soft_nms(seg, torch.ones(2 * n, dtype=torch.float64), 0.0, 0.3, 0.0, "gaussian", labels)
    weight = dict(zip(idx.tolist(), scores.tolist(), strict=True))
    for g, (a, b) in enumerate(pairs):
        assert weight[2 * g + 1] == pytest.approx(math.exp(-((a / b) ** 2) / 0.3), rel=3e-16, abs=0)


def test_soft_nms_empty_and_single():
    seg, sc, idx = soft_nms(torch.zeros(0, 2), torch.zeros(0), 0.3, 0.5, 0.1, "gaussian", voting_threshold=0.7)
    assert seg.shape == (0, 2) and sc.shape == (0,) and idx.shape == (0,) and idx.dtype == torch.long
    one = torch.tensor([[2.0, 5.0]])
    seg, sc, idx = soft_nms(one, torch.tensor([0.01]), 0.3, 0.5, 0.5, "linear", voting_threshold=0.7)
    assert torch.equal(seg, one) and torch.equal(sc, torch.tensor([0.01])) and idx.tolist() == [0]


def test_soft_nms_method_codes():
    g = torch.Generator().manual_seed(25)
    seg, sc, _ = clustered_candidates(60, g)
    for name, code in (("linear", 1), ("gaussian", 2)):
        assert_soft_equal(soft_nms(seg, sc, 0.3, 0.5, 0.01, code), soft_nms(seg, sc, 0.3, 0.5, 0.01, name))


# ---------------------------------------------------------------- bad input


def _call_both(seg, sc, labels=None):
    return (
        lambda: temporal_nms(seg, sc, 0.5, labels),
        lambda: soft_nms(seg, sc, 0.5, 0.5, 0.1, "gaussian", labels),
    )


@pytest.mark.parametrize(
    "seg,sc,labels,match",
    [
        (torch.tensor([[0.0, 1.0], [1.0, 2.0]]), torch.tensor([0.5, NAN]), None, "NaN"),
        (torch.tensor([[0.0, NAN], [1.0, 2.0]]), torch.tensor([0.5, 0.4]), None, "segments must be finite"),
        (torch.tensor([[0.0, INF], [1.0, 2.0]]), torch.tensor([0.5, 0.4]), None, "segments must be finite"),
        (torch.zeros(3, 3), torch.zeros(3), None, r"shape \[N, 2\]"),
        (torch.zeros(3), torch.zeros(3), None, "2-D"),
        (torch.zeros(3, 2), torch.zeros(3, 1), None, "1-D"),
        (torch.zeros(3, 2), torch.zeros(4), None, "scores must have shape"),
        (torch.zeros(3, 2), torch.zeros(3, dtype=torch.float64), None, "same dtype"),
        (torch.zeros(3, 2, dtype=torch.long), torch.zeros(3, dtype=torch.long), None, "floating"),
        (torch.zeros(3, 2), torch.zeros(3), torch.zeros(3), "labels must be an integer"),
        (torch.zeros(3, 2), torch.zeros(3), torch.zeros(3, dtype=torch.bool), "labels must be an integer"),
        (torch.zeros(3, 2), torch.zeros(3), torch.zeros(2, dtype=torch.long), "labels must have shape"),
        (torch.zeros(3, 2), torch.zeros(3), torch.zeros(3, 1, dtype=torch.long), "1-D"),
    ],
)
def test_bad_inputs_raise_clear_errors(seg, sc, labels, match):
    for fn in _call_both(seg, sc, labels):
        with pytest.raises(RuntimeError, match=match):
            fn()


def test_bad_parameters():
    seg, sc = torch.tensor([[0.0, 1.0]]), torch.tensor([0.5])
    with pytest.raises(RuntimeError, match="iou_threshold must not be NaN"):
        temporal_nms(seg, sc, NAN)
    with pytest.raises(RuntimeError, match="scores must be finite"):
        soft_nms(seg, torch.tensor([INF]), 0.5, 0.5, 0.1, "linear")
    with pytest.raises(ValueError, match="method must be one of"):
        soft_nms(seg, sc, 0.5, 0.5, 0.1, "hard")
    with pytest.raises(RuntimeError, match="method must be 1"):
        soft_nms(seg, sc, 0.5, 0.5, 0.1, 3)
    with pytest.raises(RuntimeError, match="sigma must be a positive"):
        soft_nms(seg, sc, 0.5, 0.0, 0.1, "gaussian")
    with pytest.raises(RuntimeError, match="min_score must not be NaN"):
        soft_nms(seg, sc, 0.5, 0.5, NAN, "gaussian")
    for v in (0.0, 1.5, NAN):
        with pytest.raises(RuntimeError, match="voting_threshold must be in"):
            soft_nms(seg, sc, 0.5, 0.5, 0.1, "gaussian", voting_threshold=v)
    soft_nms(seg, sc, 0.5, 0.0, 0.1, "linear")  # sigma is unused by the linear method


# ---------------------------------------------------------------- properties

small_coord = st.sampled_from([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0])  # few values: ties, identical, zero length
small_score = st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0])


@st.composite
def nms_problem(draw):
    n = draw(st.integers(0, 14))
    starts = draw(st.lists(small_coord, min_size=n, max_size=n))
    lengths = draw(st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.0]), min_size=n, max_size=n))
    scores = draw(st.lists(small_score, min_size=n, max_size=n))
    labels = draw(st.one_of(st.none(), st.lists(st.integers(0, 2), min_size=n, max_size=n)))
    seg = torch.tensor([[s, s + d] for s, d in zip(starts, lengths, strict=True)], dtype=torch.float64).reshape(n, 2)
    sc = torch.tensor(scores, dtype=torch.float64)
    lab = None if labels is None else torch.tensor(labels, dtype=torch.long)
    return seg, sc, lab


@settings(max_examples=100, deadline=None)
@given(problem=nms_problem(), threshold=st.sampled_from([0.0, 0.25, 0.5, 1.0]), max_keep=st.sampled_from([-1, 1, 3]))
def test_temporal_nms_properties(problem, threshold, max_keep):
    seg, sc, lab = problem
    keep = temporal_nms(seg, sc, threshold, lab, max_keep)
    assert torch.equal(keep, reference.temporal_nms(seg, sc, threshold, lab, max_keep))
    full = temporal_nms(seg, sc, threshold, lab)
    n = len(sc)
    same = torch.ones(n, n, dtype=torch.bool) if lab is None else lab[:, None] == lab[None, :]
    over = (segment_iou(seg, seg) > threshold) & same
    kept = torch.zeros(n, dtype=torch.bool)
    kept[full] = True
    rank = torch.empty(n, dtype=torch.long)
    rank[torch.sort(sc, descending=True, stable=True).indices] = torch.arange(n)
    for a in full.tolist():  # no kept candidate overlaps an earlier kept one
        assert not bool((over[a] & kept & (rank < rank[a])).any())
    for b in torch.nonzero(~kept).flatten().tolist():  # each dropped one has an earlier kept suppressor
        assert bool((over[b] & kept & (rank < rank[b])).any())
    assert torch.equal(keep, full[: max_keep if max_keep > 0 else n])


@settings(max_examples=100, deadline=None)
@given(
    problem=nms_problem(),
    method=st.sampled_from(["linear", "gaussian"]),
    threshold=st.sampled_from([0.0, 0.25, 0.5]),
    min_score=st.sampled_from([0.0, 0.1, 0.3]),
    max_keep=st.sampled_from([-1, 2]),
    voting=st.sampled_from([None, 0.5, 1.0]),
)
def test_soft_nms_properties(problem, method, threshold, min_score, max_keep, voting):
    seg, sc, lab = problem
    args = (seg, sc, threshold, 0.5, min_score, method, lab, max_keep, voting)
    out = soft_nms(*args)
    assert_soft_equal(out, reference.soft_nms(*args))
    _, scores, idx = out
    assert len(set(idx.tolist())) == len(idx)  # each candidate at most once
    assert bool((scores <= sc[idx]).all())  # scores only decay (they are >= 0 here)
    if lab is None and len(idx) > 1:  # only the first selection (per label) may be below min_score
        assert bool((scores[1:] >= min_score).all())


# ---------------------------------------------------------------- torch.library / compile


def test_opcheck():
    g = torch.Generator().manual_seed(31)
    seg, sc, lab = clustered_candidates(60, g, num_labels=3, dtype=torch.float32)
    torch.library.opcheck(torch.ops.stovtal.temporal_nms.default, (seg, sc, 0.4))
    torch.library.opcheck(torch.ops.stovtal.temporal_nms.default, (seg, sc, 0.4, lab, 7))
    torch.library.opcheck(torch.ops.stovtal.soft_nms.default, (seg, sc, 0.3, 0.5, 0.01, 2))
    torch.library.opcheck(torch.ops.stovtal.soft_nms.default, (seg, sc, 0.3, 0.5, 0.01, 1, lab, 9, 0.7))
    empty = torch.zeros(0, 2)
    torch.library.opcheck(torch.ops.stovtal.temporal_nms.default, (empty, torch.zeros(0), 0.4))


def test_torch_compile_with_data_dependent_sizes():
    def postprocess(seg, sc, lab):
        keep = temporal_nms(seg, sc, 0.4, lab)
        soft_seg, soft_sc, _ = soft_nms(seg, sc, 0.3, 0.5, 0.01, "gaussian", lab, voting_threshold=0.7)
        return seg[keep].sum() + sc[keep].sum(), soft_seg.sum(0), soft_sc.sum()

    g = torch.Generator().manual_seed(32)
    seg, sc, lab = clustered_candidates(80, g, num_labels=3, dtype=torch.float32)
    with torch._dynamo.config.patch(capture_dynamic_output_shape_ops=True):
        compiled = torch.compile(postprocess, fullgraph=True, backend="aot_eager")
        torch.testing.assert_close(compiled(seg, sc, lab), postprocess(seg, sc, lab))


# ---------------------------------------------------------------- CUDA


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("num_labels", [None, 9])
def test_cuda_matches_cpu(dtype, num_labels):
    g = torch.Generator().manual_seed(41)
    seg, sc, lab = clustered_candidates(1500, g, num_labels, torch.float32)  # > 64: many mask blocks
    seg, sc = seg.to(dtype), sc.to(dtype)
    lab_cuda = None if lab is None else lab.cuda()
    for max_keep in (-1, 100):
        cpu = temporal_nms(seg, sc, 0.35, lab, max_keep)
        assert torch.equal(temporal_nms(seg.cuda(), sc.cuda(), 0.35, lab_cuda, max_keep).cpu(), cpu)
    for method in ("linear", "gaussian"):
        for voting in (None, 0.7):
            cpu = soft_nms(seg, sc, 0.3, 0.5, 0.01, method, lab, 300, voting)
            gpu = soft_nms(seg.cuda(), sc.cuda(), 0.3, 0.5, 0.01, method, lab_cuda, 300, voting)
            assert torch.equal(gpu[2].cpu(), cpu[2])
            torch.testing.assert_close(gpu[1].cpu(), cpu[1])
            torch.testing.assert_close(gpu[0].cpu(), cpu[0])


@pytest.mark.cuda
def test_cuda_semantics_and_errors():
    seg = torch.tensor([[0.0, 2.0], [1.0, 2.0], [5.0, 5.0], [5.0, 5.0]], device="cuda")
    sc = torch.tensor([0.9, 0.8, 0.7, 0.7], device="cuda")
    assert temporal_nms(seg, sc, 0.5).tolist() == [0, 1, 2, 3]
    assert temporal_nms(seg, sc, 0.4999).tolist() == [0, 2, 3]
    assert temporal_nms(seg[:0], sc[:0], 0.5).shape == (0,)
    assert soft_nms(seg[:0], sc[:0], 0.5, 0.5, 0.1, "linear")[0].shape == (0, 2)
    with pytest.raises(RuntimeError, match="NaN"):
        temporal_nms(seg, torch.full_like(sc, NAN), 0.5)
    with pytest.raises(RuntimeError, match="same device"):
        temporal_nms(seg, sc.cpu(), 0.5)
    with pytest.raises(RuntimeError, match="same device"):
        temporal_nms(seg, sc, 0.5, torch.zeros(4, dtype=torch.long))
    torch.library.opcheck(torch.ops.stovtal.temporal_nms.default, (seg, sc, 0.4))
    torch.library.opcheck(torch.ops.stovtal.soft_nms.default, (seg, sc, 0.3, 0.5, 0.01, 2, None, -1, 0.7))
