"""Baseline for the jaccard benchmarks: the k-reciprocal Jaccard distance as
the re-ranking literature computes it (SpCL's ``compute_jaccard_distance``):
dense numpy, float32, a dense N x N V, Python loops over rows.

Written from the algorithm's description for benchmarking only (the test
oracle is ``stovtal.ops.reference.jaccard_distance``). The kNN step is one
dense matmul plus a partial sort, as faiss' flat index does it.
"""

from __future__ import annotations

import numpy as np


def _reciprocal(initial_rank: np.ndarray, i: int, k: int) -> np.ndarray:
    forward = initial_rank[i, : k + 1]
    backward = initial_rank[forward, : k + 1]
    return forward[np.where(backward == i)[0]]


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def jaccard_distance_numpy(features: np.ndarray, k1: int, k2: int) -> np.ndarray:
    """Dense ``[N, N]`` float32 k-reciprocal Jaccard distance of ``features [N, D]``."""
    x = np.ascontiguousarray(features, dtype=np.float32)
    n = x.shape[0]
    sq = (x * x).sum(1)
    dist = sq[:, None] + sq[None, :] - 2 * (x @ x.T)
    part = np.argpartition(dist, k1 - 1, axis=1)[:, :k1]
    order = np.argsort(np.take_along_axis(dist, part, 1), axis=1, kind="stable")
    initial_rank = np.take_along_axis(part, order, 1)
    del dist, part, order

    k_half = int(np.around(k1 / 2))
    nn_k1 = [_reciprocal(initial_rank, i, k1) for i in range(n)]
    nn_half = [_reciprocal(initial_rank, i, k_half) for i in range(n)]
    v = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        r = nn_k1[i]
        expansion = r
        for c in r:
            h = nn_half[c]
            if len(np.intersect1d(h, r)) > 2 / 3 * len(h):
                expansion = np.append(expansion, h)
        expansion = np.unique(expansion)
        v[i, expansion] = _softmax(-(2 - 2 * (x[expansion] @ x[i])))
    if k2 != 1:
        v_qe = np.zeros_like(v)
        for i in range(n):
            v_qe[i] = np.mean(v[initial_rank[i, :k2]], axis=0)
        v = v_qe
        del v_qe

    inv_index = [np.where(v[:, c] != 0)[0] for c in range(n)]
    out = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        s = np.zeros(n, dtype=np.float32)
        nonzero = np.where(v[i] != 0)[0]
        for c in nonzero:
            rows = inv_index[c]
            s[rows] += np.minimum(v[i, c], v[rows, c])
        out[i] = 1 - s / (2 - s)
    out[out < 0] = 0
    return out
