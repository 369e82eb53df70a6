// 1-D RoI-Align math shared by the CPU and CUDA kernels: torchvision's
// roi_align restricted to the time axis.
//
// A roi (start, end) in input units is scaled by `spatial_scale` and, when
// `aligned`, shifted by -0.5 (half-sample offset). Its width is end - start
// (widened to >= 1 when not aligned; it may be negative for a reversed roi
// when aligned). Bin l of `output_size` averages `grid` samples
//   x(l, s) = (start + l * bin) + (s + 0.5) * bin / grid,  s = 0 .. grid-1,
// with grid = sampling_ratio if > 0, else ceil(width / output_size) (which is
// <= 0, i.e. no samples, for an empty or reversed aligned roi). The average
// divides by max(grid, 1). A sample outside [-1, T] contributes 0; otherwise
// it is clamped into [0, T-1] and linearly interpolated.
//
// x(l, s) is monotone in s in floating point too (each operation is monotone
// and rounding is monotone), so the samples of a bin that fall inside [-1, T]
// form one contiguous range of s, found by binary search: a huge roi costs
// O(T) samples, not O(width).
#pragma once

#include <cmath>
#include <cstdint>

#include "../common/macros.h"

namespace stovtal {

// Geometry of one roi, in feature-index units.
template <typename T>
struct Roi1d {
  T start;         // first bin's start (scaled, offset)
  T bin_size;      // width / output_size; negative for a reversed aligned roi
  T grid;          // samples per bin as a real number (> 0 when grid_n > 0)
  T count;         // divisor of the bin average: max(grid, 1)
  int64_t grid_n;  // samples per bin (0 if none), clamped to kRoiMaxGrid
};

// Largest fixed sampling_ratio accepted (roi_align_1d_checks.h; the Python
// fake kernel has the same bound).
constexpr int64_t kRoiMaxSamplingRatio = int64_t(1) << 16;

// Sample counts beyond this are never reached in practice (a bin would have
// to span 2^62 samples); clamping keeps the integer conversion defined.
constexpr int64_t kRoiMaxGrid = int64_t(1) << 62;

template <typename T>
STOVTAL_HOST_DEVICE STOVTAL_INLINE T roi1d_ceil(T x) {
#if defined(__CUDA_ARCH__)
  return ceil(x);
#else
  return std::ceil(x);
#endif
}

template <typename T>
STOVTAL_HOST_DEVICE STOVTAL_INLINE Roi1d<T> roi1d_geometry(T roi_start, T roi_end, T spatial_scale,
                                                          int64_t output_size,
                                                          int64_t sampling_ratio, bool aligned) {
  const T offset = aligned ? T(0.5) : T(0);
  Roi1d<T> r;
  r.start = roi_start * spatial_scale - offset;
  const T end = roi_end * spatial_scale - offset;
  T width = end - r.start;
  if (!aligned && !(width >= T(1))) width = T(1);  // also maps NaN (from inf - inf) to 1
  r.bin_size = width / static_cast<T>(output_size);
  r.grid = sampling_ratio > 0 ? static_cast<T>(sampling_ratio) : roi1d_ceil(r.bin_size);
  if (r.grid >= T(1)) {
    r.grid_n = r.grid < static_cast<T>(kRoiMaxGrid) ? static_cast<int64_t>(r.grid) : kRoiMaxGrid;
    r.count = r.grid;
  } else {  // no samples (also NaN): the bin averages nothing and is 0
    r.grid_n = 0;
    r.count = T(1);
  }
  return r;
}

// Position of sample s of bin l (torchvision's evaluation order).
template <typename T>
STOVTAL_HOST_DEVICE STOVTAL_INLINE T roi1d_sample(const Roi1d<T>& r, int64_t l, int64_t s) {
  return (r.start + static_cast<T>(l) * r.bin_size) +
         (static_cast<T>(s) + T(0.5)) * r.bin_size / r.grid;
}

template <typename T>
STOVTAL_HOST_DEVICE STOVTAL_INLINE bool roi1d_sample_valid(T x, int64_t length) {
  return x >= T(-1) && x <= static_cast<T>(length);  // false for NaN
}

// The samples s in [*lo, *hi) of bin l that lie in [-1, length].
template <typename T>
STOVTAL_HOST_DEVICE STOVTAL_INLINE void roi1d_valid_samples(const Roi1d<T>& r, int64_t l,
                                                            int64_t length, int64_t* lo,
                                                            int64_t* hi) {
  const bool increasing = !(r.bin_size < T(0));
  const T lim_lo = T(-1);
  const T lim_hi = static_cast<T>(length);
  // First s whose sample is not before the valid range (in sample order).
  int64_t a = 0, b = r.grid_n;
  while (a < b) {
    const int64_t mid = a + (b - a) / 2;
    const T x = roi1d_sample(r, l, mid);
    const bool reached = increasing ? (x >= lim_lo) : (x <= lim_hi);
    if (reached) b = mid; else a = mid + 1;
  }
  *lo = a;
  // First s whose sample is past the valid range.
  b = r.grid_n;
  while (a < b) {
    const int64_t mid = a + (b - a) / 2;
    const T x = roi1d_sample(r, l, mid);
    const bool past = increasing ? (x > lim_hi) : (x < lim_lo);
    if (past) b = mid; else a = mid + 1;
  }
  *hi = a;
}

// Linear interpolation taps of a valid sample x (roi1d_sample_valid(x)):
// value = w_low * f[low] + w_high * f[high].
template <typename T>
STOVTAL_HOST_DEVICE STOVTAL_INLINE void roi1d_taps(T x, int64_t length, int64_t* low,
                                                   int64_t* high, T* w_low, T* w_high) {
  if (x <= T(0)) x = T(0);
  int64_t lo = static_cast<int64_t>(x);
  int64_t hi;
  if (lo >= length - 1) {
    lo = hi = length - 1;
    x = static_cast<T>(lo);
  } else {
    hi = lo + 1;
  }
  const T frac = x - static_cast<T>(lo);
  *low = lo;
  *high = hi;
  *w_low = T(1) - frac;
  *w_high = frac;
}

}  // namespace stovtal
