"""jaccard_distance on CPU, D = 256, k1 = 20, k2 = 6, float32, clustered
L2-normalised features (benchmarks/jaccard_scale.py):

* N = 10,000: our dense op and top-m op (m = 50), the same ops with the
  previous kNN search (``STOVTAL_JACCARD_KNN=strips``: strips of the Gram
  matrix from ATen's matmul, every candidate re-ranked in float64; the op as
  it was before the tiled search, same outputs), and a dense numpy
  implementation of the algorithm (benchmarks/jaccard_baseline.py, SpCL style);
* N = 20,000: the top-m op, tiled vs previous search.

Run: PYTHONPATH=. pytest benchmarks/test_bench_jaccard.py --benchmark-only
Each benchmark's ``extra_info["peak_rss_bytes"]`` is how far peak RSS rose
above the features during one call, measured in a fresh process
(``conftest.peak_rss``).

The scale run (N = 332,000, m = 50; minutes) is skipped unless
STOVTAL_BENCH_SCALE=1; it runs benchmarks/jaccard_scale.py in a subprocess
and records its time and peak RSS.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from stovtal.ops import jaccard_distance, jaccard_distance_topk

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from jaccard_baseline import jaccard_distance_numpy  # noqa: E402
from jaccard_scale import clustered_features  # noqa: E402

D, K1, K2, M = 256, 20, 6, 50
PREVIOUS = "strips"  # STOVTAL_JACCARD_KNN value of the previous kNN search


def _setup(n: int, previous: bool = False) -> str:
    env = f"import os; os.environ['STOVTAL_JACCARD_KNN'] = {PREVIOUS!r}\n" if previous else ""
    return env + f"""
