// Schemas of the temporal NMS op family (semantics: stovtal/ops/nms.py).
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(stovtal, m) {
  m.def(
      "temporal_nms(Tensor segments, Tensor scores, float iou_threshold, Tensor? labels=None, "
      "int max_keep=-1) -> Tensor");
  m.def(
      "soft_nms(Tensor segments, Tensor scores, float iou_threshold, float sigma, "
      "float min_score, int method, Tensor? labels=None, int max_keep=-1, "
      "float? voting_threshold=None) -> (Tensor, Tensor, Tensor)");
  // temporal_nms by the banded suppression mask of the CUDA kernel, with the
  // band size (bytes of mask words) as an argument: for tests only
  // (csrc/nms/nms_banded.h).
  m.def(
      "_temporal_nms_banded(Tensor segments, Tensor scores, float iou_threshold, Tensor? labels, "
      "int max_keep, int band_bytes) -> Tensor");
}
