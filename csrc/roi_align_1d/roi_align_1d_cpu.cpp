// CPU kernels of roi_align_1d (forward and backward).
//
// The interpolation weights depend only on the rois, not on the channel, so
// they are computed once per call (roi1d_* math of roi_align_1d.h) into a tap
// table: each bin is a few runs ("segments") of consecutive time steps with
// one summed weight per step, already divided by the bin's sample count.
// Samples sharing a step are merged, so a bin costs about (bin width + 2)
// multiply-adds per channel instead of 2 per sample. Steps between samples
// that no sample touches (fixed sampling_ratio on long bins) are not in any
// run, so a NaN there is never read, as in the per-sample formulation.
//
// Both passes work in channels-last [T, C] slabs, one batch element at a
// time, so that a tap is a contiguous vector over channels (tiles of 256
// bytes of accumulators held in vector registers).
// Forward: every (roi, channel tile group) of the batch element is independent.
// Backward: every channel tile group of the slab is owned by one task, which
// walks all rois of that batch element: no races, no atomics.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "roi_align_1d.h"
#include "roi_align_1d_checks.h"

namespace stovtal {
namespace {

// Multiply-adds per parallel chunk (at::parallel_for grain is in items).
constexpr int64_t kWorkGrain = 1 << 15;

template <typename acc_t>
struct TapTable {
  std::vector<int64_t> batch;    // [K] batch index of each roi
  std::vector<int64_t> bin_seg;  // [K*L + 1] first segment of each bin
  std::vector<int64_t> seg_t0;   // [segments] first time step of each segment
  std::vector<int64_t> seg_off;  // [segments + 1] offset of each segment in w
  std::vector<acc_t> w;          // [taps] weight of each (segment, step)
};

// Walks the valid samples of bin l in increasing position, calling
// on_segment(t0, taps_before) when a run of consecutive steps starts at t0
// (taps_before = steps in the bin's earlier runs) and on_tap(offset in the
// run, weight) for both taps of every sample. Returns the bin's total steps.
template <typename acc_t, typename OnSegment, typename OnTap>
int64_t walk_bin(const Roi1d<acc_t>& r, int64_t l, int64_t length, OnSegment on_segment,
                 OnTap on_tap) {
  int64_t lo, hi;
  roi1d_valid_samples(r, l, length, &lo, &hi);
  const bool reversed = r.bin_size < acc_t(0);
  int64_t taps = 0;
  int64_t t0 = 0, last = -2;  // current run [t0, last]; none yet
  for (int64_t i = 0; i < hi - lo; ++i) {
    const int64_t s = reversed ? hi - 1 - i : lo + i;
    int64_t a, b;
    acc_t wa, wb;
    roi1d_taps(roi1d_sample(r, l, s), length, &a, &b, &wa, &wb);
    if (a > last + 1) {  // a gap (or the first sample): start a new run
      if (last >= 0) taps += last - t0 + 1;
      t0 = a;
      on_segment(t0, taps);
    }
    last = std::max(last, b);
    on_tap(a - t0, wa);
    on_tap(b - t0, wb);
  }
  if (last >= 0) taps += last - t0 + 1;
  return taps;
}

template <typename scalar_t, typename acc_t>
TapTable<acc_t> build_tap_table(const at::Tensor& rois, int64_t output_size, int64_t length,
                                double spatial_scale, int64_t sampling_ratio, bool aligned) {
  const int64_t num_rois = rois.size(0);
  const int64_t bins = num_rois * output_size;
  const scalar_t* pr = rois.const_data_ptr<scalar_t>();
  const acc_t scale = static_cast<acc_t>(spatial_scale);
  auto geometry = [&](int64_t k) {
    return roi1d_geometry<acc_t>(static_cast<acc_t>(pr[3 * k + 1]), static_cast<acc_t>(pr[3 * k + 2]),
                                 scale, output_size, sampling_ratio, aligned);
  };
  TapTable<acc_t> table;
  table.batch.resize(num_rois);
  std::vector<int64_t> bin_taps(bins + 1, 0);
  table.bin_seg.assign(bins + 1, 0);
  // Pass 1: count the runs and steps of every bin.
  at::parallel_for(0, num_rois, 16, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      table.batch[k] = static_cast<int64_t>(pr[3 * k]);
      const Roi1d<acc_t> r = geometry(k);
      for (int64_t l = 0; l < output_size; ++l) {
        int64_t segments = 0;
        bin_taps[k * output_size + l] = walk_bin(
            r, l, length, [&](int64_t, int64_t) { ++segments; }, [](int64_t, acc_t) {});
        table.bin_seg[k * output_size + l] = segments;
      }
    }
  });
  // Counts -> exclusive prefix sums.
  int64_t seg_sum = 0, tap_sum = 0;
  for (int64_t i = 0; i <= bins; ++i) {
    const int64_t s = table.bin_seg[i], t = bin_taps[i];
    table.bin_seg[i] = seg_sum;
    bin_taps[i] = tap_sum;
    seg_sum += s;
    tap_sum += t;
  }
  table.seg_t0.resize(seg_sum);
  table.seg_off.resize(seg_sum + 1);
  table.seg_off[seg_sum] = tap_sum;
  table.w.assign(tap_sum, acc_t(0));
  // Pass 2: fill the runs and their weights.
  at::parallel_for(0, num_rois, 16, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      const Roi1d<acc_t> r = geometry(k);
      for (int64_t l = 0; l < output_size; ++l) {
        const int64_t bin = k * output_size + l;
        int64_t seg = table.bin_seg[bin] - 1;
        acc_t* w = nullptr;
        walk_bin(
            r, l, length,
            [&](int64_t t0, int64_t taps_before) {
              ++seg;
              table.seg_t0[seg] = t0;
              table.seg_off[seg] = bin_taps[bin] + taps_before;
              w = table.w.data() + table.seg_off[seg];
            },
            [&](int64_t offset, acc_t weight) { w[offset] += weight; });
        acc_t* wb = table.w.data() + bin_taps[bin];
        for (int64_t j = 0; j < bin_taps[bin + 1] - bin_taps[bin]; ++j) wb[j] /= r.count;
      }
    }
  });
  return table;
}

