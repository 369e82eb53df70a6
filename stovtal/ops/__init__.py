"""The operators of stovtal, used the way ``torchvision.ops`` is.

Every op is a ``torch.library`` custom op in the ``stovtal`` namespace with
CPU and (when built) CUDA kernels, a fake kernel for ``torch.compile`` and
autograd where it is differentiable. ``stovtal.ops.reference`` holds the
pure-PyTorch versions that define their semantics.
"""

from . import reference
from ._library import info, registered_ops
from .jaccard import jaccard_distance, jaccard_distance_topk
from .nms import soft_nms, temporal_nms
from .roi_align import roi_align_1d
from .segment_iou import segment_iou

__all__ = [
    "info",
    "jaccard_distance",
    "jaccard_distance_topk",
    "reference",
    "registered_ops",
    "roi_align_1d",
    "segment_iou",
    "soft_nms",
    "temporal_nms",
]
