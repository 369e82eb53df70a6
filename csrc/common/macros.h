// Shared helpers for every stovtal kernel: the HOST_DEVICE marker and
// small device-agnostic math utilities.
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define STOVTAL_HOST_DEVICE __host__ __device__
#define STOVTAL_INLINE __forceinline__
#else
#define STOVTAL_HOST_DEVICE
#define STOVTAL_INLINE inline
#endif

namespace stovtal {

// NaN-propagating min/max (fmin/fmax would silently drop a NaN operand).
template <typename T>
STOVTAL_HOST_DEVICE STOVTAL_INLINE T min_nan(T a, T b) {
  return (a != a || a < b) ? a : b;
}

template <typename T>
STOVTAL_HOST_DEVICE STOVTAL_INLINE T max_nan(T a, T b) {
  return (a != a || a > b) ? a : b;
}

// max(x, 0) that keeps NaN as NaN.
template <typename T>
STOVTAL_HOST_DEVICE STOVTAL_INLINE T relu_nan(T x) {
  return x < T(0) ? T(0) : x;
}

}  // namespace stovtal
