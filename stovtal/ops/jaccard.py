"""k-reciprocal Jaccard distance (``stovtal::jaccard_distance``,
``stovtal::jaccard_distance_topk``): the re-ranking distance of FEEL's
clustering-confidence step, as SpCL's ``compute_jaccard_distance``."""

from __future__ import annotations

import torch
from torch import Tensor

from ._checks import check_floating

__all__ = ["jaccard_distance", "jaccard_distance_topk"]

_SEMANTICS = """
    Semantics (exactly SpCL's ``compute_jaccard_distance``, Zhong et al. 2017),
    per set of N rows ``f``:

    1. ``initial_rank[i]``: the k1 nearest rows of row i under squared
       Euclidean distance, i itself included (normally first); ties go to the
       lower index. The ranking is exact: candidates are pre-selected from
       a blocked Gram matrix (float32 for float32 features) whose rounding
       is bounded; candidates whose keys lie within that bound of each other
       are ordered by per-pair distances in float64, and rows whose
       candidates are not proven to hold their k1 nearest are searched again
       with more candidates.
    2. ``R(i, k)``: the members j of ``initial_rank[i, :k+1]`` (in rank order)
       whose own ``initial_rank[j, :k+1]`` contains i (``initial_rank`` has
       only k1 columns, so ``R(i, k1)`` looks at k1 entries).
       ``R_half(i) = R(i, round_half_even(k1 / 2))``.
    3. ``E(i) = R(i, k1)`` plus ``R_half(c)`` for every c in ``R(i, k1)``
       (i included) with ``|R_half(c) ∩ R(i, k1)| > 2/3 |R_half(c)|``;
       deduplicated.
    4. ``V[i, j] = softmax_j(-(2 - 2 <f_i, f_j>))`` over j in E(i), 0 elsewhere.
    5. If k2 != 1: ``V[i] <- mean of V[initial_rank[i, :k2]]`` (simultaneous).
    6. ``s(i, j) = sum_l min(V[i, l], V[j, l])``; distance
       ``1 - s / (2 - s)``, clamped at 0. Rows sharing no column have distance 1.

    The op does **not** normalise the features: pass L2-normalised features
    (step 4 assumes ``|f| = 1``, as SpCL does). The distance is symmetric, and
    exactly so (``d[i, j] == d[j, i]`` bitwise: both min-sums are accumulated
    in the same column order). ``d[i, i]`` is 0 (up to rounding, ~1e-16)
    whenever V's row i is non-empty, i.e. unless i is missing from its own
    k1 neighbours (more than k1 - 1 exact duplicates with lower indices) and
    k2 == 1. Internally everything is computed in float64; float16/bfloat16/
    float32 results are rounded to the input dtype at the end. On CUDA, the
    float32 kNN search runs in float64 whenever float32 matmuls may use TF32
    (torch's matmul precision set to TF32, ``NVIDIA_TF32_OVERRIDE`` set to
    anything but ``0``, or ``TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1``), since TF32
    voids the rounding bound that proves the float32 candidates.

    Not differentiable (the neighbourhoods are discrete): the wrappers detach
    the features, so the outputs never require grad.
"""


def jaccard_distance(features: Tensor, k1: int, k2: int) -> Tensor:
    """Dense k-reciprocal Jaccard distance between all rows of a feature set.

    Args:
        features: ``[N, D]`` floating features (L2-normalised by the caller),
            or ``[B, N, D]``: B independent sets (e.g. one per video or per
            cluster), each treated on its own. Must be finite.
        k1: size of the k-reciprocal neighbourhoods, ``1 <= k1 <= N``.
        k2: size of the local query expansion, ``1 <= k2 <= k1``
            (``k2 = 1``: none).

    Returns:
        ``[N, N]`` (or ``[B, N, N]``) distances in [0, 1], dtype of the input.
        Memory is O(N^2) for the output; for large N use
        :func:`jaccard_distance_topk`.
    """
    return torch.ops.stovtal.jaccard_distance(features.detach(), k1, k2)


def jaccard_distance_topk(
    features: Tensor, k1: int, k2: int, m: int
) -> tuple[Tensor, Tensor]:
    """The m smallest k-reciprocal Jaccard distances of every row, exactly.

    Same distance as :func:`jaccard_distance`, but only ``m`` entries per row
    are returned, with O(N * (k1 + m)) memory beyond the features: the kNN
    search is blocked (on CPU, 256 x 256 tiles of the upper half of the Gram
    matrix, screened while in cache; on CUDA, chunked matmul + top-k), V is stored
    sparsely (~k1 nonzeros per row, CSR) and the min-sums run over an inverted
    index (V's transpose) with one sparse accumulator per thread.

    Args:
        features: ``[N, D]`` (or batched ``[B, N, D]``) finite floating
            features, L2-normalised by the caller.
        k1, k2: as in :func:`jaccard_distance`.
        m: entries per row, ``1 <= m <= N``.

    Returns:
        ``(distances, indices)``, each ``[N, m]`` (or ``[B, N, m]``): the m
        smallest entries of every row of the dense result, sorted by
        (distance, index), i.e. ties go to the lower index; distances in the
        input's dtype, indices int64 (local to the set).
    """
    return torch.ops.stovtal.jaccard_distance_topk(features.detach(), k1, k2, m)


jaccard_distance.__doc__ += _SEMANTICS
jaccard_distance_topk.__doc__ += _SEMANTICS


def _check_fake(features: Tensor, k1: int, k2: int, name: str) -> None:
    torch._check(
        features.dim() in (2, 3),
        lambda: f"{name}: features must be 2-D [N, D] or batched 3-D [B, N, D]",
    )
    check_floating(name, "features", features)
    torch._check(k1 >= 1, lambda: f"{name}: k1 must be >= 1")
    torch._check(1 <= k2 <= k1, lambda: f"{name}: k2 must satisfy 1 <= k2 <= k1")
    torch._check(features.shape[-2] >= k1, lambda: f"{name}: needs N >= k1")


@torch.library.register_fake("stovtal::jaccard_distance")
def _(features: Tensor, k1: int, k2: int) -> Tensor:
    _check_fake(features, k1, k2, "jaccard_distance")
    n = features.shape[-2]
    return features.new_empty((*features.shape[:-1], n))


@torch.library.register_fake("stovtal::jaccard_distance_topk")
def _(features: Tensor, k1: int, k2: int, m: int) -> tuple[Tensor, Tensor]:
    _check_fake(features, k1, k2, "jaccard_distance_topk")
    torch._check(1 <= m <= features.shape[-2], lambda: "jaccard_distance_topk: needs 1 <= m <= N")
    shape = (*features.shape[:-1], m)
    return features.new_empty(shape), features.new_empty(shape, dtype=torch.long)
