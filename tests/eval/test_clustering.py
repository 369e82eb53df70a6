"""NMI and Hungarian cluster accuracy."""

import math
from itertools import permutations

import numpy as np
import pytest

from stovtal.eval import cluster_accuracy, nmi


def _nmi_loops(t, p):
    n = len(t)
    def h(x):
        return -sum((x.count(v) / n) * math.log(x.count(v) / n) for v in set(x))
    mi = 0.0
    for a in set(t):
        for b in set(p):
            nij = sum(1 for i in range(n) if t[i] == a and p[i] == b)
            if nij:
                mi += nij / n * math.log(n * nij / (t.count(a) * p.count(b)))
    return mi / ((h(t) + h(p)) / 2)


def test_nmi_hand_and_loop_reference():
    assert nmi([0, 0, 1, 1], [5, 5, 3, 3]) == pytest.approx(1.0)
    assert nmi([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(0.0, abs=1e-12)
    rng = np.random.default_rng(0)
    for _ in range(20):
        t = rng.integers(0, 4, 30).tolist()
        p = rng.integers(0, 5, 30).tolist()
        assert nmi(t, p) == pytest.approx(_nmi_loops(t, p))
    assert nmi([1, 1, 1], [2, 2, 2]) == 1.0
    assert nmi([1, 1, 1], [0, 1, 2]) == 0.0


def test_cluster_accuracy_brute_force():
    rng = np.random.default_rng(1)
    for _ in range(10):
        t = rng.integers(0, 3, 25)
        p = rng.integers(0, 3, 25)
        best = max(np.mean([perm[x] == y for x, y in zip(p, t, strict=True)])
                   for perm in permutations(range(3)))
        acc, mapping = cluster_accuracy(t, p)
        assert acc == pytest.approx(best)
        assert np.mean([mapping.get(int(x), -1) == y for x, y in zip(p, t, strict=True)]) == pytest.approx(acc)
    assert cluster_accuracy(["a", "a", "b"], [7, 7, 9])[0] == 1.0


def test_bad_inputs():
    with pytest.raises(ValueError, match="length"):
        nmi([0, 1], [0])
    with pytest.raises(ValueError, match="empty"):
        nmi([], [])
    with pytest.raises(ValueError, match="1-D"):
        cluster_accuracy(np.zeros((2, 2)), np.zeros((2, 2)))
