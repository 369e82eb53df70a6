// Schemas of the segment_iou op family.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(stovtal, m) {
  m.def("segment_iou(Tensor a, Tensor b) -> Tensor");
  m.def("segment_iou_aligned(Tensor a, Tensor b) -> Tensor");
  m.def("segment_iou_backward(Tensor grad, Tensor a, Tensor b) -> (Tensor, Tensor)");
  m.def("segment_iou_aligned_backward(Tensor grad, Tensor a, Tensor b) -> (Tensor, Tensor)");
}
