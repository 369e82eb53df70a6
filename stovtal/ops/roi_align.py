"""1-D RoI-Align over the time axis (``stovtal::roi_align_1d``)."""

from __future__ import annotations

import torch
from torch import Tensor

from ._checks import check_floating, check_same_device

__all__ = ["roi_align_1d", "MAX_SAMPLING_RATIO"]

# Largest fixed sampling_ratio (samples per bin) accepted; csrc/roi_align_1d/
# roi_align_1d.h (kRoiMaxSamplingRatio) holds the same bound.
MAX_SAMPLING_RATIO = 1 << 16


def roi_align_1d(
    features: Tensor,
    rois: Tensor,
    output_size: int,
    spatial_scale: float = 1.0,
    sampling_ratio: int = 0,
    aligned: bool = True,
) -> Tensor:
    """Pool ``features`` over temporal regions into ``output_size`` bins.

    ``torchvision.ops.roi_align`` restricted to one (time) axis: the same
    sample positions, interpolation and averaging as torchvision applied to
    ``[B, C, 1, T]`` inputs.

    Args:
        features: ``[B, C, T]`` features, channels first (float32/float64;
            float16/bfloat16 accumulate in float32).
        rois: ``[K, 3]`` rows ``(batch index, start, end)`` with start/end in
            input units (e.g. snippets, or seconds with ``spatial_scale =
            fps / stride``); same dtype and device as ``features``. The batch
            index must be an integer in ``[0, B)``; every value finite.
        output_size: number of bins ``L >= 1``.
        spatial_scale: factor (> 0) from roi units to feature-index units.
        sampling_ratio: samples per bin, at most ``MAX_SAMPLING_RATIO``
            (65536); ``<= 0`` means adaptive, ``ceil(roi_width /
            output_size)`` (unbounded, but its samples are >= 0.5 apart and
            only those in ``[-1, T]`` are visited, so a bin costs O(T)).
        aligned: if True, shift the scaled roi by -0.5 so that feature index
            ``t`` covers ``[t, t + 1)`` (pixel-model aligned); if False, a
            roi narrower than 1 is widened to 1 (legacy behaviour).

    Returns:
        ``[K, C, L]``, dtype of ``features``. Each bin averages its samples;
        a sample outside ``[-1, T]`` contributes 0, otherwise it is clamped
        into ``[0, T-1]`` and linearly interpolated; the divisor is the
        number of samples (invalid ones included), at least 1.

    Edge cases (all as torchvision does): a roi partly outside ``[0, T]``
    pools zeros for the samples beyond ``[-1, T]``. A reversed roi
    (start > end) is not reordered: with ``aligned=False`` its width is
    widened to 1 from ``start``; with ``aligned=True`` its width is negative,
    so adaptive sampling takes no samples (all bins are 0) while a fixed
    ``sampling_ratio`` samples the mirrored bins, walking from ``start``
    towards ``end``. An empty aligned roi (start == end) is 0 with adaptive
    sampling and the value at ``start`` with a fixed ``sampling_ratio``.
    ``K = 0`` gives ``[0, C, L]``.

    Differentiable in ``features`` (to any order: the backward is linear and
    is itself differentiable); ``rois`` get no gradient.
    """
    return torch.ops.stovtal.roi_align_1d(
        features, rois, output_size, float(spatial_scale), int(sampling_ratio), bool(aligned)
    )


def _check_fake(features: Tensor, rois: Tensor, output_size: int, sampling_ratio: int) -> None:
    name = "roi_align_1d"
    torch._check(features.dim() == 3, lambda: f"{name}: features must be 3-D [B, C, T]")
    torch._check(
        rois.dim() == 2 and rois.shape[1] == 3, lambda: f"{name}: rois must have shape [K, 3]"
    )
    check_floating(name, "features", features)
    torch._check(
        features.dtype == rois.dtype, lambda: f"{name}: features and rois must have the same dtype"
    )
    check_same_device(name, features=features, rois=rois)
    torch._check(
        features.shape[2] >= 1, lambda: f"{name}: features must have at least one time step"
    )
    torch._check(output_size >= 1, lambda: f"{name}: output_size must be >= 1")
    _check_fake_sampling(name, sampling_ratio)


def _check_fake_sampling(name: str, sampling_ratio: int) -> None:
    torch._check(
        sampling_ratio <= MAX_SAMPLING_RATIO,
        lambda: f"{name}: sampling_ratio must be <= {MAX_SAMPLING_RATIO} (<= 0: adaptive), "
        f"got {sampling_ratio}",
    )


@torch.library.register_fake("stovtal::roi_align_1d")
def _(features, rois, output_size, spatial_scale=1.0, sampling_ratio=0, aligned=True):
    _check_fake(features, rois, output_size, sampling_ratio)
    return features.new_empty((rois.shape[0], features.shape[1], output_size))


@torch.library.register_fake("stovtal::roi_align_1d_backward")
def _(grad, rois, batch_size, length, spatial_scale, sampling_ratio, aligned):
    name = "roi_align_1d_backward"
    torch._check(grad.dim() == 3, lambda: f"{name}: grad must be 3-D [K, C, L]")
    torch._check(
        rois.dim() == 2 and rois.shape[1] == 3, lambda: f"{name}: rois must have shape [K, 3]"
    )
    torch._check(grad.shape[0] == rois.shape[0], lambda: f"{name}: grad and rois need the same K")
    check_floating(name, "grad", grad)
    torch._check(grad.dtype == rois.dtype, lambda: f"{name}: grad and rois must have the same dtype")
    check_same_device(name, grad=grad, rois=rois)
    _check_fake_sampling(name, sampling_ratio)
    return grad.new_empty((batch_size, grad.shape[1], length))


def _setup_context(ctx, inputs, output) -> None:
    features, rois, output_size, spatial_scale, sampling_ratio, aligned = inputs
    ctx.save_for_backward(rois)
    ctx.shape = (features.shape[0], features.shape[2])
    ctx.args = (spatial_scale, sampling_ratio, aligned)


def _backward(ctx, grad: Tensor):
    (rois,) = ctx.saved_tensors
    grad_features = None
    if ctx.needs_input_grad[0]:
        grad_features = torch.ops.stovtal.roi_align_1d_backward(
            grad.contiguous(), rois, *ctx.shape, *ctx.args
        )
    return grad_features, None, None, None, None, None


def _setup_context_backward(ctx, inputs, output) -> None:
    grad, rois, batch_size, length, spatial_scale, sampling_ratio, aligned = inputs
    ctx.save_for_backward(rois)
    ctx.output_size = grad.shape[2]
    ctx.args = (spatial_scale, sampling_ratio, aligned)


def _backward_of_backward(ctx, grad_grad_features: Tensor):
    # roi_align_1d_backward is the adjoint of the (linear) forward, so its
    # gradient w.r.t. grad is the forward applied to the incoming gradient.
    (rois,) = ctx.saved_tensors
    grad_grad = None
    if ctx.needs_input_grad[0]:
        grad_grad = torch.ops.stovtal.roi_align_1d(
            grad_grad_features.contiguous(), rois, ctx.output_size, *ctx.args
        )
    return grad_grad, None, None, None, None, None, None


torch.library.register_autograd("stovtal::roi_align_1d", _backward, setup_context=_setup_context)
torch.library.register_autograd(
    "stovtal::roi_align_1d_backward", _backward_of_backward, setup_context=_setup_context_backward
)
