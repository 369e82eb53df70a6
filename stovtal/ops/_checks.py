"""Argument checks shared by the fake (meta) kernels of the ops.

A fake kernel runs instead of the real one whenever any input is a meta or
fake tensor, including a mix such as one CPU and one meta tensor. The real
kernels check devices and dtypes in C++ (``csrc/common/checks.h``); these
checks say the same in the fake kernels, so that no mix of devices ever
returns an uninitialised tensor.
"""

from __future__ import annotations

import torch
from torch import Tensor

# The dtypes every kernel dispatches on (torch's is_floating_point also
# accepts the float8 types, which no kernel handles).
FLOATING_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_floating(op: str, name: str, t: Tensor) -> None:
    """``t`` has one of the four supported floating dtypes."""
    torch._check(
        t.dtype in FLOATING_DTYPES,
        lambda: f"{op}: {name} must be a floating-point tensor (float16, bfloat16, float32 or "
        f"float64), got {t.dtype}",
    )


def check_same_device(op: str, **tensors: Tensor | None) -> None:
    """All given tensors (None ones skipped) are on one device.

    Raises ``RuntimeError`` naming the op and the first two arguments that
    differ, e.g. a CPU ``a`` with a meta ``b``.
    """
    named = [(name, t) for name, t in tensors.items() if t is not None]
    if not named:
        return
    first_name, first = named[0]
    for name, t in named[1:]:
        if t.device != first.device:
            raise RuntimeError(
                f"{op}: {first_name} and {name} must be on the same device, got "
                f"{first.device} and {t.device}"
            )
