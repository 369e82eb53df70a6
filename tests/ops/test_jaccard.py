"""jaccard_distance / jaccard_distance_topk against the dense reference,
properties (symmetry, diagonal, ties, duplicates, batching), validation, opcheck."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stovtal.ops import jaccard_distance, jaccard_distance_topk, reference

EXACT = {"rtol": 0.0, "atol": 1e-10}  # float64 end to end: only rounding differs


def clustered(n, d, clusters, seed, spread=0.5, dtype=torch.float64):
    """L2-normalised points around a few random centres (the op's intended input)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, d, generator=g, dtype=torch.float64)
    x = centres[torch.randint(0, clusters, (n,), generator=g)]
    x = x + spread * torch.randn(n, d, generator=g, dtype=torch.float64)
    return torch.nn.functional.normalize(x, dim=1).to(dtype)


@pytest.mark.parametrize(
    "n,d,k1,k2",
    [(60, 8, 5, 2), (200, 16, 20, 6), (150, 4, 7, 1), (90, 32, 13, 13), (120, 2, 3, 2)],
)
def test_matches_reference_clustered(n, d, k1, k2):
    x = clustered(n, d, clusters=6, seed=n + k1)
    out = jaccard_distance(x, k1, k2)
    torch.testing.assert_close(out, reference.jaccard_distance(x, k1, k2), **EXACT)
    assert out.dtype == torch.float64 and out.shape == (n, n)
    assert out.min() >= 0 and out.max() <= 1
    # the distance is not trivial: some pairs are close, most are at distance 1
    assert (out < 0.5).sum() > n and (out == 1).float().mean() > 0.5


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_matches_reference_across_knn_strips(dtype):
    # N > 256 rows: the CPU kNN search runs over several strips of the Gram
    # matrix, each serving its own rows and (transposed) the later ones;
    # duplicated rows in different strips tie exactly across strips
    x = clustered(620, 8, clusters=12, seed=11, dtype=dtype)
    x[500:520] = x[10:30]
    x[300] = x[5]
    expected = reference.jaccard_distance(x.double(), 20, 6)
    out = jaccard_distance(x, 20, 6)
    tol = EXACT if dtype == torch.float64 else {"rtol": 0.0, "atol": 1e-5}
    torch.testing.assert_close(out.double(), expected, **tol)
    dist, idx = jaccard_distance_topk(x, 20, 6, 30)
    torch.testing.assert_close(dist.double(), expected.gather(1, idx), **tol)
    torch.testing.assert_close(dist.double(), expected.sort(1).values[:, :30], **tol)


def test_symmetric_exactly_and_zero_diagonal():
    x = clustered(300, 12, clusters=10, seed=3)
    out = jaccard_distance(x, 20, 6)
    assert torch.equal(out, out.t())
    assert out.diagonal().abs().max() < 1e-12
    for k2 in (1, 6):
        dist, _ = jaccard_distance_topk(x, 20, k2, 1)
        assert dist.abs().max() < 1e-12  # every row is nearest to itself


def test_duplicates_and_ties():
    base = clustered(40, 6, clusters=3, seed=5)
    # 12 copies of row 0 (more than k1 = 9: later copies do not see themselves),
    # pairs of copies elsewhere, and rows tied in distance by symmetry
    x = torch.cat([base, base[:1].repeat(12, 1), base[5:15], -base[20:23]])
    for k1, k2 in [(9, 1), (9, 4), (5, 5), (20, 6)]:
        out = jaccard_distance(x, k1, k2)
        torch.testing.assert_close(out, reference.jaccard_distance(x, k1, k2), **EXACT)
        assert torch.equal(out, out.t())
    # with k2 = 1 a copy that is not among its own 9 nearest has an empty V row
    out = jaccard_distance(x, 9, 1)
    assert out[49, 49] == 1.0  # x[49] == x[0]: 9 identical rows have lower indices
    assert out[47, 47] < 1e-12  # x[47]: the 9th of its kind, still its own neighbour


def test_all_rows_identical_forces_full_candidate_search():
    # every distance ties: the pre-selection must grow to all N rows
    x = torch.ones(70, 5, dtype=torch.float64) / 5**0.5
    for k1, k2 in [(20, 6), (7, 1)]:
        torch.testing.assert_close(
            jaccard_distance(x, k1, k2), reference.jaccard_distance(x, k1, k2), **EXACT
        )


@pytest.mark.parametrize("extra", [0, 1, 2])
def test_n_just_above_k1(extra):
    k1 = 10
    x = clustered(k1 + extra, 5, clusters=2, seed=extra)
    for k2 in (1, 3, k1):
        torch.testing.assert_close(
            jaccard_distance(x, k1, k2), reference.jaccard_distance(x, k1, k2), **EXACT
        )


def test_k1_is_one():
    x = clustered(20, 3, clusters=2, seed=1)
    torch.testing.assert_close(jaccard_distance(x, 1, 1), reference.jaccard_distance(x, 1, 1), **EXACT)


@pytest.mark.parametrize("n,k1,k2,m", [(200, 20, 6, 50), (120, 7, 1, 120), (60, 13, 13, 1)])
def test_topk_is_the_m_smallest_of_dense(n, k1, k2, m):
    x = clustered(n, 10, clusters=5, seed=n)
    dense = jaccard_distance(x, k1, k2)
    values, indices = jaccard_distance_topk(x, k1, k2, m)
    assert values.shape == indices.shape == (n, m) and indices.dtype == torch.int64
    # same accumulation as the dense op: equal to its stable sort, bitwise
    sorted_d, sorted_i = torch.sort(dense, dim=1, stable=True)
    assert torch.equal(values, sorted_d[:, :m])
    assert torch.equal(indices, sorted_i[:, :m])
    ref_values, ref_indices = reference.jaccard_distance_topk(x, k1, k2, m)
    torch.testing.assert_close(values, ref_values, **EXACT)
    # indices agree up to ties: every index carries its value in the reference
    ref_dense = reference.jaccard_distance(x, k1, k2)
    torch.testing.assert_close(ref_dense.gather(1, indices), ref_values, **EXACT)
    assert (indices.sort(1).values.diff(dim=1) > 0).all()  # no repeats


def test_batched_equals_per_set():
    xs = torch.stack([clustered(50, 6, clusters=3, seed=s) for s in range(4)])
    out = jaccard_distance(xs, 8, 3)
    values, indices = jaccard_distance_topk(xs, 8, 3, 10)
    assert out.shape == (4, 50, 50) and values.shape == indices.shape == (4, 50, 10)
    for b in range(4):
        assert torch.equal(out[b], jaccard_distance(xs[b], 8, 3))
        v, i = jaccard_distance_topk(xs[b], 8, 3, 10)
        assert torch.equal(values[b], v) and torch.equal(indices[b], i)
    torch.testing.assert_close(out, reference.jaccard_distance(xs, 8, 3), **EXACT)


def test_empty_batch():
    x = torch.zeros(0, 12, 4)
    assert jaccard_distance(x, 5, 2).shape == (0, 12, 12)
    v, i = jaccard_distance_topk(x, 5, 2, 3)
    assert v.shape == i.shape == (0, 12, 3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_lower_precision_inputs(dtype):
    x = clustered(120, 16, clusters=4, seed=7, dtype=dtype)
    out = jaccard_distance(x, 10, 4)
    assert out.dtype == dtype
    # computed in float64 from the given values: only the final rounding differs
    # (the final rounding of values in [0, 1] errs by at most eps / 2)
    expected = reference.jaccard_distance(x.double(), 10, 4)
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=torch.finfo(dtype).eps / 2)
    values, indices = jaccard_distance_topk(x, 10, 4, 15)
    assert values.dtype == dtype
    dense64 = jaccard_distance(x.double(), 10, 4)
    assert torch.equal(indices, torch.sort(dense64, dim=1, stable=True).indices[:, :15])


def test_float32_with_huge_norms_uses_double_keys():
    # squared norms ~1e35 overflow float32 matmul keys; the ranking must stay exact
    g = torch.Generator().manual_seed(11)
    x = (torch.randn(80, 6, generator=g, dtype=torch.float64) * 1e17).float()
    torch.testing.assert_close(
        jaccard_distance(x, 9, 3).double(), reference.jaccard_distance(x.double(), 9, 3),
        rtol=0, atol=1e-6,
    )


def test_non_contiguous_input():
    x = clustered(80, 12, clusters=3, seed=2)
    strided = torch.cat([x, x], dim=1)[:, ::2]
    assert not strided.is_contiguous()
    torch.testing.assert_close(jaccard_distance(strided, 9, 3), jaccard_distance(strided.contiguous(), 9, 3), rtol=0, atol=0)


def test_deterministic_across_thread_counts():
    x = clustered(300, 16, clusters=8, seed=9)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = jaccard_distance_topk(x, 20, 6, 30)
        torch.set_num_threads(2)
        two = jaccard_distance_topk(x, 20, 6, 30)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])


