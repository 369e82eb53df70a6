"""Temporal non-maximum suppression (``stovtal::temporal_nms``, ``stovtal::soft_nms``)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from ._checks import check_floating, check_same_device

__all__ = ["soft_nms", "temporal_nms", "SOFT_NMS_METHODS"]

# Method codes of the C++ schema (ActionFormer's numbering; 0 would be hard NMS).
SOFT_NMS_METHODS = {"linear": 1, "gaussian": 2}


def temporal_nms(
    segments: Tensor,
    scores: Tensor,
    iou_threshold: float,
    labels: Tensor | None = None,
    max_keep: int = -1,
) -> Tensor:
    """Greedy hard NMS of 1-D segments.

    Args:
        segments: ``[N, 2]`` (start, end), any time unit (seconds or snippets);
            must be finite.
        scores: ``[N]``, same dtype and device as ``segments``; NaN is an error
            (infinities are allowed).
        iou_threshold: a candidate is suppressed when its temporal IoU with an
            already kept candidate is strictly greater than this.
        labels: optional ``[N]`` integer tensor; if given, segments only
            suppress segments with the same label (per-label NMS in one call).
        max_keep: if > 0, return at most this many indices.

    Returns:
        ``[K]`` int64 indices into the inputs of the kept candidates, in
        selection order: descending score, equal scores by lower index
        (across all labels when ``labels`` is given). Same device as the inputs.

    Semantics: candidates are visited in that order and each is kept unless
    ``IoU(candidate, kept) > iou_threshold`` for a kept one (of its label).
    IoU is exactly :func:`stovtal.ops.segment_iou` (length
    ``max(end - start, 0)``, zero union -> IoU 0, so zero-length segments
    never suppress or get suppressed at a threshold >= 0). This is
    torchvision's ``nms`` convention. ActionFormer's ``nms_cpu`` differs in
    two ways: it suppresses at ``IoU >= iou_threshold`` and adds ``1e-6`` to
    every segment length. Two identical zero-length segments have IoU
    ``0 / 2e-6 = 0`` there as here, so they do not suppress each other at a
    threshold above 0; at threshold 0 its ``>=`` suppresses every pair of
    the same label (disjoint ones too), whereas here only pairs with a
    positive intersection are suppressed. Segments a few ``1e-6`` long get
    different IoUs in the two conventions.
    float16/bfloat16 inputs are compared in float32. Not differentiable.
    The CPU kernel visits only overlapping pairs of comparable length
    (interval index): O(N log N) plus the pairs it visits. Labels of at most
    1,024 float32 candidates on a CPU with AVX-512 F/BW/VL compare each
    candidate with 16 kept ones at a time instead (the same IoU operations,
    so the same kept set; ``STOVTAL_NMS_SIMD=0`` selects the scalar loops).

    CUDA: the same kept indices as the CPU. The pairwise suppression bitmask
    is computed in bands of about 1 GiB of mask words (rows suppressed by
    earlier bands are skipped; it stops at ``max_keep``), so device and host
    memory stay bounded for any N; the greedy sweep over it runs on the host.
    """
    return torch.ops.stovtal.temporal_nms(segments, scores, float(iou_threshold), labels, int(max_keep))


def soft_nms(
    segments: Tensor,
    scores: Tensor,
    iou_threshold: float,
    sigma: float,
    min_score: float,
    method: Literal["linear", "gaussian"] | int,
    labels: Tensor | None = None,
    max_keep: int = -1,
    voting_threshold: float | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Soft-NMS of 1-D segments (ActionFormer's ``softnms`` semantics), with optional score voting.

    Args:
        segments: ``[N, 2]`` (start, end), any time unit; must be finite.
        scores: ``[N]``, same dtype and device as ``segments``; must be finite
            (NaN or infinities are an error).
        iou_threshold: the linear method decays a candidate only when its IoU
            with the selected one is ``>=`` this; unused by the gaussian method.
        sigma: gaussian width (> 0); unused by the linear method.
        min_score: candidates whose decayed score falls strictly below this
            are dropped.
        method: ``"linear"`` or ``"gaussian"`` (or their codes 1 / 2).
        labels: optional ``[N]`` integer tensor; segments only decay segments
            of the same label (and only vote with them).
        max_keep: if > 0, stop after this many selections.
        voting_threshold: if given (in ``(0, 1]``), refine each selected
            segment by score voting (below); None disables voting.

    Returns:
        ``(segments [K, 2], scores [K], indices [K] int64)`` in selection
        order: the (voted) segments, their scores at selection time and their
        indices into the inputs.

    Algorithm (exact): while candidates remain and fewer than ``max_keep``
    are selected, select the remaining candidate with the highest current
    score (ties: lowest input index), then for every other remaining
    candidate ``j`` of the same label with ``iou = IoU(selected, j)``:
    linear ``s_j *= 1 - iou`` if ``iou >= iou_threshold``; gaussian
    ``s_j *= w`` with ``w = exp(-iou**2 / sigma)`` evaluated in float64
    (``iou`` and ``sigma`` in the compute dtype, converted exactly) and
    rounded once to the compute dtype, so that the CPU and CUDA kernels give
    the same bits; then drop ``j`` if ``s_j < min_score``.
    The selected candidate itself is never dropped, so the first selection of
    each label is kept even if its score is below ``min_score`` (as in
    ActionFormer), and after it every other candidate of that label below
    ``min_score`` is dropped. With labels this equals running soft-NMS on
    each label separately and merging the sequences by selection score.
    IoU is :func:`stovtal.ops.segment_iou`'s (ActionFormer adds ``1e-6`` to
    lengths; it also breaks ties by a position that its in-place swaps
    permute, whereas ties here always go to the lowest input index).

    Score voting (ActionFormer's ``seg_voting``, here per label): a selected
    segment ``k`` becomes ``sum_j w_j * segment_j / sum_j w_j`` over all input
    candidates ``j`` of its label (including itself and suppressed ones),
    with ``w_j = max(score_j, 0) * IoU(k, j) * [IoU(k, j) >= voting_threshold]``
    using the original, undecayed scores and ``k``'s segment before voting;
    the sums run over ``j`` in input order. If the weights sum to 0 the
    segment is left unchanged (ActionFormer would divide by zero). Scores and
    indices are not affected by voting. ActionFormer votes only in its
    class-agnostic mode, over all candidates; pass no ``labels`` for that.

    float16/bfloat16 inputs compute in float32. Not differentiable.
    The CPU kernel visits only the candidates that overlap each selection
    (interval index, lazy max-heap): O(N log N) plus the pairs it visits.
    With float32 (and float16/bfloat16) inputs on a CPU with AVX-512 F/BW/VL
    its overlap search and gaussian weights run 16 / 8 lanes wide, with the
    same IEEE operations in the same order, so the results are the same bits
    (environment variable ``STOVTAL_NMS_SIMD=0`` selects the scalar loops).

    CUDA: the same selections and bit-identical scores as the CPU (the shared
    math is compiled without fused multiply-adds). One thread block runs each
    label's soft-NMS, compacting the live candidates after every selection;
    the labels' sequences are merged on the host as on the CPU. Score voting
    runs one warp per kept segment, whose sums run in another order than the
    CPU's input order, so voted segments may differ in the last bits.
    """
    if isinstance(method, str):
        if method not in SOFT_NMS_METHODS:
            raise ValueError(f"soft_nms: method must be one of {sorted(SOFT_NMS_METHODS)}, got {method!r}")
        method = SOFT_NMS_METHODS[method]
    return torch.ops.stovtal.soft_nms(
        segments,
        scores,
        float(iou_threshold),
        float(sigma),
        float(min_score),
        int(method),
        labels,
        int(max_keep),
        None if voting_threshold is None else float(voting_threshold),
    )


