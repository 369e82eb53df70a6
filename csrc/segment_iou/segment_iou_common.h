// Validation shared by the CPU and CUDA entry points of segment_iou.
#pragma once

#include <ATen/core/Tensor.h>

#include "../common/checks.h"

namespace stovtal {

inline void check_segment_pair(const at::Tensor& a, const at::Tensor& b, bool aligned,
                               const char* op) {
  check_floating(a, op, "a");
  check_floating(b, op, "b");
  check_dim(a, 2, op, "a");
  check_dim(b, 2, op, "b");
  TORCH_CHECK(a.size(1) == 2, op, ": a must have shape [N, 2] (start, end), got ", a.sizes());
  TORCH_CHECK(b.size(1) == 2, op, ": b must have shape [M, 2] (start, end), got ", b.sizes());
  check_same_dtype(a, b, op, "a", "b");
  check_same_device(a, b, op, "a", "b");
  if (aligned) {
    TORCH_CHECK(a.size(0) == b.size(0), op, ": aligned IoU needs a and b with the same N, got ",
                a.size(0), " and ", b.size(0));
  }
}

inline void check_grad(const at::Tensor& grad, at::IntArrayRef expected, const at::Tensor& a,
                       const char* op) {
  TORCH_CHECK(grad.sizes() == expected, op, ": grad must have shape ", expected, ", got ",
              grad.sizes());
  check_same_dtype(grad, a, op, "grad", "a");
  check_same_device(grad, a, op, "grad", "a");
}

}  // namespace stovtal