def test_output_does_not_require_grad():
    x = clustered(30, 4, clusters=2, seed=0).requires_grad_()
    assert not jaccard_distance(x, 5, 2).requires_grad


# Integer points on a tiny grid: many exact distance ties, duplicates, and
# unnormalised features; the ranking's tie rule (lower index) is exercised.
@settings(max_examples=40, deadline=None)
@given(
    data=st.data(),
    n=st.integers(2, 24),
    d=st.integers(1, 3),
)
def test_properties_on_tied_integer_grids(data, n, d):
    values = data.draw(st.lists(st.integers(-2, 2), min_size=n * d, max_size=n * d))
    x = torch.tensor(values, dtype=torch.float64).reshape(n, d) / 2
    k1 = data.draw(st.integers(1, n))
    k2 = data.draw(st.integers(1, k1))
    out = jaccard_distance(x, k1, k2)
    torch.testing.assert_close(out, reference.jaccard_distance(x, k1, k2), **EXACT)
    assert torch.equal(out, out.t())
    m = data.draw(st.integers(1, n))
    v, i = jaccard_distance_topk(x, k1, k2, m)
    sorted_d, sorted_i = torch.sort(out, dim=1, stable=True)
    assert torch.equal(v, sorted_d[:, :m]) and torch.equal(i, sorted_i[:, :m])