def _check_fake(name: str, segments: Tensor, scores: Tensor, labels: Tensor | None) -> None:
    check_same_device(name, segments=segments, scores=scores, labels=labels)
    torch._check(
        segments.dim() == 2 and segments.shape[1] == 2,
        lambda: f"{name}: segments must have shape [N, 2]",
    )
    torch._check(scores.dim() == 1, lambda: f"{name}: scores must be 1-D")
    torch._check(scores.shape[0] == segments.shape[0], lambda: f"{name}: scores must have shape [N]")
    torch._check(segments.dtype == scores.dtype, lambda: f"{name}: segments and scores must have the same dtype")
    check_floating(name, "segments", segments)
    if labels is not None:
        torch._check(labels.dim() == 1 and labels.shape[0] == segments.shape[0], lambda: f"{name}: labels must have shape [N]")


def _num_kept(segments: Tensor) -> torch.SymInt:
    """An unbacked size for the data-dependent number of kept candidates, 0 <= k <= N."""
    k = torch.library.get_ctx().new_dynamic_size()
    torch._check(k <= segments.shape[0])
    return k


@torch.library.register_fake("stovtal::temporal_nms")
def _(segments, scores, iou_threshold, labels=None, max_keep=-1):
    _check_fake("temporal_nms", segments, scores, labels)
    return segments.new_empty((_num_kept(segments),), dtype=torch.long)


@torch.library.register_fake("stovtal::_temporal_nms_banded")
def _(segments, scores, iou_threshold, labels, max_keep, band_bytes):
    """Private op: the CUDA kernel's banded suppression mask (csrc/nms/nms_banded.h) on the
    CPU, with the band size as an argument, so that tests can cross band edges."""
    _check_fake("_temporal_nms_banded", segments, scores, labels)
    return segments.new_empty((_num_kept(segments),), dtype=torch.long)


@torch.library.register_fake("stovtal::soft_nms")
def _(segments, scores, iou_threshold, sigma, min_score, method, labels=None, max_keep=-1, voting_threshold=None):
    _check_fake("soft_nms", segments, scores, labels)
    k = _num_kept(segments)
    return (
        segments.new_empty((k, 2)),
        scores.new_empty((k,)),
        segments.new_empty((k,), dtype=torch.long),
    )
