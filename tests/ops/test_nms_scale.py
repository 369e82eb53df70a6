"""temporal_nms / soft_nms at scale (N up to 100,000) and on the kernels' indexed path,
against an O(N x K) oracle written here in numpy.

The kernels visit only the candidates that overlap a selection (an interval index); the
oracle is the plain greedy algorithm that compares every selection with every remaining
candidate, evaluating the same float operations in the same order (IoU as segment_iou,
the gaussian weight as exp in float64 rounded once, voting sums in input order), so the
outputs must be equal bit for bit. Groups of <= 128 candidates take the kernels' scan
path, so these cases use larger groups.
"""

import heapq
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stovtal.ops import soft_nms, temporal_nms

# ---------------------------------------------------------------- the oracle


def exp_rn(x):
    """The kernels' float64 exp (csrc/nms/nms.h, as documented there): x = n ln2 + r,
    Taylor polynomial of degree 13 in Horner form, times 2^n; IEEE float64 operations
    only, so numpy evaluates it to the same bits. x must lie in [-745.2, 0]."""
    x = np.asarray(x, dtype=np.float64)
    n = (x * 1.4426950408889634 + 6755399441055744.0) - 6755399441055744.0
    r = (x - n * 6.93147180369123816490e-01) - n * 1.90821492927058770002e-10
    p = np.full_like(x, 1.0 / math.factorial(13))
    for k in range(12, -1, -1):
        p = p * r + 1.0 / math.factorial(k)
    ni = n.astype(np.int64)
    a = ((ni + 2048) >> 1) - 1024
    return p * np.ldexp(1.0, a) * np.ldexp(1.0, ni - a)


def gaussian_weight(iou, sigma, dtype):
    x = -(iou.astype(np.float64) ** 2) / np.float64(dtype(sigma))
    w = np.where(x < -745.2, 0.0, exp_rn(np.maximum(x, -745.2)))
    return np.where(iou > 0, w.astype(dtype), dtype(1))


def iou_row(s, e, ln, i):
    """IoU of candidate i with every candidate, as csrc/segment_iou/segment_iou.h computes it."""
    with np.errstate(all="ignore"):  # overflowing lengths give inf / NaN as in the kernels
        inter = np.maximum(np.minimum(e, e[i]) - np.maximum(s, s[i]), 0)
        union = (ln[i] + ln) - inter
        return np.where(union > 0, inter / union, 0).astype(s.dtype)


def oracle_nms(seg, scores, threshold, max_keep=-1):
    """Greedy hard NMS of one label: each kept candidate removes every remaining one with IoU > threshold."""
    dtype = seg.dtype.type
    s, e = seg[:, 0], seg[:, 1]
    with np.errstate(over="ignore"):
        ln = np.maximum(e - s, 0)
    order = np.lexsort((np.arange(len(scores)), -scores.astype(np.float64)))
    removed = np.zeros(len(scores), bool)
    keep = []
    for i in order:
        if removed[i]:
            continue
        keep.append(i)
        if 0 < max_keep <= len(keep):
            break
        removed |= iou_row(s, e, ln, i) > dtype(threshold)
    return np.array(keep, dtype=np.int64)


def oracle_soft_nms(seg, scores, threshold, sigma, min_score, method, max_keep=-1):
    """Soft-NMS of one label: select the maximum (first in input order), decay every
    remaining candidate that overlaps it, drop those below min_score."""
    dtype = seg.dtype.type
    s, e = seg[:, 0], seg[:, 1]
    with np.errstate(over="ignore"):
        ln = np.maximum(e - s, 0)
    current = scores.copy()
    remaining = np.ones(len(scores), bool)
    sel, sel_scores = [], []
    while remaining.any() and (max_keep <= 0 or len(sel) < max_keep):
        idx = np.flatnonzero(remaining)
        b = idx[np.argmax(current[idx])]
        sel.append(b)
        sel_scores.append(current[b])
        remaining[b] = False
        iou = iou_row(s, e, ln, b)
        with np.errstate(over="ignore"):
            overlap = remaining & (np.minimum(e, e[b]) - np.maximum(s, s[b]) > 0)
        if method == "gaussian":
            w = gaussian_weight(iou, sigma, dtype)
        else:
            w = np.where(iou >= dtype(threshold), dtype(1) - iou, dtype(1))
        current = np.where(overlap, current * w, current).astype(dtype)
        remaining &= ~(current < dtype(min_score))
    return np.array(sel, dtype=np.int64), np.array(sel_scores, dtype=dtype)