@pytest.mark.parametrize(
    "features,k1,k2,match",
    [
        (torch.rand(10, 3), 11, 2, r"N >= k1"),
        (torch.rand(10, 3), 0, 1, r"k1 must be >= 1"),
        (torch.rand(10, 3), 5, 0, r"1 <= k2 <= k1"),
        (torch.rand(10, 3), 5, 6, r"1 <= k2 <= k1"),
        (torch.rand(10), 1, 1, r"2-D \[N, D\] or batched 3-D"),
        (torch.rand(2, 2, 10, 3), 1, 1, r"2-D \[N, D\] or batched 3-D"),
        (torch.ones(10, 3, dtype=torch.int64), 5, 2, "floating-point"),
        (torch.rand(10, 0), 5, 2, r"D >= 1"),
        (torch.tensor([[0.0, float("nan")]] * 6), 3, 1, "finite"),
        (torch.tensor([[0.0, float("inf")]] * 6), 3, 1, "finite"),
        (torch.rand(0, 3), 1, 1, r"N >= k1"),
    ],
)
def test_bad_inputs_raise_clear_errors(features, k1, k2, match):
    with pytest.raises(RuntimeError, match=match):
        jaccard_distance(features, k1, k2)
    with pytest.raises(RuntimeError, match=match):
        jaccard_distance_topk(features, k1, k2, 1)


def test_features_too_large_for_float64():
    x = torch.full((10, 3), 1e160, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="too large"):
        jaccard_distance(x, 5, 2)


@pytest.mark.parametrize("m", [0, 11, -1])
def test_bad_m(m):
    with pytest.raises(RuntimeError, match=r"1 <= m <= N"):
        jaccard_distance_topk(torch.rand(10, 3), 5, 2, m)


def test_meta_shapes():
    x = torch.empty(3, 40, 8, device="meta")
    assert jaccard_distance(x, 5, 2).shape == (3, 40, 40)
    v, i = jaccard_distance_topk(x[0], 5, 2, 7)
    assert v.shape == i.shape == (40, 7) and i.dtype == torch.int64


def test_opcheck():
    x = clustered(16, 4, clusters=2, seed=4)
    xb = torch.stack([x, x.flip(0)]).float()
    torch.library.opcheck(torch.ops.stovtal.jaccard_distance.default, (x, 7, 3))
    torch.library.opcheck(torch.ops.stovtal.jaccard_distance_topk.default, (xb, 5, 1, 16))


