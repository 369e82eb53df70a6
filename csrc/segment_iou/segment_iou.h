// Temporal IoU of two 1-D segments and its gradient: the math shared by the
// CPU and CUDA kernels of `segment_iou` (and by the NMS ops).
//
// Segments are (start, end). Length is max(end - start, 0); a zero union
// gives IoU 0. A NaN coordinate gives NaN (propagated, never hidden).
#pragma once

#include "../common/macros.h"

namespace stovtal {

template <typename T>
STOVTAL_HOST_DEVICE STOVTAL_INLINE T segment_length(T s, T e) {
  return relu_nan(e - s);
}

// IoU of [s1, e1] and [s2, e2]; `len1`/`len2` are their precomputed lengths.
// Written branch-free (selects only, the division always evaluated) so that
// the CPU loop over pairs vectorises. A NaN coordinate makes a length and so
// the union NaN, which is what is returned.
template <typename T>
STOVTAL_HOST_DEVICE STOVTAL_INLINE T segment_iou_with_lengths(T s1, T e1, T len1, T s2, T e2,
                                                              T len2) {
  const T hi = e1 < e2 ? e1 : e2;
  const T lo = s1 > s2 ? s1 : s2;
  const T inter = relu_nan(hi - lo);
  const T uni = len1 + len2 - inter;
  const T ratio = inter / uni;
  const T iou = uni > T(0) ? ratio : T(0);
  return uni != uni ? uni : iou;
}

template <typename T>
STOVTAL_HOST_DEVICE STOVTAL_INLINE T segment_iou_pair(T s1, T e1, T s2, T e2) {
  return segment_iou_with_lengths(s1, e1, segment_length(s1, e1), s2, e2, segment_length(s2, e2));
}

// Gradient of IoU([s1,e1],[s2,e2]) scaled by `g`, written to the four outputs.
// Subgradients at kinks: a tie in min/max goes to the first segment; the
// intersection and the lengths are treated as flat at exactly 0. A zero union
// has zero gradient.
template <typename T>
STOVTAL_HOST_DEVICE STOVTAL_INLINE void segment_iou_pair_backward(T g, T s1, T e1, T s2, T e2,
                                                                 T* gs1, T* ge1, T* gs2, T* ge2) {
  const T len1 = segment_length(s1, e1);
  const T len2 = segment_length(s2, e2);
  const T inter_raw = min_nan(e1, e2) - max_nan(s1, s2);
  const T inter = relu_nan(inter_raw);
  const T uni = len1 + len2 - inter;
  *gs1 = T(0);
  *ge1 = T(0);
  *gs2 = T(0);
  *ge2 = T(0);
  if (uni != uni) {
    *gs1 = *ge1 = *gs2 = *ge2 = uni;
    return;
  }
  if (!(uni > T(0))) return;
  // iou = I / U with U = L1 + L2 - I:
  //   d iou / d I  = 1/U + I/U^2,   d iou / d Lk = -I/U^2.
  const T inv_u = T(1) / uni;
  const T d_inter = g * (inv_u + inter * inv_u * inv_u);
  const T d_len = -g * inter * inv_u * inv_u;
  if (inter_raw > T(0)) {
    if (e1 <= e2) *ge1 += d_inter; else *ge2 += d_inter;
    if (s1 >= s2) *gs1 -= d_inter; else *gs2 -= d_inter;
  }
  if (e1 - s1 > T(0)) {
    *ge1 += d_len;
    *gs1 -= d_len;
  }
  if (e2 - s2 > T(0)) {
    *ge2 += d_len;
    *gs2 -= d_len;
  }
}

}  // namespace stovtal
