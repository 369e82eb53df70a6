// Input validation shared by the CPU and CUDA entry points. Every message
// names the op and the argument so that a user sees what to fix.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace stovtal {

// Exactly the four dtypes every kernel dispatches on (at::isFloatingType would
// also accept the Float8 types, which no kernel handles).
inline bool is_supported_floating(c10::ScalarType t) {
  return t == c10::ScalarType::Half || t == c10::ScalarType::BFloat16 ||
         t == c10::ScalarType::Float || t == c10::ScalarType::Double;
}

inline void check_floating(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(is_supported_floating(t.scalar_type()), op, ": ", name,
              " must be a floating-point tensor (float16, bfloat16, float32 or float64), got ",
              t.scalar_type());
}

inline void check_dim(const at::Tensor& t, int64_t dim, const char* op, const char* name) {
  TORCH_CHECK(t.dim() == dim, op, ": ", name, " must be ", dim, "-D, got shape ", t.sizes());
}

inline void check_same_device(const at::Tensor& a, const at::Tensor& b, const char* op,
                              const char* name_a, const char* name_b) {
  TORCH_CHECK(a.device() == b.device(), op, ": ", name_a, " and ", name_b,
              " must be on the same device, got ", a.device(), " and ", b.device());
}

inline void check_same_dtype(const at::Tensor& a, const at::Tensor& b, const char* op,
                             const char* name_a, const char* name_b) {
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), op, ": ", name_a, " and ", name_b,
              " must have the same dtype, got ", a.scalar_type(), " and ", b.scalar_type());
}

inline void check_device(const at::Tensor& t, c10::DeviceType type, const char* op,
                         const char* name) {
  TORCH_CHECK(t.device().type() == type, op, ": ", name, " must be a ", type,
              " tensor in this kernel, got ", t.device());
}

}  // namespace stovtal