// The tile loops are compiled twice: for the build's baseline ISA and, on
// x86-64 with GCC/Clang, for AVX2+FMA, chosen at run time (the baseline
// x86-64 ISA has only 128-bit vectors).
#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define STOVTAL_ROI_AVX2 1
#define STOVTAL_ALWAYS_INLINE inline __attribute__((always_inline))
#define STOVTAL_TARGET_AVX2 __attribute__((target("avx2,fma")))
#else
#define STOVTAL_ROI_AVX2 0
#define STOVTAL_ALWAYS_INLINE inline
#endif

bool cpu_has_avx2() {
#if STOVTAL_ROI_AVX2
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
#else
  return false;
#endif
}

// Channels per tile: 256 bytes of accumulators, which the compiler keeps in
// vector registers while it streams the taps of a bin.
template <typename acc_t>
constexpr int64_t tile_channels() {
  return 256 / static_cast<int64_t>(sizeof(acc_t));
}

#if defined(__GNUC__) || defined(__clang__)
#define STOVTAL_ROI_VECTOR_EXT 1
// 32-byte vectors of acc_t (GCC/Clang vector extension): one ymm register
// with AVX2, two xmm registers on the baseline ISA.
template <typename acc_t>
struct Lanes {
  static constexpr int64_t kCount = 32 / static_cast<int64_t>(sizeof(acc_t));
  typedef acc_t type __attribute__((vector_size(32)));
};