def oracle_voting(seg, scores, kept, threshold):
    """Score voting of kept candidates of one label: weights score x IoU over IoU >= threshold,
    summed sequentially in input order in the compute dtype."""
    dtype = seg.dtype.type
    s, e = seg[:, 0], seg[:, 1]
    ln = np.maximum(e - s, 0)
    out = seg[kept].copy()
    for row, k in enumerate(kept):
        iou = iou_row(s, e, ln, k)
        w = np.where((iou >= dtype(threshold)) & (scores > 0), scores * iou, dtype(0)).astype(dtype)
        total, start, end = dtype(0), dtype(0), dtype(0)
        for j in np.flatnonzero(w):
            total, start, end = total + w[j], start + w[j] * s[j], end + w[j] * e[j]
        if total > 0:
            out[row] = (start / total, end / total)
    return out


def merge_by_label(labels, run):
    """Runs `run(indices)` per label (local selections and their scores, in selection
    order) and interleaves the sequences as one greedy loop over all labels would: each
    step takes the head that comes first by score, ties by lower input index (a merge
    of heads: a label's own order is kept even where its scores rise, as negative ones do)."""
    heads = []
    for value in np.unique(labels):
        idx = np.flatnonzero(labels == value)
        local, local_scores = run(idx)
        if len(local):
            heads.append([idx[local], local_scores, 0])
    index, scores = [], []
    heap = [(-float(h[1][0]), int(h[0][0]), n) for n, h in enumerate(heads)]
    heapq.heapify(heap)
    while heap:
        _, _, n = heapq.heappop(heap)
        seq_index, seq_scores, k = heads[n]
        index.append(seq_index[k])
        scores.append(seq_scores[k])
        heads[n][2] = k + 1
        if k + 1 < len(seq_index):
            heapq.heappush(heap, (-float(seq_scores[k + 1]), int(seq_index[k + 1]), n))
    return np.array(index, dtype=np.int64), np.array(scores)


# ---------------------------------------------------------------- inputs


def uniform_candidates(n, seed, dtype=torch.float32, num_labels=None, extent=2304.0, max_length=576.0):
    """The ops-speed issue's distribution: centres uniform in [0, extent], lengths
    log-uniform in [1, max_length], scores uniform."""
    g = torch.Generator().manual_seed(seed)
    centre = torch.rand(n, generator=g, dtype=torch.float64) * extent
    length = torch.exp(torch.rand(n, generator=g, dtype=torch.float64) * math.log(max_length))
    seg = torch.stack([centre - length / 2, centre + length / 2], 1).to(dtype)
    scores = torch.rand(n, generator=g, dtype=torch.float64).to(dtype)
    labels = None if num_labels is None else torch.randint(0, num_labels, (n,), generator=g)
    return seg, scores, labels


def clustered_candidates(n, seed, dtype=torch.float32, num_labels=None, num_actions=40):
    """Localizer-like: jittered copies of a few actions plus background, heavy overlap."""
    g = torch.Generator().manual_seed(seed)
    centre = torch.rand(num_actions, generator=g, dtype=torch.float64) * 2000
    length = 2 + torch.rand(num_actions, generator=g, dtype=torch.float64) * 60
    a = torch.randint(0, num_actions, (n,), generator=g)
    seg = torch.stack([centre[a] - length[a] / 2, centre[a] + length[a] / 2], 1)
    seg = seg + torch.randn(n, 2, generator=g, dtype=torch.float64) * 0.15 * length[a, None]
    seg = seg.sort(dim=1).values.to(dtype)
    scores = torch.rand(n, generator=g, dtype=torch.float64).to(dtype)
    labels = None if num_labels is None else torch.randint(0, num_labels, (n,), generator=g)
    return seg, scores, labels


def check_hard(seg, sc, lab, threshold, max_keep=-1):
    got = temporal_nms(seg, sc, threshold, lab, max_keep).numpy()
    s, c = seg.numpy(), sc.numpy()
    if lab is None:
        want = oracle_nms(s, c, threshold, max_keep)
    else:

        def run(idx):
            local = oracle_nms(s[idx], c[idx], threshold, max_keep)
            return local, c[idx][local]

        want, _ = merge_by_label(lab.numpy(), run)
        want = want[: max_keep if max_keep > 0 else None]
    np.testing.assert_array_equal(got, want)
    return got


