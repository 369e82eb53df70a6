"""k-means in torch (k-means++ init, several restarts), CPU or GPU, seeded.

Used by FEEL to cluster video-level features into K pseudo-classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["KMeansResult", "kmeans", "pairwise_sq_dist"]


@dataclass
class KMeansResult:
    """labels ``[N]`` int64 in ``[0, K)``, centroids ``[K, D]``, inertia = sum of squared distances."""

    labels: torch.Tensor
    centroids: torch.Tensor
    inertia: float
    n_iter: int


def pairwise_sq_dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances ``[N, M]`` between rows of a ``[N, D]`` and b ``[M, D]`` (>= 0)."""
    d = (a * a).sum(1, keepdim=True) - 2.0 * a @ b.T + (b * b).sum(1)[None, :]
    return d.clamp_min_(0.0)


def _kmeans_pp(x: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    first = torch.randint(n, (1,), generator=gen, device="cpu").item()
    centroids = [x[first]]
    closest = pairwise_sq_dist(x, x[first : first + 1]).squeeze(1)
    for _ in range(1, k):
        total = closest.sum()
        if total <= 0:  # all remaining points coincide with a centroid: pick uniformly
            idx = torch.randint(n, (1,), generator=gen, device="cpu").item()
        else:
            probs = (closest / total).double().cpu()
            idx = torch.multinomial(probs, 1, generator=gen).item()
        centroids.append(x[idx])
        closest = torch.minimum(closest, pairwise_sq_dist(x, x[idx : idx + 1]).squeeze(1))
    return torch.stack(centroids)


def _lloyd(x: torch.Tensor, centroids: torch.Tensor, max_iter: int, tol: float, gen: torch.Generator):
    k = centroids.shape[0]
    labels = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    it = 0
    while it < max_iter:
        it += 1
        d = pairwise_sq_dist(x, centroids)
        labels = d.argmin(1)
        counts = torch.bincount(labels, minlength=k)
        sums = torch.zeros_like(centroids).index_add_(0, labels, x)
        new = sums / counts.clamp_min(1)[:, None].to(x.dtype)
        empty = counts == 0
        if empty.any():
            # re-seed an empty cluster at the point farthest from its centroid
            far = d.gather(1, labels[:, None]).squeeze(1)
            for c in torch.nonzero(empty).flatten().tolist():
                j = int(far.argmax())
                new[c] = x[j]
                far[j] = -1.0
        shift = (new - centroids).pow(2).sum()
        centroids = new
        if shift <= tol:
            break
    d = pairwise_sq_dist(x, centroids)
    labels = d.argmin(1)
    inertia = float(d.gather(1, labels[:, None]).sum())
    return labels, centroids, inertia, it


def kmeans(
    x: torch.Tensor,
    k: int,
    n_init: int = 10,
    max_iter: int = 300,
    tol: float = 1e-6,
    seed: int = 0,
) -> KMeansResult:
    """Cluster rows of ``x`` ``[N, D]`` (float, finite, on any device) into ``k`` clusters.

    Runs ``n_init`` restarts with k-means++ seeding and Lloyd iterations (stopping when the
    total squared centroid shift is <= ``tol``), and keeps the restart with the lowest inertia.
    Deterministic for a given ``seed`` (the random choices are drawn on the CPU).
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        raise ValueError(f"kmeans: x must be a 2-D tensor [N, D], got {getattr(x, 'shape', type(x))}")
    if not x.is_floating_point():
        raise TypeError(f"kmeans: x must be floating point, got {x.dtype}")
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"kmeans: need 1 <= k <= N, got k={k}, N={n}")
    if n_init < 1 or max_iter < 1:
        raise ValueError(f"kmeans: n_init and max_iter must be >= 1, got {n_init}, {max_iter}")
    if not torch.isfinite(x).all():
        raise ValueError("kmeans: x contains NaN or Inf")
    gen = torch.Generator(device="cpu").manual_seed(seed)
    best: KMeansResult | None = None
    for _ in range(n_init):
        init = _kmeans_pp(x, k, gen)
        labels, centroids, inertia, n_iter = _lloyd(x, init, max_iter, tol, gen)
        if best is None or inertia < best.inertia:
            best = KMeansResult(labels, centroids, inertia, n_iter)
    assert best is not None
    return best
