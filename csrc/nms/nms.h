// Math shared by the CPU and CUDA kernels of temporal_nms and soft_nms.
//
// The IoU is the one of segment_iou (csrc/segment_iou/segment_iou.h): length
// max(end - start, 0), zero union -> 0, no "+1" or epsilon on lengths.
#pragma once

#include <cmath>
#include <cstdint>

#include "../common/macros.h"
#include "../segment_iou/segment_iou.h"

namespace stovtal {

// soft_nms `method` codes (ActionFormer numbering; 0 = hard NMS is temporal_nms).
constexpr int64_t kSoftNmsLinear = 1;
constexpr int64_t kSoftNmsGaussian = 2;

// Hard NMS: a candidate is suppressed by a kept one when IoU > threshold (strict).
template <typename T>
STOVTAL_HOST_DEVICE STOVTAL_INLINE bool nms_suppresses(T iou, T iou_threshold) {
  return iou > iou_threshold;
}

template <typename T>
STOVTAL_HOST_DEVICE STOVTAL_INLINE T exp_any(T x) {
  return exp(x);
}

template <>
STOVTAL_HOST_DEVICE STOVTAL_INLINE float exp_any<float>(float x) {
  return expf(x);
}

// Soft-NMS decay factor of a remaining candidate whose IoU with the selected
// one is `iou`: linear (1 - iou) only when iou >= threshold, gaussian
// exp(-iou^2 / sigma) always. A zero IoU gives exactly 1 for both.
template <typename T>
STOVTAL_HOST_DEVICE STOVTAL_INLINE T soft_nms_weight(T iou, T iou_threshold, T sigma,
                                                     int64_t method) {
  if (method == kSoftNmsLinear) return iou >= iou_threshold ? T(1) - iou : T(1);
  return iou > T(0) ? exp_any(-(iou * iou) / sigma) : T(1);
}

// Max-score selection order: higher score first, equal scores -> lower index.
template <typename T>
STOVTAL_HOST_DEVICE STOVTAL_INLINE bool score_before(T score_a, int64_t index_a, T score_b,
                                                     int64_t index_b) {
  return score_a > score_b || (score_a == score_b && index_a < index_b);
}

// Score-voting weight of an input candidate for a kept segment: its original
// score (negative scores count as 0) when IoU >= voting threshold, else 0.
template <typename T>
STOVTAL_HOST_DEVICE STOVTAL_INLINE T voting_weight(T iou, T score, T voting_threshold) {
  return (iou >= voting_threshold && score > T(0)) ? score : T(0);
}

}  // namespace stovtal