// Written through a reference: returning a 32-byte vector by value from a
// baseline-ISA function is an ABI hazard (-Wpsabi).
template <typename acc_t, typename scalar_t>
STOVTAL_ALWAYS_INLINE void load_lanes(typename Lanes<acc_t>::type& v, const scalar_t* p) {
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    __builtin_memcpy(&v, p, sizeof(v));
  } else {
    for (int64_t i = 0; i < Lanes<acc_t>::kCount; ++i) v[i] = static_cast<acc_t>(p[i]);
  }
}
#else
#define STOVTAL_ROI_VECTOR_EXT 0
#endif

// Bin l of roi k for channels [c0, c0 + cn) (cn == kTile when kFull).
// `fcl` is the roi's batch row of the channels-last features [T, C].
template <typename scalar_t, typename acc_t, bool kFull>
STOVTAL_ALWAYS_INLINE void forward_bin(const TapTable<acc_t>& table, const scalar_t* fcl,
                                       scalar_t* out, int64_t k, int64_t l, int64_t c0,
                                       int64_t cn, int64_t channels, int64_t output_size) {
  constexpr int64_t kTile = tile_channels<acc_t>();
  const int64_t* bin_seg = table.bin_seg.data() + k * output_size;
  {
    acc_t acc[kTile] = {};
#if STOVTAL_ROI_VECTOR_EXT
    if constexpr (kFull) {
      // Accumulators in registers: kTile / lanes vectors.
      using vec_t = typename Lanes<acc_t>::type;
      constexpr int64_t kLanes = Lanes<acc_t>::kCount;
      constexpr int64_t kVecs = kTile / kLanes;
      vec_t v[kVecs] = {};
      for (int64_t s = bin_seg[l]; s < bin_seg[l + 1]; ++s) {
        const scalar_t* x = fcl + table.seg_t0[s] * channels + c0;
        const acc_t* w = table.w.data() + table.seg_off[s];
        const int64_t n = table.seg_off[s + 1] - table.seg_off[s];
        for (int64_t j = 0; j < n; ++j, x += channels) {
          const acc_t wj = w[j];
#pragma GCC unroll 16
          for (int64_t q = 0; q < kVecs; ++q) {
            vec_t xq;
            load_lanes<acc_t>(xq, x + q * kLanes);
            v[q] += wj * xq;
          }
        }
      }
      __builtin_memcpy(acc, v, sizeof(v));
    } else
#endif
    {
      const int64_t width = kFull ? kTile : cn;
      for (int64_t s = bin_seg[l]; s < bin_seg[l + 1]; ++s) {
        const scalar_t* x = fcl + table.seg_t0[s] * channels + c0;
        const acc_t* w = table.w.data() + table.seg_off[s];
        const int64_t n = table.seg_off[s + 1] - table.seg_off[s];
        for (int64_t j = 0; j < n; ++j, x += channels) {
          const acc_t wj = w[j];
          for (int64_t c = 0; c < width; ++c) acc[c] += wj * static_cast<acc_t>(x[c]);
        }
      }
    }
    scalar_t* o = out + (k * channels + c0) * output_size + l;
    for (int64_t c = 0; c < (kFull ? kTile : cn); ++c) {
      o[c * output_size] = static_cast<scalar_t>(acc[c]);
    }
  }
}

