"""Clustering-confidence improvement (CCI) of FEEL.

Videos and cluster centroids are put in one set; the k-reciprocal Jaccard distance
(``stovtal.ops.jaccard_distance``) between each video and each centroid measures how much
their neighbourhoods agree. Each video is reassigned to its nearest centroid under

    d(v, c) = lam * jaccard(v, c) + (1 - lam) * ||v - c||^2 / 4

(both terms in [0, 1] for L2-normalised inputs) and gets a confidence: the margin between its
second-nearest and nearest centroid under ``d`` (in [0, 1]; larger = more reliable).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .kmeans import pairwise_sq_dist

__all__ = ["CCIResult", "cci_refine", "video_centroid_jaccard"]


@dataclass
class CCIResult:
    """labels ``[N]`` int64, confidence ``[N]`` in [0, 1], distance ``[N, K]`` (combined)."""

    labels: torch.Tensor
    confidence: torch.Tensor
    distance: torch.Tensor
    jaccard: torch.Tensor


def video_centroid_jaccard(
    videos: torch.Tensor,
    centroids: torch.Tensor,
    k1: int,
    k2: int,
    dense_limit: int = 4096,
    topk_m: int = 100,
    jaccard_fn: Callable | None = None,
    jaccard_topk_fn: Callable | None = None,
) -> torch.Tensor:
    """Jaccard distance ``[N, K]`` between videos ``[N, D]`` and centroids ``[K, D]``.

    Both are L2-normalised and stacked into one set of ``N + K`` points. Up to ``dense_limit``
    points the dense op is used; beyond, ``jaccard_distance_topk`` with ``topk_m`` neighbours
    per row, and a centroid that is not among a video's ``topk_m`` nearest gets distance 1
    (an upper bound: its true distance is at least the row's ``topk_m``-th smallest).
    ``k1``/``k2`` are clamped to the set size.
    """
    if jaccard_fn is None or jaccard_topk_fn is None:
        from stovtal import ops

        jaccard_fn = jaccard_fn or ops.jaccard_distance
        jaccard_topk_fn = jaccard_topk_fn or ops.jaccard_distance_topk
    n, k = videos.shape[0], centroids.shape[0]
    pts = torch.cat([F.normalize(videos, dim=1), F.normalize(centroids, dim=1)]).contiguous()
    k1 = max(1, min(k1, n + k))
    k2 = max(1, min(k2, k1))
    if n + k <= dense_limit:
        return jaccard_fn(pts, k1, k2)[:n, n:]
    m = min(topk_m, n + k)
    vals, idx = jaccard_topk_fn(pts, k1, k2, m)
    out = torch.ones(n, k, dtype=pts.dtype, device=pts.device)
    vals, idx = vals[:n], idx[:n]
    is_c = idx >= n
    rows = torch.arange(n, device=pts.device)[:, None].expand_as(idx)
    out[rows[is_c], idx[is_c] - n] = vals[is_c]
    return out


def cci_refine(
    videos: torch.Tensor,
    centroids: torch.Tensor,
    k1: int = 20,
    k2: int = 6,
    lam: float = 0.5,
    dense_limit: int = 4096,
    topk_m: int = 100,
    jaccard_fn: Callable | None = None,
    jaccard_topk_fn: Callable | None = None,
) -> CCIResult:
    """Reassign videos ``[N, D]`` to centroids ``[K, D]`` under the combined distance.

    ``lam`` in [0, 1] weighs the Jaccard term; ``lam=0`` is plain nearest-centroid under the
    (normalised) Euclidean distance. Inputs are L2-normalised here (cosine geometry).
    """
    if videos.dim() != 2 or centroids.dim() != 2 or videos.shape[1] != centroids.shape[1]:
        raise ValueError(f"cci_refine: need videos [N, D] and centroids [K, D], got {tuple(videos.shape)} and {tuple(centroids.shape)}")
    if videos.shape[0] == 0 or centroids.shape[0] == 0:
        raise ValueError("cci_refine: empty videos or centroids")
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"cci_refine: lam must be in [0, 1], got {lam}")
    if not (torch.isfinite(videos).all() and torch.isfinite(centroids).all()):
        raise ValueError("cci_refine: videos or centroids contain NaN or Inf")
    v = F.normalize(videos, dim=1)
    c = F.normalize(centroids, dim=1)
    original = pairwise_sq_dist(v, c) / 4.0
    if lam > 0:
        jac = video_centroid_jaccard(v, c, k1, k2, dense_limit, topk_m, jaccard_fn, jaccard_topk_fn)
        jac = jac.to(original.dtype)
    else:
        jac = torch.zeros_like(original)
    dist = lam * jac + (1.0 - lam) * original
    if dist.shape[1] == 1:
        labels = torch.zeros(dist.shape[0], dtype=torch.long, device=dist.device)
        conf = torch.ones(dist.shape[0], dtype=dist.dtype, device=dist.device)
    else:
        two = dist.topk(2, dim=1, largest=False)
        labels = two.indices[:, 0]
        conf = (two.values[:, 1] - two.values[:, 0]).clamp(0.0, 1.0)
    return CCIResult(labels=labels, confidence=conf, distance=dist, jaccard=jac)
