"""Temporal IoU between 1-D segments (``stovtal::segment_iou``)."""

from __future__ import annotations

import torch
from torch import Tensor

from ._checks import check_floating, check_same_device

__all__ = ["segment_iou"]


def segment_iou(a: Tensor, b: Tensor, aligned: bool = False) -> Tensor:
    """Temporal intersection-over-union of 1-D segments.

    Args:
        a: ``[N, 2]`` segments as (start, end), any unit (seconds or snippets).
        b: ``[M, 2]`` segments in the same unit (``[N, 2]`` when ``aligned``).
        aligned: if True, IoU of the matched pairs ``a[i]``, ``b[i]``.

    Returns:
        ``[N, M]`` (or ``[N]`` when ``aligned``) IoU in [0, 1], same dtype as
        the inputs. A segment's length is ``max(end - start, 0)``, so a
        reversed segment (end < start) has length 0; a zero union gives 0.
        NaN coordinates are propagated: every IoU involving a NaN is NaN
        (the op never hides them). Float16/bfloat16 compute in float32.

    Differentiable in both inputs (pairwise and aligned), e.g. for IoU losses.
    Subgradients at kinks (ties of starts or ends, touching segments) follow
    ``csrc/segment_iou/segment_iou.h``.
    """
    if aligned:
        return torch.ops.stovtal.segment_iou_aligned(a, b)
    return torch.ops.stovtal.segment_iou(a, b)


def _check_fake(a: Tensor, b: Tensor, aligned: bool) -> None:
    name = "segment_iou_aligned" if aligned else "segment_iou"
    torch._check(a.dim() == 2 and a.shape[1] == 2, lambda: f"{name}: a must have shape [N, 2]")
    torch._check(b.dim() == 2 and b.shape[1] == 2, lambda: f"{name}: b must have shape [M, 2]")
    check_floating(name, "a", a)
    check_floating(name, "b", b)
    torch._check(a.dtype == b.dtype, lambda: f"{name}: a and b must have the same dtype")
    check_same_device(name, a=a, b=b)
    if aligned:
        torch._check(a.shape[0] == b.shape[0], lambda: f"{name}: a and b need the same N")


@torch.library.register_fake("stovtal::segment_iou")
def _(a: Tensor, b: Tensor) -> Tensor:
    _check_fake(a, b, aligned=False)
    return a.new_empty((a.shape[0], b.shape[0]))


@torch.library.register_fake("stovtal::segment_iou_aligned")
def _(a: Tensor, b: Tensor) -> Tensor:
    _check_fake(a, b, aligned=True)
    return a.new_empty((a.shape[0],))


def _check_fake_backward(grad: Tensor, a: Tensor, b: Tensor, aligned: bool) -> None:
    name = "segment_iou_aligned_backward" if aligned else "segment_iou_backward"
    _check_fake(a, b, aligned)
    expected = (a.shape[0],) if aligned else (a.shape[0], b.shape[0])
    torch._check(
        tuple(grad.shape) == expected, lambda: f"{name}: grad must have shape {list(expected)}"
    )
    torch._check(grad.dtype == a.dtype, lambda: f"{name}: grad and a must have the same dtype")
    check_same_device(name, grad=grad, a=a)


@torch.library.register_fake("stovtal::segment_iou_backward")
def _(grad: Tensor, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    _check_fake_backward(grad, a, b, aligned=False)
    return torch.empty_like(a), torch.empty_like(b)


@torch.library.register_fake("stovtal::segment_iou_aligned_backward")
def _(grad: Tensor, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    _check_fake_backward(grad, a, b, aligned=True)
    return torch.empty_like(a), torch.empty_like(b)


def _setup_context(ctx, inputs, output) -> None:
    a, b = inputs
    ctx.save_for_backward(a, b)


def _backward(ctx, grad: Tensor):
    a, b = ctx.saved_tensors
    ga, gb = torch.ops.stovtal.segment_iou_backward(grad.contiguous(), a, b)
    return ga, gb


def _backward_aligned(ctx, grad: Tensor):
    a, b = ctx.saved_tensors
    ga, gb = torch.ops.stovtal.segment_iou_aligned_backward(grad.contiguous(), a, b)
    return ga, gb


torch.library.register_autograd("stovtal::segment_iou", _backward, setup_context=_setup_context)
torch.library.register_autograd(
    "stovtal::segment_iou_aligned", _backward_aligned, setup_context=_setup_context
)
