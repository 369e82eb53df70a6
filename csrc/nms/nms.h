// Math shared by the CPU and CUDA kernels of temporal_nms and soft_nms.
//
// The IoU is the one of segment_iou (csrc/segment_iou/segment_iou.h): length
// max(end - start, 0), zero union -> 0, no "+1" or epsilon on lengths.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

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

// Round-to-nearest double arithmetic that the compiler may not fuse: nvcc
// contracts a * b + c into one FMA by default, which rounds once instead of
// twice. The intrinsics keep every step an IEEE operation, so the host and
// the device compute bit-identical values. (The host build targets x86-64
// without FMA, where GCC emits separate multiplies and adds.)
STOVTAL_HOST_DEVICE STOVTAL_INLINE double mul_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}

STOVTAL_HOST_DEVICE STOVTAL_INLINE double add_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}

// The bits of a double as an integer, and back.
STOVTAL_HOST_DEVICE STOVTAL_INLINE int64_t bits_of(double x) {
#if defined(__CUDA_ARCH__)
  return static_cast<int64_t>(__double_as_longlong(x));
#else
  int64_t out;
  std::memcpy(&out, &x, sizeof(out));
  return out;
#endif
}

// 2^k as a double for a normal exponent k in [-1022, 1023], from its bits.
STOVTAL_HOST_DEVICE STOVTAL_INLINE double pow2_rn(int64_t k) {
  const uint64_t bits = static_cast<uint64_t>(k + 1023) << 52;
#if defined(__CUDA_ARCH__)
  return __longlong_as_double(static_cast<long long>(bits));
#else
  double out;
  std::memcpy(&out, &bits, sizeof(out));
  return out;
#endif
}

// exp(x) in double from IEEE additions and multiplications only (no libm),
// so that every backend gets the same bits: x = n ln2 + r with |r| <= ln2/2
// (Cody-Waite split of ln2), exp(r) by its Taylor polynomial to degree 13
// (truncation below 1e-17 relative), times 2^n built from exponent bits.
// Within 1 ulp of glibc's exp. This core needs -745.2 <= x <= 709.78 (or
// NaN, which it returns) and has no branches, so a loop over it vectorises.
STOVTAL_HOST_DEVICE STOVTAL_INLINE double exp_rn_core(double x) {
  constexpr double kInvLn2 = 1.4426950408889634;
  constexpr double kLn2Hi = 6.93147180369123816490e-01;  // 32 significant bits: n * kLn2Hi is exact
  constexpr double kLn2Lo = 1.90821492927058770002e-10;
  constexpr double kRound = 6755399441055744.0;  // 1.5 * 2^52: adding it rounds to an integer
  const double t = add_rn(mul_rn(x, kInvLn2), kRound);
  const double n = add_rn(t, -kRound);
  const double r = add_rn(add_rn(x, -mul_rn(n, kLn2Hi)), -mul_rn(n, kLn2Lo));
  // Horner form of sum_{k<=13} r^k / k!.
  constexpr double kInvFact[14] = {1.0,
                                   1.0,
                                   1.0 / 2,
                                   1.0 / 6,
                                   1.0 / 24,
                                   1.0 / 120,
                                   1.0 / 720,
                                   1.0 / 5040,
                                   1.0 / 40320,
                                   1.0 / 362880,
                                   1.0 / 3628800,
                                   1.0 / 39916800,
                                   1.0 / 479001600,
                                   1.0 / 6227020800};
  double p = kInvFact[13];
  for (int k = 12; k >= 0; --k) p = add_rn(mul_rn(p, r), kInvFact[k]);
  // n is the low bits of t (t = 1.5 * 2^52 + n). 2^n = 2^a * 2^(n - a) with
  // both exponents normal for n in [-1075, 1024]; p * 2^a is exact, so the
  // result rounds once, in the last multiplication (subnormal results too).
  const int64_t ni = bits_of(t) - bits_of(kRound);
  const int64_t a = static_cast<int64_t>(static_cast<uint64_t>(ni + 2048) >> 1) - 1024;
  return mul_rn(mul_rn(p, pow2_rn(a)), pow2_rn(ni - a));
}

// exp(x) for any double: exp_rn_core with the ends of the range: 0 below
// -745.2 (and at -inf), inf above 709.78, NaN for NaN.
STOVTAL_HOST_DEVICE STOVTAL_INLINE double exp_rn(double x) {
  if (x != x) return x;
  if (x < -745.2) return 0.0;
  if (x > 709.78) return mul_rn(0x1p1023, 4.0);  // overflows to inf
  return exp_rn_core(x);
}

// Gaussian soft-NMS weight exp(-iou^2 / sigma) for iou > 0 (the caller
// handles iou <= 0 and NaN, whose weight is 1): computed in double (iou^2 is
// exact for float inputs, one IEEE division, exp_rn) and rounded to T once,
// so that it is bit-identical on every backend. Branch-free.
template <typename T>
STOVTAL_HOST_DEVICE STOVTAL_INLINE T gaussian_weight(T iou, T sigma) {
  const double v = static_cast<double>(iou);
  const double x = -mul_rn(v, v) / static_cast<double>(sigma);  // <= 0
  const bool underflow = x < -745.2;
  const double w = exp_rn_core(underflow ? -745.2 : x);
  return static_cast<T>(underflow ? 0.0 : w);
}

// Soft-NMS decay factor of a remaining candidate whose IoU with the selected
// one is `iou`: linear (1 - iou) only when iou >= threshold, gaussian
// exp(-iou^2 / sigma) always. A zero IoU gives exactly 1 for both.
// The gaussian weight is gaussian_weight's (computed in double, rounded once).
template <typename T>
STOVTAL_HOST_DEVICE STOVTAL_INLINE T soft_nms_weight(T iou, T iou_threshold, T sigma,
                                                     int64_t method) {
  if (method == kSoftNmsLinear) return iou >= iou_threshold ? T(1) - iou : T(1);
  return iou > T(0) ? gaussian_weight(iou, sigma) : T(1);
}

// Max-score selection order: higher score first, equal scores -> lower index.
template <typename T>
STOVTAL_HOST_DEVICE STOVTAL_INLINE bool score_before(T score_a, int64_t index_a, T score_b,
                                                     int64_t index_b) {
  return score_a > score_b || (score_a == score_b && index_a < index_b);
}

// Score-voting weight of an input candidate for a kept segment (ActionFormer's
// seg_voting): its original score times its IoU with the kept segment when
// IoU >= voting threshold, else 0; negative scores count as 0.
template <typename T>
STOVTAL_HOST_DEVICE STOVTAL_INLINE T voting_weight(T iou, T score, T voting_threshold) {
  return (iou >= voting_threshold && score > T(0)) ? score * iou : T(0);
}

}  // namespace stovtal