import sys; sys.path.insert(0, {HERE!r})
from jaccard_scale import clustered_features
from jaccard_baseline import jaccard_distance_numpy
x = clustered_features({n}, {D}, clusters={n // 100})
xn = x.numpy()
"""


def _previous(fn):
    """fn run with the previous kNN search."""

    def call(*args):
        os.environ["STOVTAL_JACCARD_KNN"] = PREVIOUS
        try:
            return fn(*args)
        finally:
            del os.environ["STOVTAL_JACCARD_KNN"]

    return call


@pytest.fixture(scope="module")
def features():
    return clustered_features(10_000, D, clusters=100)


@pytest.fixture(scope="module")
def features_20k():
    return clustered_features(20_000, D, clusters=200)


@pytest.fixture(scope="module")
def dense_ours(features):
    return jaccard_distance(features, K1, K2)


@pytest.fixture(scope="module")
def topk_20k(features_20k):
    return jaccard_distance_topk(features_20k, K1, K2, M)


GROUP = "jaccard-10000x256-k1=20-k2=6-f32-cpu"
GROUP_20K = "jaccard-topk-20000x256-k1=20-k2=6-m=50-f32-cpu"


@pytest.mark.benchmark(group=GROUP)
def test_stovtal_dense(benchmark, features, dense_ours, peak_rss):
    benchmark.extra_info["peak_rss_bytes"] = peak_rss(_setup(10_000), "stovtal.ops.jaccard_distance(x, 20, 6)")
    out = benchmark.pedantic(jaccard_distance, (features, K1, K2), rounds=3, iterations=1)
    assert torch.equal(out, dense_ours)


@pytest.mark.benchmark(group=GROUP)
def test_stovtal_topk(benchmark, features, dense_ours, peak_rss):
    benchmark.extra_info["peak_rss_bytes"] = peak_rss(
        _setup(10_000), "stovtal.ops.jaccard_distance_topk(x, 20, 6, 50)"
    )
    values, indices = benchmark.pedantic(
        jaccard_distance_topk, (features, K1, K2, M), rounds=3, iterations=1
    )
    # the m smallest of the dense result (indices up to float32 ties: the op
    # orders by the float64 value before the final rounding)
    assert torch.equal(values, torch.sort(dense_ours, dim=1).values[:, :M])
    assert torch.equal(dense_ours.gather(1, indices), values)


@pytest.mark.benchmark(group=GROUP)
def test_previous_search_dense(benchmark, features, dense_ours, peak_rss):
    benchmark.extra_info["peak_rss_bytes"] = peak_rss(
        _setup(10_000, previous=True), "stovtal.ops.jaccard_distance(x, 20, 6)"
    )
    out = benchmark.pedantic(_previous(jaccard_distance), (features, K1, K2), rounds=3, iterations=1)
    assert torch.equal(out, dense_ours)  # the same output, bit for bit


@pytest.mark.benchmark(group=GROUP)
def test_previous_search_topk(benchmark, features, peak_rss):
    benchmark.extra_info["peak_rss_bytes"] = peak_rss(
        _setup(10_000, previous=True), "stovtal.ops.jaccard_distance_topk(x, 20, 6, 50)"
    )
    values, indices = benchmark.pedantic(
        _previous(jaccard_distance_topk), (features, K1, K2, M), rounds=3, iterations=1
    )
    new_values, new_indices = jaccard_distance_topk(features, K1, K2, M)
    assert torch.equal(values, new_values) and torch.equal(indices, new_indices)


@pytest.mark.benchmark(group=GROUP)
def test_numpy_dense(benchmark, features, dense_ours, peak_rss):
    benchmark.extra_info["peak_rss_bytes"] = peak_rss(_setup(10_000), "jaccard_distance_numpy(xn, 20, 6)")
    out = benchmark.pedantic(
        jaccard_distance_numpy, (features.numpy(), K1, K2), rounds=1, iterations=1
    )
    # Same algorithm; float32 matmul ranking may order a few near-tied
    # neighbours differently than our exact ranking, which changes those rows.
    close = np.abs(out - dense_ours.numpy()) < 1e-4
    benchmark.extra_info["fraction_equal_to_1e-4"] = float(close.mean())
    assert close.mean() > 0.999


@pytest.mark.benchmark(group=GROUP_20K)
def test_stovtal_topk_20k(benchmark, features_20k, topk_20k, peak_rss):
    benchmark.extra_info["peak_rss_bytes"] = peak_rss(
        _setup(20_000), "stovtal.ops.jaccard_distance_topk(x, 20, 6, 50)"
    )
    values, indices = benchmark.pedantic(
        jaccard_distance_topk, (features_20k, K1, K2, M), rounds=3, iterations=1
    )
    assert torch.equal(values, topk_20k[0]) and torch.equal(indices, topk_20k[1])
    assert (indices[:, 0] == torch.arange(20_000)).float().mean() > 0.99


@pytest.mark.benchmark(group=GROUP_20K)
def test_previous_search_topk_20k(benchmark, features_20k, topk_20k, peak_rss):
    benchmark.extra_info["peak_rss_bytes"] = peak_rss(
        _setup(20_000, previous=True), "stovtal.ops.jaccard_distance_topk(x, 20, 6, 50)"
    )
    values, indices = benchmark.pedantic(
        _previous(jaccard_distance_topk), (features_20k, K1, K2, M), rounds=3, iterations=1
    )
    assert torch.equal(values, topk_20k[0]) and torch.equal(indices, topk_20k[1])


@pytest.mark.skipif(os.environ.get("STOVTAL_BENCH_SCALE") != "1", reason="set STOVTAL_BENCH_SCALE=1")
@pytest.mark.benchmark(group="jaccard-topk-scale-332000x256-cpu")
def test_scale_topk_332k(benchmark):
    def run():
        res = subprocess.run(
            [sys.executable, os.path.join(HERE, "jaccard_scale.py")],
            capture_output=True, text=True, check=True,
        )
        return json.loads(res.stdout.strip().splitlines()[-1])

    info = benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(info)
    assert info["self_first"] > 0.99
    assert info["peak_rss_bytes"] < 2 * 2**30