// Adds the gradient of bin l of roi k for channels [c0, c0 + cn) into
// `gcl`, the roi's batch row of the channels-last gradient [T, C].
template <typename scalar_t, typename acc_t, bool kFull>
STOVTAL_ALWAYS_INLINE void backward_bin(const TapTable<acc_t>& table, const scalar_t* grad,
                                        acc_t* gcl, int64_t k, int64_t l, int64_t c0, int64_t cn,
                                        int64_t channels, int64_t output_size) {
  constexpr int64_t kTile = tile_channels<acc_t>();
  const int64_t width = kFull ? kTile : cn;
  const int64_t* bin_seg = table.bin_seg.data() + k * output_size;
  const scalar_t* g_roi = grad + (k * channels + c0) * output_size;
  do {
    acc_t g[kTile];
    for (int64_t c = 0; c < width; ++c) g[c] = static_cast<acc_t>(g_roi[c * output_size + l]);
#if STOVTAL_ROI_VECTOR_EXT
    if constexpr (kFull) {
      using vec_t = typename Lanes<acc_t>::type;
      constexpr int64_t kLanes = Lanes<acc_t>::kCount;
      constexpr int64_t kVecs = kTile / kLanes;
      vec_t gv[kVecs];
      __builtin_memcpy(gv, g, sizeof(gv));
      for (int64_t s = bin_seg[l]; s < bin_seg[l + 1]; ++s) {
        acc_t* y = gcl + table.seg_t0[s] * channels + c0;
        const acc_t* w = table.w.data() + table.seg_off[s];
        const int64_t n = table.seg_off[s + 1] - table.seg_off[s];
        for (int64_t j = 0; j < n; ++j, y += channels) {
          const acc_t wj = w[j];
#pragma GCC unroll 16
          for (int64_t q = 0; q < kVecs; ++q) {
            vec_t yq;
            load_lanes<acc_t>(yq, y + q * kLanes);
            yq += wj * gv[q];
            __builtin_memcpy(y + q * kLanes, &yq, sizeof(yq));
          }
        }
      }
      break;
    }
#endif
    for (int64_t s = bin_seg[l]; s < bin_seg[l + 1]; ++s) {
      acc_t* y = gcl + table.seg_t0[s] * channels + c0;
      const acc_t* w = table.w.data() + table.seg_off[s];
      const int64_t n = table.seg_off[s + 1] - table.seg_off[s];
      for (int64_t j = 0; j < n; ++j, y += channels) {
        const acc_t wj = w[j];
        for (int64_t c = 0; c < width; ++c) y[c] += wj * g[c];
      }
    }
  } while (false);
}

// Channel tiles per work item: one item walks a bin's rows once for all its
// tiles (a bin's rows stay in L1 after the first tile).
constexpr int64_t kTilesPerItem = 8;

// Bins l of roi k for the tiles [tile0, tile1) of channels.
template <typename scalar_t, typename acc_t>
STOVTAL_ALWAYS_INLINE void forward_roi(const TapTable<acc_t>& table, const scalar_t* row,
                                       scalar_t* out, int64_t k, int64_t tile0, int64_t tile1,
                                       int64_t channels, int64_t output_size) {
  constexpr int64_t kTile = tile_channels<acc_t>();
  for (int64_t l = 0; l < output_size; ++l) {
    for (int64_t tile = tile0; tile < tile1; ++tile) {
      const int64_t c0 = tile * kTile;
      const int64_t cn = std::min(kTile, channels - c0);
      if (cn == kTile) {
        forward_bin<scalar_t, acc_t, true>(table, row, out, k, l, c0, cn, channels, output_size);
      } else {
        forward_bin<scalar_t, acc_t, false>(table, row, out, k, l, c0, cn, channels, output_size);
      }
    }
  }
}

// Work items [begin, end) of the forward within one batch element: item i
// is roi rois[i / groups] with channel tile group i % groups; `slab` is that
// batch element's channels-last features [T, C].
template <typename scalar_t, typename acc_t>
STOVTAL_ALWAYS_INLINE void forward_items(const TapTable<acc_t>& table, const int64_t* rois,
                                         const scalar_t* slab, scalar_t* out, int64_t begin,
                                         int64_t end, int64_t channels, int64_t output_size) {
  constexpr int64_t kTile = tile_channels<acc_t>();
  const int64_t tiles = (channels + kTile - 1) / kTile;
  const int64_t groups = (tiles + kTilesPerItem - 1) / kTilesPerItem;
  for (int64_t i = begin; i < end; ++i) {
    const int64_t group = i % groups;
    forward_roi(table, slab, out, rois[i / groups], group * kTilesPerItem,
                std::min(tiles, (group + 1) * kTilesPerItem), channels, output_size);
  }
}

