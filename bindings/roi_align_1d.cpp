// Schemas of the roi_align_1d op family. The backward is an op of its own
// (linear in grad, differentiable again through roi_align_1d), so opcheck
// and double backward are well defined.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(stovtal, m) {
  m.def(
      "roi_align_1d(Tensor features, Tensor rois, SymInt output_size, float spatial_scale=1.0, "
      "int sampling_ratio=0, bool aligned=True) -> Tensor");
  m.def(
      "roi_align_1d_backward(Tensor grad, Tensor rois, SymInt batch_size, SymInt length, "
      "float spatial_scale, int sampling_ratio, bool aligned) -> Tensor");
}
