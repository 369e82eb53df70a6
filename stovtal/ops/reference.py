"""Pure-PyTorch reference implementations of every stovtal op.

They define the semantics the kernels are tested against and are the
baselines in ``benchmarks/``. Written for clarity, not speed; vectorised
where that is the natural PyTorch formulation.
"""

from __future__ import annotations

import torch
from torch import Tensor


def segment_iou(a: Tensor, b: Tensor, aligned: bool = False) -> Tensor:
    """Reference for :func:`stovtal.ops.segment_iou` (broadcasted tensor math)."""
    if aligned:
        s1, e1, s2, e2 = a[:, 0], a[:, 1], b[:, 0], b[:, 1]
    else:
        s1, e1 = a[:, 0, None], a[:, 1, None]
        s2, e2 = b[None, :, 0], b[None, :, 1]
    compute = torch.float32 if a.dtype in (torch.float16, torch.bfloat16) else a.dtype
    s1, e1, s2, e2 = (x.to(compute) for x in (s1, e1, s2, e2))
    len1 = (e1 - s1).clamp(min=0)
    len2 = (e2 - s2).clamp(min=0)
    inter = (torch.minimum(e1, e2) - torch.maximum(s1, s2)).clamp(min=0)
    union = len1 + len2 - inter
    iou = torch.where(union > 0, inter / torch.where(union > 0, union, 1), 0)
    iou = torch.where(torch.isnan(union), union, iou)
    return iou.to(a.dtype)
