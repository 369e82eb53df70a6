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
}
