// Validation shared by the CPU and CUDA entry points of temporal_nms / soft_nms.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <cmath>

#include "../common/checks.h"
#include "nms.h"

namespace stovtal {

inline void check_nms_inputs(const at::Tensor& segments, const at::Tensor& scores,
                             const std::optional<at::Tensor>& labels, const char* op) {
  check_floating(segments, op, "segments");
  check_floating(scores, op, "scores");
  check_dim(segments, 2, op, "segments");
  TORCH_CHECK(segments.size(1) == 2, op, ": segments must have shape [N, 2] (start, end), got ",
              segments.sizes());
  check_dim(scores, 1, op, "scores");
  TORCH_CHECK(scores.size(0) == segments.size(0), op,
              ": scores must have shape [N] with N = segments.size(0) = ", segments.size(0),
              ", got ", scores.sizes());
  check_same_dtype(segments, scores, op, "segments", "scores");
  check_same_device(segments, scores, op, "segments", "scores");
  if (labels.has_value()) {
    const at::Tensor& l = *labels;
    TORCH_CHECK(at::isIntegralType(l.scalar_type(), /*includeBool=*/false), op,
                ": labels must be an integer tensor, got ", l.scalar_type());
    check_dim(l, 1, op, "labels");
    TORCH_CHECK(l.size(0) == segments.size(0), op,
                ": labels must have shape [N] with N = segments.size(0) = ", segments.size(0),
                ", got ", l.sizes());
    check_same_device(segments, l, op, "segments", "labels");
  }
}

inline void check_iou_threshold(double iou_threshold, const char* op) {
  TORCH_CHECK(!std::isnan(iou_threshold), op, ": iou_threshold must not be NaN");
}

inline void check_soft_nms_params(double iou_threshold, double sigma, double min_score,
                                  int64_t method, std::optional<double> voting_threshold) {
  const char* op = "soft_nms";
  check_iou_threshold(iou_threshold, op);
  TORCH_CHECK(method == kSoftNmsLinear || method == kSoftNmsGaussian, op, ": method must be ",
              kSoftNmsLinear, " (linear) or ", kSoftNmsGaussian, " (gaussian), got ", method);
  TORCH_CHECK(method != kSoftNmsGaussian || (sigma > 0 && std::isfinite(sigma)), op,
              ": sigma must be a positive finite number for the gaussian method, got ", sigma);
  TORCH_CHECK(!std::isnan(min_score), op, ": min_score must not be NaN");
  if (voting_threshold.has_value()) {
    TORCH_CHECK(*voting_threshold > 0 && *voting_threshold <= 1, op,
                ": voting_threshold must be in (0, 1] (None disables voting), got ",
                *voting_threshold);
  }
}

}  // namespace stovtal