// Work items [begin, end) of the backward within one batch element: item i
// is the group of `group_tiles` channel tiles starting at tile
// i * group_tiles; it owns that slice of `slab`, the batch element's
// channels-last gradient [T, C], and adds every roi in [rois, rois_end).
template <typename scalar_t, typename acc_t>
STOVTAL_ALWAYS_INLINE void backward_items(const TapTable<acc_t>& table, const int64_t* rois,
                                          const int64_t* rois_end, const scalar_t* grad,
                                          acc_t* slab, int64_t begin, int64_t end,
                                          int64_t group_tiles, int64_t channels, int64_t length,
                                          int64_t output_size) {
  constexpr int64_t kTile = tile_channels<acc_t>();
  const int64_t tiles = (channels + kTile - 1) / kTile;
  for (int64_t i = begin; i < end; ++i) {
    const int64_t tile0 = i * group_tiles;
    const int64_t tile1 = std::min(tiles, tile0 + group_tiles);
    const int64_t c0 = tile0 * kTile;
    const int64_t cn = std::min(channels, tile1 * kTile) - c0;
    for (int64_t t = 0; t < length; ++t) std::fill_n(slab + t * channels + c0, cn, acc_t(0));
    for (const int64_t* r = rois; r != rois_end; ++r) {
      for (int64_t l = 0; l < output_size; ++l) {
        for (int64_t tile = tile0; tile < tile1; ++tile) {
          const int64_t tc0 = tile * kTile;
          const int64_t tcn = std::min(kTile, channels - tc0);
          if (tcn == kTile) {
            backward_bin<scalar_t, acc_t, true>(table, grad, slab, *r, l, tc0, tcn, channels,
                                                output_size);
          } else {
            backward_bin<scalar_t, acc_t, false>(table, grad, slab, *r, l, tc0, tcn, channels,
                                                 output_size);
          }
        }
      }
    }
  }
}

// The same loops compiled for the baseline ISA and for AVX2+FMA.
template <typename scalar_t, typename acc_t>
void forward_items_base(const TapTable<acc_t>& table, const int64_t* rois, const scalar_t* slab,
                        scalar_t* out, int64_t begin, int64_t end, int64_t channels,
                        int64_t output_size) {
  forward_items(table, rois, slab, out, begin, end, channels, output_size);
}

template <typename scalar_t, typename acc_t>
void backward_items_base(const TapTable<acc_t>& table, const int64_t* rois,
                         const int64_t* rois_end, const scalar_t* grad, acc_t* slab,
                         int64_t begin, int64_t end, int64_t group_tiles, int64_t channels,
                         int64_t length, int64_t output_size) {
  backward_items(table, rois, rois_end, grad, slab, begin, end, group_tiles, channels, length,
                 output_size);
}

#if STOVTAL_ROI_AVX2
template <typename scalar_t, typename acc_t>
STOVTAL_TARGET_AVX2 void forward_items_avx2(const TapTable<acc_t>& table, const int64_t* rois,
                                            const scalar_t* slab, scalar_t* out, int64_t begin,
                                            int64_t end, int64_t channels, int64_t output_size) {
  forward_items(table, rois, slab, out, begin, end, channels, output_size);
}

template <typename scalar_t, typename acc_t>
STOVTAL_TARGET_AVX2 void backward_items_avx2(const TapTable<acc_t>& table, const int64_t* rois,
                                             const int64_t* rois_end, const scalar_t* grad,
                                             acc_t* slab, int64_t begin, int64_t end,
                                             int64_t group_tiles, int64_t channels,
                                             int64_t length, int64_t output_size) {
  backward_items(table, rois, rois_end, grad, slab, begin, end, group_tiles, channels, length,
                 output_size);
}
#endif

