"""k-means, CCI and IIS of FEEL."""

import math
from itertools import pairwise

import pytest
import torch
import torch.nn.functional as F

from stovtal.feel.cci import cci_refine
from stovtal.feel.iis import select_per_cluster, selection_fraction
from stovtal.feel.kmeans import kmeans


def _chain_and_blob(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster 0: an elongated chain along an arc; cluster 1: a compact blob beyond its end.

    The end of the chain is closer (Euclidean) to the blob's centroid than to the chain's, but
    its reciprocal neighbours are all chain points.
    """
    g = torch.Generator().manual_seed(seed)
    d = 8
    e = torch.eye(d, dtype=torch.float64)
    ang_a = torch.linspace(0.0, 0.9, 16, dtype=torch.float64)
    a = torch.cos(ang_a)[:, None] * e[0] + torch.sin(ang_a)[:, None] * e[1]
    ang_b = 1.35 + 0.02 * torch.randn(10, generator=g, dtype=torch.float64)
    b = torch.cos(ang_b)[:, None] * e[0] + torch.sin(ang_b)[:, None] * e[1]
    b = b + 0.01 * torch.randn(10, d, generator=g, dtype=torch.float64)
    x = F.normalize(torch.cat([a, b]), dim=1)
    y = torch.tensor([0] * 16 + [1] * 10)
    return x, y


def _errors(pred: torch.Tensor, y: torch.Tensor) -> int:
    """Misassigned points under the best of the two label permutations."""
    return min(int((pred != y).sum()), int((pred != 1 - y).sum()))


def test_kmeans_recovers_separated_blobs_and_is_seeded():
    g = torch.Generator().manual_seed(1)
    centers = torch.randn(4, 16, generator=g) * 5
    y = torch.arange(4).repeat_interleave(30)
    x = centers[y] + torch.randn(120, 16, generator=g)
    r1 = kmeans(x, 4, n_init=4, seed=3)
    r2 = kmeans(x, 4, n_init=4, seed=3)
    assert torch.equal(r1.labels, r2.labels)
    # a perfect clustering: each true class maps to exactly one cluster
    pairs = {(int(a), int(b)) for a, b in zip(y, r1.labels, strict=True)}
    assert len(pairs) == 4 and len({b for _, b in pairs}) == 4
    # inertia is the sum of squared distances to the returned centroids
    expect = ((x - r1.centroids[r1.labels]) ** 2).sum()
    assert math.isclose(r1.inertia, float(expect), rel_tol=1e-4)


def test_kmeans_bad_input():
    with pytest.raises(ValueError, match="k <= N"):
        kmeans(torch.randn(3, 2), 4)
    with pytest.raises(ValueError, match="NaN"):
        kmeans(torch.tensor([[0.0, float("nan")], [1.0, 1.0]]), 1)
    with pytest.raises(TypeError, match="floating"):
        kmeans(torch.ones(4, 2, dtype=torch.long), 2)


def test_cci_fixes_point_that_euclidean_kmeans_mislabels():
    for seed in range(3):
        x, y = _chain_and_blob(seed)
        km = kmeans(x, 2, n_init=10, seed=seed)
        assert _errors(km.labels, y) > 0, "the constructed case must fool k-means"
        plain = cci_refine(x, km.centroids, lam=0.0)
        assert _errors(plain.labels, y) > 0  # Euclidean reassignment alone does not fix it
        fixed = cci_refine(x, km.centroids, k1=8, k2=2, lam=0.5)
        assert _errors(fixed.labels, y) == 0
        assert fixed.confidence.min() >= 0 and fixed.confidence.max() <= 1


def test_cci_lambda_zero_is_nearest_centroid_and_margin_confidence():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 6, generator=g, dtype=torch.float64)
    c = torch.randn(3, 6, generator=g, dtype=torch.float64)
    r = cci_refine(x, c, lam=0.0)
    xn, cn = F.normalize(x, dim=1), F.normalize(c, dim=1)
    d = torch.cdist(xn, cn) ** 2 / 4
    assert torch.equal(r.labels, d.argmin(1))
    s = d.sort(1).values
    torch.testing.assert_close(r.confidence, s[:, 1] - s[:, 0])


def test_cci_bad_input():
    with pytest.raises(ValueError, match="lam"):
        cci_refine(torch.randn(5, 3), torch.randn(2, 3), lam=1.5)
    with pytest.raises(ValueError, match="videos"):
        cci_refine(torch.randn(5, 3), torch.randn(2, 4))
    with pytest.raises(ValueError, match="NaN"):
        cci_refine(torch.full((5, 3), float("nan")), torch.randn(2, 3))


@pytest.mark.parametrize("i_max", [2, 4, 7])
@pytest.mark.parametrize("p0", [0.2, 0.5])
def test_iis_schedules_monotone_reach_one_variable_slower(i_max, p0):
    const = [selection_fraction(t, i_max, p0, "constant") for t in range(1, i_max + 1)]
    var = [selection_fraction(t, i_max, p0, "variable", gamma=2.0) for t in range(1, i_max + 1)]
    for seq in (const, var):
        assert seq[0] == pytest.approx(p0)
        assert seq[-1] == pytest.approx(1.0)
        assert all(b > a for a, b in pairwise(seq))
    # constant speed: equal steps
    steps = [b - a for a, b in pairwise(const)]
    assert max(steps) - min(steps) < 1e-12
    # variable speed: slower than constant in between, and its steps grow
    for c, v in zip(const[1:-1], var[1:-1], strict=True):
        assert v < c
    vsteps = [b - a for a, b in pairwise(var)]
    assert all(b > a for a, b in pairwise(vsteps))


def test_iis_bad_input():
    with pytest.raises(ValueError, match="schedule"):
        selection_fraction(1, 4, 0.5, "exponential")
    with pytest.raises(ValueError, match="t <= i_max"):
        selection_fraction(5, 4, 0.5)
    with pytest.raises(ValueError, match="gamma"):
        selection_fraction(2, 4, 0.5, "variable", gamma=1.0)


def test_select_per_cluster_keeps_most_confident_fraction_of_each_cluster():
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2, 0, 1])
    conf = torch.tensor([0.1, 0.9, 0.5, 0.7, 0.3, 0.8, 0.0, 0.2, 0.6])
    mask = select_per_cluster(labels, conf, 0.5)
    # cluster 0: 5 members -> 3 kept (0.9, 0.7, 0.5); cluster 1: 3 -> 2 (0.8, 0.6); cluster 2: 1 -> 1
    assert mask.tolist() == [False, True, True, True, False, True, True, False, True]
    assert select_per_cluster(labels, conf, 1.0).all()