def check_soft(seg, sc, lab, threshold, sigma, min_score, method, max_keep=-1, voting=None):
    got_seg, got_sc, got_idx = (t.numpy() for t in soft_nms(seg, sc, threshold, sigma, min_score, method, lab, max_keep, voting))
    s, c = seg.numpy(), sc.numpy()
    if lab is None:
        want_idx, want_sc = oracle_soft_nms(s, c, threshold, sigma, min_score, method, max_keep)
    else:
        labels = lab.numpy()
        want_idx, want_sc = merge_by_label(
            labels, lambda idx: oracle_soft_nms(s[idx], c[idx], threshold, sigma, min_score, method, max_keep)
        )
        want_idx, want_sc = want_idx[: max_keep if max_keep > 0 else None], want_sc[: max_keep if max_keep > 0 else None]
    np.testing.assert_array_equal(got_idx, want_idx)
    np.testing.assert_array_equal(got_sc, want_sc)  # bit for bit
    if voting is None:
        np.testing.assert_array_equal(got_seg, s[got_idx])
    else:
        want_seg = np.empty_like(got_seg)
        labels = np.zeros(len(c), np.int64) if lab is None else lab.numpy()
        for value in np.unique(labels[got_idx]):
            group = np.flatnonzero(labels == value)
            rows = np.flatnonzero(labels[got_idx] == value)
            local = np.searchsorted(group, got_idx[rows])
            want_seg[rows] = oracle_voting(s[group], c[group], local, voting)
        np.testing.assert_array_equal(got_seg, want_seg)
    return got_idx


# ---------------------------------------------------------------- N = 100,000


@pytest.mark.slow
@pytest.mark.parametrize("make", [uniform_candidates, clustered_candidates])
def test_hard_nms_100k_matches_oracle(make):
    seg, sc, _ = make(100_000, 1)
    kept = check_hard(seg, sc, None, 0.5, max_keep=800)
    assert len(kept) > 150  # clustered: ~190 in all
    seg, sc, lab = make(100_000, 2, num_labels=200)  # per label: ~500 candidates, no max_keep
    kept = check_hard(seg, sc, lab, 0.5)
    assert 1000 < len(kept) < 100_000


@pytest.mark.slow
@pytest.mark.parametrize("make", [uniform_candidates, clustered_candidates])
def test_soft_nms_100k_matches_oracle(make):
    seg, sc, _ = make(100_000, 3)
    idx = check_soft(seg, sc, None, 0.1, 0.5, 0.001, "gaussian", max_keep=300, voting=0.7)
    assert len(idx) == 300
    seg, sc, lab = make(100_000, 4, num_labels=400)  # per label: ~250 candidates, no max_keep
    idx = check_soft(seg, sc, lab, 0.3, 0.5, 0.05, "linear")
    assert 1000 < len(idx) < 100_000


# ---------------------------------------------------------------- indexed path, all options


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.7, 1.0])
def test_hard_nms_indexed_matches_oracle(dtype, threshold):
    for make in (uniform_candidates, clustered_candidates):
        seg, sc, lab = make(3000, 5, dtype, num_labels=3)
        for max_keep in (-1, 50, 700):
            check_hard(seg, sc, None, threshold, max_keep)
            check_hard(seg, sc, lab, threshold, max_keep)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "method,threshold,min_score",
    [("gaussian", 0.1, 0.001), ("gaussian", 0.1, 0.0), ("linear", 0.3, 0.01), ("linear", 0.0, 0.001)],
)
def test_soft_nms_indexed_matches_oracle(dtype, method, threshold, min_score):
    seg, sc, lab = uniform_candidates(1500, 6, dtype, num_labels=3)
    check_soft(seg, sc, None, threshold, 0.5, min_score, method, max_keep=400, voting=0.6)
    check_soft(seg, sc, lab, threshold, 0.5, min_score, method, voting=1.0)
    seg, sc, lab = clustered_candidates(1500, 7, dtype, num_labels=2)
    check_soft(seg, sc, None, threshold, 0.5, min_score, method, voting=0.75)
    check_soft(seg, sc, lab, threshold, 0.5, min_score, method, max_keep=300)


def test_soft_nms_indexed_negative_scores_and_ties():
    """Negative scores rise towards 0 when decayed (the lazy heap must re-queue them),
    equal scores go to the lowest index, and zero-length segments are never decayed."""
    seg, sc, lab = uniform_candidates(2000, 8, torch.float64, num_labels=2, extent=300.0, max_length=60.0)
    sc = (sc * 8).round() / 8 - 0.5  # ties, negative, zero
    seg = (seg * 2).round() / 2  # identical segments
    seg[::9, 1] = seg[::9, 0]  # zero length
    for method in ("linear", "gaussian"):
        check_soft(seg, sc, None, 0.2, 0.5, -0.3, method, voting=0.5)
        check_soft(seg, sc, lab, 0.2, 0.5, -1.0, method)
    check_hard(seg, sc, None, 0.5)
    check_hard(seg, sc, lab, 0.0)