// Rois grouped by batch index, each group sorted by start (nearby rois
// share cached rows). Returns the group offsets [B + 1].
template <typename scalar_t, typename acc_t>
std::vector<int64_t> group_rois_by_batch(const TapTable<acc_t>& table, const at::Tensor& rois,
                                         int64_t batch, std::vector<int64_t>* order) {
  const int64_t num_rois = rois.size(0);
  const scalar_t* pr = rois.const_data_ptr<scalar_t>();
  std::vector<int64_t> batch_begin(batch + 1, 0);
  for (int64_t k = 0; k < num_rois; ++k) ++batch_begin[table.batch[k] + 1];
  for (int64_t b = 0; b < batch; ++b) batch_begin[b + 1] += batch_begin[b];
  order->resize(num_rois);
  std::vector<int64_t> fill(batch_begin.begin(), batch_begin.end() - 1);
  for (int64_t k = 0; k < num_rois; ++k) (*order)[fill[table.batch[k]]++] = k;
  for (int64_t b = 0; b < batch; ++b) {
    std::stable_sort(order->begin() + batch_begin[b], order->begin() + batch_begin[b + 1],
                     [&](int64_t x, int64_t y) {
                       return static_cast<acc_t>(pr[3 * x + 1]) < static_cast<acc_t>(pr[3 * y + 1]);
                     });
  }
  return batch_begin;
}

at::Tensor roi_align_1d_cpu(const at::Tensor& features, const at::Tensor& rois_in,
                            int64_t output_size, double spatial_scale, int64_t sampling_ratio,
                            bool aligned) {
  constexpr const char* op = "roi_align_1d";
  check_roi_align_args(features, rois_in, output_size, spatial_scale, sampling_ratio, op);
  check_device(features, c10::DeviceType::CPU, op, "features");
  const at::Tensor rois = rois_in.contiguous();
  const int64_t batch = features.size(0), channels = features.size(1), length = features.size(2);
  const int64_t num_rois = rois.size(0);
  check_roi_values(rois, batch, op);
  at::Tensor out = at::empty({num_rois, channels, output_size}, features.options());
  if (num_rois == 0 || channels == 0) return out;
  // Channels last, so that one tap is a contiguous vector over channels:
  // used in place if the caller's features already are ([B, T, C] memory),
  // else transposed one batch element at a time (a [T, C] slab), which keeps
  // the extra memory at one video's features.
  const bool in_place = features.transpose(1, 2).is_contiguous();
  const at::Tensor features_t = features.transpose(1, 2);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, features.scalar_type(), "roi_align_1d_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    constexpr int64_t kTile = tile_channels<acc_t>();
    const TapTable<acc_t> table = build_tap_table<scalar_t, acc_t>(
        rois, output_size, length, spatial_scale, sampling_ratio, aligned);
    std::vector<int64_t> order;
    const std::vector<int64_t> batch_begin =
        group_rois_by_batch<scalar_t, acc_t>(table, rois, batch, &order);
    scalar_t* po = out.mutable_data_ptr<scalar_t>();
    const int64_t tiles = (channels + kTile - 1) / kTile;
    const int64_t groups = (tiles + kTilesPerItem - 1) / kTilesPerItem;
    const int64_t taps_per_roi = static_cast<int64_t>(table.w.size()) / num_rois + output_size;
    const int64_t grain = std::max<int64_t>(
        1, kWorkGrain / (taps_per_roi * std::min(channels, kTile * kTilesPerItem)));
    const bool avx2 = cpu_has_avx2();
    at::Tensor slab_buffer;
    for (int64_t b = 0; b < batch; ++b) {
      const int64_t count = batch_begin[b + 1] - batch_begin[b];
      if (count == 0) continue;
      at::Tensor slab;
      if (in_place) {
        slab = features_t[b];
      } else {
        if (!slab_buffer.defined()) slab_buffer = at::empty({length, channels}, features.options());
        slab = slab_buffer;
        slab.copy_(features_t[b]);
      }
      const scalar_t* ps = slab.const_data_ptr<scalar_t>();
      const int64_t* rois_b = order.data() + batch_begin[b];
      at::parallel_for(0, count * groups, grain, [&](int64_t begin, int64_t end) {
#if STOVTAL_ROI_AVX2
        if (avx2) {
          forward_items_avx2(table, rois_b, ps, po, begin, end, channels, output_size);
          return;
        }
#endif
        forward_items_base(table, rois_b, ps, po, begin, end, channels, output_size);
      });
    }
  });
  return out;
}

