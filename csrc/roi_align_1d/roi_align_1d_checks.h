// Validation shared by the CPU and CUDA entry points of roi_align_1d.
#pragma once

#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/all.h>
#include <ATen/ops/any.h>
#include <ATen/ops/isfinite.h>
#include <ATen/ops/nonzero.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/trunc.h>
#include <c10/util/Exception.h>

#include <cmath>

#include "../common/checks.h"
#include "roi_align_1d.h"

namespace stovtal {

// A fixed sampling_ratio costs that many samples per bin (and, on CUDA, per
// channel), so it is bounded; adaptive sampling (<= 0) needs no bound: its
// samples are >= 0.5 apart and only those in [-1, T] are visited.
inline void check_sampling_ratio(int64_t sampling_ratio, const char* op) {
  TORCH_CHECK(sampling_ratio <= kRoiMaxSamplingRatio, op, ": sampling_ratio must be <= ",
              kRoiMaxSamplingRatio, " samples per bin (<= 0: adaptive), got ", sampling_ratio);
}

// Shapes, dtypes, devices and scalar arguments (no data is read).
inline void check_roi_align_args(const at::Tensor& features, const at::Tensor& rois,
                                 int64_t output_size, double spatial_scale,
                                 int64_t sampling_ratio, const char* op) {
  check_floating(features, op, "features");
  check_dim(features, 3, op, "features");
  check_dim(rois, 2, op, "rois");
  TORCH_CHECK(rois.size(1) == 3, op,
              ": rois must have shape [K, 3] (batch index, start, end), got ", rois.sizes());
  check_same_dtype(features, rois, op, "features", "rois");
  check_same_device(features, rois, op, "features", "rois");
  TORCH_CHECK(features.size(2) >= 1, op, ": features must have at least one time step, got shape ",
              features.sizes());
  TORCH_CHECK(output_size >= 1, op, ": output_size must be >= 1, got ", output_size);
  TORCH_CHECK(std::isfinite(spatial_scale) && spatial_scale > 0, op,
              ": spatial_scale must be finite and > 0, got ", spatial_scale);
  check_sampling_ratio(sampling_ratio, op);
}

// Data checks on the rois (one host synchronisation on CUDA): every value
// finite, every batch index an integer in [0, batch_size).
inline void check_roi_values(const at::Tensor& rois, int64_t batch_size, const char* op) {
  if (rois.size(0) == 0) return;
  const at::Tensor idx = rois.select(1, 0);
  const at::Tensor finite = at::isfinite(rois).all(1);
  const at::Tensor bad_index = (idx < 0) | (idx >= static_cast<double>(batch_size)) |
                               (at::trunc(idx) != idx);
  const at::Tensor flags = at::stack({finite.logical_not().any(), bad_index.any()}).cpu();
  const bool* f = flags.const_data_ptr<bool>();
  if (f[0]) {
    const int64_t row = at::nonzero(finite.logical_not()).select(1, 0)[0].item<int64_t>();
    TORCH_CHECK(false, op, ": rois must be finite; row ", row, " is ", rois[row].cpu());
  }
  if (f[1]) {
    const int64_t row = at::nonzero(bad_index).select(1, 0)[0].item<int64_t>();
    TORCH_CHECK(false, op, ": rois[:, 0] must be an integer batch index in [0, ", batch_size,
                "); row ", row, " has ", idx[row].item<double>());
  }
}

inline void check_roi_align_grad(const at::Tensor& grad, const at::Tensor& rois,
                                 int64_t batch_size, int64_t length, double spatial_scale,
                                 int64_t sampling_ratio, const char* op) {
  check_floating(grad, op, "grad");
  check_dim(grad, 3, op, "grad");
  check_dim(rois, 2, op, "rois");
  TORCH_CHECK(rois.size(1) == 3, op,
              ": rois must have shape [K, 3] (batch index, start, end), got ", rois.sizes());
  TORCH_CHECK(grad.size(0) == rois.size(0), op, ": grad must have shape [K, C, output_size] with K = ",
              rois.size(0), " rois, got ", grad.sizes());
  TORCH_CHECK(grad.size(2) >= 1, op, ": grad must have output_size >= 1, got shape ", grad.sizes());
  check_same_dtype(grad, rois, op, "grad", "rois");
  check_same_device(grad, rois, op, "grad", "rois");
  TORCH_CHECK(batch_size >= 0, op, ": batch_size must be >= 0, got ", batch_size);
  TORCH_CHECK(length >= 1, op, ": length must be >= 1, got ", length);
  TORCH_CHECK(std::isfinite(spatial_scale) && spatial_scale > 0, op,
              ": spatial_scale must be finite and > 0, got ", spatial_scale);
  check_sampling_ratio(sampling_ratio, op);
}

}  // namespace stovtal
