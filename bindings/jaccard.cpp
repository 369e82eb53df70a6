// Schemas of the k-reciprocal Jaccard distance ops (semantics:
// stovtal/ops/jaccard.py).
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(stovtal, m) {
  m.def("jaccard_distance(Tensor features, int k1, int k2) -> Tensor");
  m.def("jaccard_distance_topk(Tensor features, int k1, int k2, int m) -> (Tensor, Tensor)");
}