# The CPU kNN search runs over 256 x 256 tiles of the Gram matrix (an
# AVX-512 micro-kernel where the CPU has it, ATen's matmul otherwise) and
# computes float64 distances only for runs of near-equal keys.
# STOVTAL_JACCARD_KNN=strips selects the previous search (strips + a float64
# re-ranking of every candidate) and STOVTAL_JACCARD_SIMD=0 the portable
# tile kernel: all three must give the same outputs, bit for bit.
SEARCHES = [{}, {"STOVTAL_JACCARD_SIMD": "0"}, {"STOVTAL_JACCARD_KNN": "strips"}]


def _all_searches(monkeypatch, fn, *args):
    outs = []
    for env in SEARCHES:
        with monkeypatch.context() as mp:
            for k, v in env.items():
                mp.setenv(k, v)
            outs.append(fn(*args))
    return outs


def _assert_same(outs):
    first = outs[0] if isinstance(outs[0], tuple) else (outs[0],)
    for other in outs[1:]:
        other = other if isinstance(other, tuple) else (other,)
        for a, b in zip(first, other, strict=True):
            assert torch.equal(a, b)


@pytest.mark.parametrize("n,d", [(700, 256), (700, 7), (513, 33), (257, 1)])
def test_tiled_search_equals_previous_search(monkeypatch, n, d):
    # partial tiles and micro-blocks (n and d not multiples of 256, 32, 8),
    # duplicated rows across tiles, and 1-ulp perturbations (near-equal keys)
    x = clustered(n, d, clusters=max(2, n // 60), seed=n + d, dtype=torch.float32)
    x[n - 40 : n - 20] = x[:20]
    x[300 % n] = x[2]
    x[n - 5] = torch.nextafter(x[1], torch.full_like(x[1], 2.0))
    outs = _all_searches(monkeypatch, jaccard_distance_topk, x, 20, 6, 30)
    _assert_same(outs)
    _assert_same(_all_searches(monkeypatch, jaccard_distance, x, 20, 6))
    if n <= 520:
        expected = reference.jaccard_distance(x.double(), 20, 6)
        torch.testing.assert_close(outs[0][0].double(), expected.gather(1, outs[0][1]),
                                   rtol=0, atol=1e-6)


def test_tiled_search_on_tied_float32_grid(monkeypatch):
    # integer points in float32: thousands of exact distance ties inside the
    # candidate lists (runs of equal keys), ranked by index as the reference does
    g = torch.Generator().manual_seed(3)
    x = torch.randint(-2, 3, (400, 4), generator=g).float() / 2
    outs = _all_searches(monkeypatch, jaccard_distance, x, 20, 6)
    _assert_same(outs)
    torch.testing.assert_close(outs[0].double(), reference.jaccard_distance(x.double(), 20, 6),
                               rtol=0, atol=1e-6)


def test_tiled_search_all_rows_identical(monkeypatch):
    # every key ties: no row's candidates are proven, all go to the fallback
    x = torch.ones(300, 8) / 8**0.5
    outs = _all_searches(monkeypatch, jaccard_distance_topk, x, 20, 6, 25)
    _assert_same(outs)
    assert torch.equal(outs[0][1], torch.arange(25).expand(300, 25))


def test_tiled_search_large_n(monkeypatch):
    # several tile rows (N = 3,000 -> 12 x 12 tiles, 78 of them), D = 256
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(30, 256, generator=g)
    x = centres[torch.randint(0, 30, (3000,), generator=g)] + 0.6 * torch.randn(3000, 256, generator=g)
    x = torch.nn.functional.normalize(x, dim=1)
    x[2900:2950] = x[100:150]
    _assert_same(_all_searches(monkeypatch, jaccard_distance_topk, x, 20, 6, 50))


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(34, 600),
    d=st.integers(1, 40),
    clusters=st.integers(1, 12),
    k1=st.integers(1, 30),
    seed=st.integers(0, 2**16),
    grid=st.booleans(),
)
def test_tiled_search_properties(n, d, clusters, k1, seed, grid):
    # float32 inputs past kc = k1 + 8 + k1 / 4 rows take the tiled search
    k1 = min(k1, n)
    if grid:  # ties and duplicates
        g = torch.Generator().manual_seed(seed)
        x = torch.randint(-2, 3, (n, d), generator=g).float() / 2
    else:
        x = clustered(n, d, clusters=clusters, seed=seed, dtype=torch.float32)
    k2 = max(1, k1 // 3)
    m = min(n, 10)
    with pytest.MonkeyPatch.context() as mp:
        outs = _all_searches(mp, jaccard_distance_topk, x, k1, k2, m)
    _assert_same(outs)