def test_huge_lengths_take_the_scan_path_with_the_same_results():
    """A length that overflows to inf (end - start beyond the float range) is handled by the
    scan form; results are the oracle's there too."""
    seg, sc, _ = uniform_candidates(600, 9)
    seg[5] = torch.tensor([-3e38, 3e38])
    seg[17] = torch.tensor([-1e38, 2.5e38])
    check_hard(seg, sc, None, 0.3)
    # the two overflowing segments overlap by inf: their IoU is NaN (linear: weight 1)
    check_soft(seg, sc, None, 0.3, 0.5, 0.001, "linear")


@st.composite
def large_problem(draw):
    n = draw(st.integers(129, 400))  # above the scan threshold
    coords = draw(st.lists(st.sampled_from([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0]), min_size=n, max_size=n))
    lengths = draw(st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.0, 7.0]), min_size=n, max_size=n))
    scores = draw(st.lists(st.sampled_from([-0.25, -0.0, 0.0, 0.25, 0.5, 0.75, 1.0]), min_size=n, max_size=n))
    dtype = draw(st.sampled_from([torch.float64, torch.float32]))  # float32: the SIMD loops where the CPU has them
    seg = torch.tensor([[c, c + d] for c, d in zip(coords, lengths, strict=True)], dtype=dtype)
    return seg, torch.tensor(scores, dtype=dtype)


@settings(max_examples=60, deadline=None)
@given(
    problem=large_problem(),
    threshold=st.sampled_from([0.0, 0.25, 0.5, 1.0]),
    max_keep=st.sampled_from([-1, 40]),
    method=st.sampled_from(["linear", "gaussian"]),
    min_score=st.sampled_from([-0.1, 0.0, 0.3]),
    voting=st.sampled_from([None, 0.5, 1.0]),
)
def test_indexed_path_properties(problem, threshold, max_keep, method, min_score, voting):
    seg, sc = problem
    check_hard(seg, sc, None, threshold, max_keep)
    check_soft(seg, sc, None, threshold, 0.5, min_score, method, max_keep, voting)


# ---------------------------------------------------------------- SIMD and scalar forms


@pytest.mark.parametrize("simd", ["1", "0"])
def test_soft_nms_simd_and_scalar_forms_match_oracle(monkeypatch, simd):
    """float32 soft-NMS takes AVX-512 loops where the CPU has AVX-512 F/BW/VL and
    STOVTAL_NMS_SIMD is not "0"; both forms must give the oracle's bits, including
    weights that underflow to 0 (a small sigma) and IoUs of tiny overlaps."""
    monkeypatch.setenv("STOVTAL_NMS_SIMD", simd)
    seg, sc, lab = uniform_candidates(1500, 11, num_labels=2)
    seg[::7] = seg[::7] * 1e4  # long segments with tiny overlaps next to short ones
    for sigma in (0.5, 1e-3):
        check_soft(seg, sc, None, 0.1, sigma, 0.001, "gaussian")
        check_soft(seg, sc, lab, 0.1, sigma, 0.0, "gaussian", max_keep=200, voting=0.7)
    check_soft(seg, sc, lab, 0.3, 0.5, 0.01, "linear")
    seg, sc, _ = clustered_candidates(2000, 12)
    check_soft(seg, sc, None, 0.1, 0.5, 0.001, "gaussian")


@pytest.mark.parametrize("simd", ["1", "0"])
def test_hard_nms_simd_and_scalar_forms_match_oracle(monkeypatch, simd):
    """float32 hard NMS of groups of <= 1024 candidates compares each candidate with 16 kept
    ones at a time where the CPU has AVX-512; both forms must keep the oracle's set, also
    with identical segments, zero lengths, exact-threshold IoUs and max_keep."""
    monkeypatch.setenv("STOVTAL_NMS_SIMD", simd)
    seg, sc, lab = uniform_candidates(3000, 13, num_labels=4)  # groups of ~750
    for threshold in (0.0, 0.5, 1.0):
        check_hard(seg, sc, lab, threshold)
        check_hard(seg, sc, None, threshold, max_keep=100)
    seg = (seg / 8).round() * 4  # ties, identical segments, IoUs of exactly 0.5
    seg[::11, 1] = seg[::11, 0]
    check_hard(seg[:1000], sc[:1000], None, 0.5)
    check_hard(seg, sc, lab, 0.5, max_keep=300)