at::Tensor roi_align_1d_backward_cpu(const at::Tensor& grad_in, const at::Tensor& rois_in,
                                     int64_t batch, int64_t length, double spatial_scale,
                                     int64_t sampling_ratio, bool aligned) {
  constexpr const char* op = "roi_align_1d_backward";
  check_roi_align_grad(grad_in, rois_in, batch, length, spatial_scale, sampling_ratio, op);
  check_device(grad_in, c10::DeviceType::CPU, op, "grad");
  const at::Tensor grad = grad_in.contiguous();
  const at::Tensor rois = rois_in.contiguous();
  const int64_t channels = grad.size(1), output_size = grad.size(2);
  check_roi_values(rois, batch, op);
  at::Tensor out = at::empty({batch, channels, length}, grad.options());
  if (out.numel() == 0) return out;
  // Channels-last accumulator [T, C] of one batch element at a time, in the
  // accumulation dtype, copied (transposed) into the output.
  const at::ScalarType acc_type = at::toOpMathType(grad.scalar_type());
  at::Tensor slab = at::empty({length, channels}, grad.options().dtype(acc_type));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "roi_align_1d_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    constexpr int64_t kTile = tile_channels<acc_t>();
    const TapTable<acc_t> table = build_tap_table<scalar_t, acc_t>(
        rois, output_size, length, spatial_scale, sampling_ratio, aligned);
    std::vector<int64_t> order;
    const std::vector<int64_t> batch_begin =
        group_rois_by_batch<scalar_t, acc_t>(table, rois, batch, &order);
    const scalar_t* pg = grad.const_data_ptr<scalar_t>();
    acc_t* ps = slab.mutable_data_ptr<acc_t>();
    // Items are groups of channel tiles, each owning its columns of the slab
    // (no races): big groups walk a bin's rows once, but every thread should
    // get a few items.
    const int64_t tiles = (channels + kTile - 1) / kTile;
    const int64_t group_tiles = std::max<int64_t>(
        1, std::min(kTilesPerItem, tiles / (4 * static_cast<int64_t>(at::get_num_threads()))));
    const int64_t groups = (tiles + group_tiles - 1) / group_tiles;
    const bool avx2 = cpu_has_avx2();
    for (int64_t b = 0; b < batch; ++b) {
      const int64_t* rois_b = order.data() + batch_begin[b];
      const int64_t* rois_e = order.data() + batch_begin[b + 1];
      if (rois_b == rois_e) {
        out[b].zero_();
        continue;
      }
      at::parallel_for(0, groups, 1, [&](int64_t begin, int64_t end) {
#if STOVTAL_ROI_AVX2
        if (avx2) {
          backward_items_avx2(table, rois_b, rois_e, pg, ps, begin, end, group_tiles, channels,
                              length, output_size);
          return;
        }
#endif
        backward_items_base(table, rois_b, rois_e, pg, ps, begin, end, group_tiles, channels,
                            length, output_size);
      });
      out[b].copy_(slab.t());
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(stovtal, CPU, m) {
  m.impl("roi_align_1d", &roi_align_1d_cpu);
  m.impl("roi_align_1d_backward", &roi_align_1d_backward_cpu);
}

}  // namespace stovtal
