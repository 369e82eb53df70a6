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
// Forward: every (channel, roi) pair is independent.
// Backward: every (batch, channel) row of the feature gradient is owned by
// one task, which walks the rois of that batch: no races, no atomics.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
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

at::Tensor roi_align_1d_cpu(const at::Tensor& features_in, const at::Tensor& rois_in,
                            int64_t output_size, double spatial_scale, int64_t sampling_ratio,
                            bool aligned) {
  constexpr const char* op = "roi_align_1d";
  check_roi_align_args(features_in, rois_in, output_size, spatial_scale, op);
  check_device(features_in, c10::DeviceType::CPU, op, "features");
  const at::Tensor features = features_in.contiguous();
  const at::Tensor rois = rois_in.contiguous();
  const int64_t batch = features.size(0), channels = features.size(1), length = features.size(2);
  const int64_t num_rois = rois.size(0);
  check_roi_values(rois, batch, op);
  at::Tensor out = at::empty({num_rois, channels, output_size}, features.options());
  if (num_rois == 0 || channels == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, features.scalar_type(), "roi_align_1d_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const TapTable<acc_t> table = build_tap_table<scalar_t, acc_t>(
        rois, output_size, length, spatial_scale, sampling_ratio, aligned);
    const scalar_t* pf = features.const_data_ptr<scalar_t>();
    scalar_t* po = out.mutable_data_ptr<scalar_t>();
    const int64_t taps_per_roi = static_cast<int64_t>(table.w.size()) / num_rois + output_size;
    const int64_t grain = std::max<int64_t>(1, kWorkGrain / taps_per_roi);
    // Channel-major order: one channel's rows (B x T) stay in cache while
    // every roi reads them.
    at::parallel_for(0, channels * num_rois, grain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t c = i / num_rois;
        const int64_t k = i - c * num_rois;
        const scalar_t* row = pf + (table.batch[k] * channels + c) * length;
        scalar_t* o = po + (k * channels + c) * output_size;
        const int64_t* bin_seg = table.bin_seg.data() + k * output_size;
        for (int64_t l = 0; l < output_size; ++l) {
          acc_t acc = 0;
          for (int64_t s = bin_seg[l]; s < bin_seg[l + 1]; ++s) {
            const scalar_t* x = row + table.seg_t0[s];
            const acc_t* w = table.w.data() + table.seg_off[s];
            const int64_t n = table.seg_off[s + 1] - table.seg_off[s];
            for (int64_t j = 0; j < n; ++j) acc += w[j] * static_cast<acc_t>(x[j]);
          }
          o[l] = static_cast<scalar_t>(acc);
        }
      }
    });
  });
  return out;
}

at::Tensor roi_align_1d_backward_cpu(const at::Tensor& grad_in, const at::Tensor& rois_in,
                                     int64_t batch, int64_t length, double spatial_scale,
                                     int64_t sampling_ratio, bool aligned) {
  constexpr const char* op = "roi_align_1d_backward";
  check_roi_align_grad(grad_in, rois_in, batch, length, spatial_scale, op);
  check_device(grad_in, c10::DeviceType::CPU, op, "grad");
  const at::Tensor grad = grad_in.contiguous();
  const at::Tensor rois = rois_in.contiguous();
  const int64_t num_rois = grad.size(0), channels = grad.size(1), output_size = grad.size(2);
  check_roi_values(rois, batch, op);
  at::Tensor out = at::empty({batch, channels, length}, grad.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "roi_align_1d_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const TapTable<acc_t> table = build_tap_table<scalar_t, acc_t>(
        rois, output_size, length, spatial_scale, sampling_ratio, aligned);
    // Rois grouped by batch index (stable counting sort).
    std::vector<int64_t> batch_begin(batch + 1, 0), order(num_rois);
    for (int64_t k = 0; k < num_rois; ++k) ++batch_begin[table.batch[k] + 1];
    for (int64_t b = 0; b < batch; ++b) batch_begin[b + 1] += batch_begin[b];
    {
      std::vector<int64_t> fill(batch_begin.begin(), batch_begin.end() - 1);
      for (int64_t k = 0; k < num_rois; ++k) order[fill[table.batch[k]]++] = k;
    }
    const scalar_t* pg = grad.const_data_ptr<scalar_t>();
    scalar_t* po = out.mutable_data_ptr<scalar_t>();
    const int64_t taps_per_row =
        (static_cast<int64_t>(table.w.size()) + num_rois * output_size) / std::max<int64_t>(batch, 1) + length;
    const int64_t grain = std::max<int64_t>(1, kWorkGrain / taps_per_row);
    at::parallel_for(0, batch * channels, grain, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> buffer;
      if (!std::is_same_v<acc_t, scalar_t>) buffer.resize(length);
      for (int64_t row = begin; row < end; ++row) {
        const int64_t b = row / channels;
        const int64_t c = row - b * channels;
        scalar_t* out_row = po + row * length;
        // float32/float64 accumulate in place; half types in a float row.
        acc_t* acc_row = std::is_same_v<acc_t, scalar_t> ? reinterpret_cast<acc_t*>(out_row)
                                                          : buffer.data();
        std::fill(acc_row, acc_row + length, acc_t(0));
        for (int64_t i = batch_begin[b]; i < batch_begin[b + 1]; ++i) {
          const int64_t k = order[i];
          const scalar_t* g = pg + (k * channels + c) * output_size;
          const int64_t* bin_seg = table.bin_seg.data() + k * output_size;
          for (int64_t l = 0; l < output_size; ++l) {
            const acc_t gl = static_cast<acc_t>(g[l]);
            for (int64_t s = bin_seg[l]; s < bin_seg[l + 1]; ++s) {
              acc_t* x = acc_row + table.seg_t0[s];
              const acc_t* w = table.w.data() + table.seg_off[s];
              const int64_t n = table.seg_off[s + 1] - table.seg_off[s];
              for (int64_t j = 0; j < n; ++j) x[j] += gl * w[j];
            }
          }
        }
        if (!std::is_same_v<acc_t, scalar_t>) {
          for (int64_t t = 0; t < length; ++t) out_row[t] = static_cast<scalar_t>(acc_row[t]);
        }
      }
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(stovtal, CPU, m) {
  m.impl("roi_align_1d", &roi_align_1d_cpu);
  m.impl("roi_align_1d_backward", &roi_align_1d_backward_cpu);
}

}  // namespace stovtal
