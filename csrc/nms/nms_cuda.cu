// CUDA kernels of temporal_nms and soft_nms, on the HOST_DEVICE math of
// nms.h / segment_iou.h (float16/bfloat16 compute in float32; the build
// compiles without fused multiply-adds, so the math rounds as on the CPU).
//
// temporal_nms: the bitmask scheme of nms_banded.h. Candidates are sorted by
// score; 64-thread blocks compute, for every (not yet removed) candidate i of
// a band of rows and every block of 64 later candidates, a 64-bit mask of the
// ones i would suppress (IoU > threshold, same label). The greedy sweep over
// the masks is sequential and cheap (one OR of a mask row per kept candidate);
// it runs on the host after one device-to-host copy per band. Bands hold
// about 1 GiB of mask words, so memory stays bounded for any N.
//
// soft_nms: candidates are grouped by label (one group without labels); each
// group is an independent soft-NMS run by one thread block: every iteration
// decays the group's live candidates in parallel, drops those below
// min_score, compacts the survivors into the other half of a double buffer
// and reduces the next maximum (warp shuffles + shared memory). The groups'
// selection sequences are merged on the host by selection score, exactly as
// on the CPU. Score voting then runs one warp per selected segment over its
// group.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <queue>
#include <tuple>
#include <vector>

#include "../common/cuda_utils.cuh"
#include "nms.h"
#include "nms_banded.h"
#include "nms_common.h"

namespace stovtal {
namespace {

constexpr int kSoftNmsThreads = 512;
constexpr int kWarp = 32;

// ---------------------------------------------------------------- hard NMS

// mask[r * width + blockIdx.x] bit t: sorted candidate rows[r] suppresses
// sorted candidate (col_block0 + blockIdx.x) * 64 + t (only later candidates;
// words left of row's own block are 0). blockIdx.y * 64 + threadIdx.x = r.
template <typename acc_t>
__global__ void nms_band_mask_kernel(int64_t n, const acc_t* __restrict__ start,
                                     const acc_t* __restrict__ end,
                                     const int64_t* __restrict__ labels,
                                     const int64_t* __restrict__ rows, int64_t num_rows,
                                     int64_t col_block0, int64_t width, acc_t iou_threshold,
                                     unsigned long long* __restrict__ mask) {
  const int64_t col_block = col_block0 + blockIdx.x;
  const int64_t col0 = col_block * kNmsMaskBits;
  const int64_t col_size = min(n - col0, static_cast<int64_t>(kNmsMaskBits));
  __shared__ acc_t col_start[kNmsMaskBits];
  __shared__ acc_t col_end[kNmsMaskBits];
  __shared__ acc_t col_len[kNmsMaskBits];
  __shared__ int64_t col_label[kNmsMaskBits];
  const int t = threadIdx.x;
  if (t < col_size) {
    const int64_t j = col0 + t;
    col_start[t] = start[j];
    col_end[t] = end[j];
    col_len[t] = segment_length(start[j], end[j]);
    col_label[t] = labels != nullptr ? labels[j] : 0;
  }
  __syncthreads();
  const int64_t r = static_cast<int64_t>(blockIdx.y) * kNmsMaskBits + t;
  if (r >= num_rows) return;
  const int64_t i = rows[r];
  unsigned long long bits = 0;
  if (col_block >= i / kNmsMaskBits) {
    const acc_t s = start[i];
    const acc_t e = end[i];
    const acc_t l = segment_length(s, e);
    const int64_t label = labels != nullptr ? labels[i] : 0;
    for (int64_t c = 0; c < col_size; ++c) {
      if (col0 + c <= i || col_label[c] != label) continue;
      if (nms_pair_suppresses(s, e, l, col_start[c], col_end[c], col_len[c], iou_threshold)) {
        bits |= 1ULL << c;
      }
    }
  }
  mask[r * width + blockIdx.x] = bits;
}

at::Tensor band_words_cuda(const NmsSorted& c, const std::vector<int64_t>& rows,
                           const NmsBand& band, double iou_threshold) {
  const int64_t n = c.order.size(0);
  const int64_t num_rows = static_cast<int64_t>(rows.size());
  at::Tensor rows_cpu = at::empty({num_rows}, at::dtype(at::kLong));
  std::copy(rows.begin(), rows.end(), rows_cpu.mutable_data_ptr<int64_t>());
  const at::Tensor rows_dev = rows_cpu.to(c.start.device());
  at::Tensor mask = at::empty({num_rows, band.width}, c.start.options().dtype(at::kLong));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const dim3 grid(static_cast<unsigned int>(band.width),
                  static_cast<unsigned int>((num_rows + kNmsMaskBits - 1) / kNmsMaskBits));
  AT_DISPATCH_FLOATING_TYPES(c.start.scalar_type(), "temporal_nms_cuda", [&] {
    nms_band_mask_kernel<scalar_t><<<grid, kNmsMaskBits, 0, stream>>>(
        n, c.start.const_data_ptr<scalar_t>(), c.end.const_data_ptr<scalar_t>(),
        c.labels.defined() ? c.labels.const_data_ptr<int64_t>() : nullptr,
        rows_dev.const_data_ptr<int64_t>(), num_rows, band.col_block0, band.width,
        static_cast<scalar_t>(iou_threshold),
        reinterpret_cast<unsigned long long*>(mask.mutable_data_ptr<int64_t>()));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return mask.cpu();
}

at::Tensor temporal_nms_banded_cuda(const at::Tensor& segments, const at::Tensor& scores,
                                    double iou_threshold, const std::optional<at::Tensor>& labels,
                                    int64_t max_keep, int64_t band_bytes) {
  const char* op = "_temporal_nms_banded";
  check_device(segments, c10::DeviceType::CUDA, op, "segments");
  const c10::cuda::CUDAGuard guard(segments.device());
  return temporal_nms_banded(
      segments, scores, iou_threshold, labels, max_keep, band_bytes, op,
      [&](const NmsSorted& c, const std::vector<int64_t>& rows, const NmsBand& band) {
        return band_words_cuda(c, rows, band, iou_threshold);
      });
}

at::Tensor temporal_nms_cuda(const at::Tensor& segments, const at::Tensor& scores,
                             double iou_threshold, const std::optional<at::Tensor>& labels,
                             int64_t max_keep) {
  const char* op = "temporal_nms";
  check_device(segments, c10::DeviceType::CUDA, op, "segments");
  const c10::cuda::CUDAGuard guard(segments.device());
  return temporal_nms_banded(
      segments, scores, iou_threshold, labels, max_keep, kNmsBandBytes, op,
      [&](const NmsSorted& c, const std::vector<int64_t>& rows, const NmsBand& band) {
        return band_words_cuda(c, rows, band, iou_threshold);
      });
}

// ---------------------------------------------------------------- soft-NMS

template <typename T>
__device__ __forceinline__ bool better(T score, int64_t index, T best_score, int64_t best_index) {
  return index >= 0 && (best_index < 0 || score_before(score, index, best_score, best_index));
}

// Block-wide max (score, lowest index); index -1 = none. Every thread gets the result.
template <typename T>
__device__ void block_argmax(T& score, int64_t& index, T* sh_score, int64_t* sh_index) {
  const int lane = threadIdx.x % kWarp;
  const int warp = threadIdx.x / kWarp;
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    const T other_score = __shfl_down_sync(0xffffffffu, score, offset);
    const int64_t other_index = __shfl_down_sync(0xffffffffu, index, offset);
    if (better(other_score, other_index, score, index)) {
      score = other_score;
      index = other_index;
    }
  }
  if (lane == 0) {
    sh_score[warp] = score;
    sh_index[warp] = index;
  }
  __syncthreads();
  if (warp == 0) {
    const int num_warps = blockDim.x / kWarp;
    score = lane < num_warps ? sh_score[lane] : T(0);
    index = lane < num_warps ? sh_index[lane] : -1;
    for (int offset = kWarp / 2; offset > 0; offset /= 2) {
      const T other_score = __shfl_down_sync(0xffffffffu, score, offset);
      const int64_t other_index = __shfl_down_sync(0xffffffffu, index, offset);
      if (better(other_score, other_index, score, index)) {
        score = other_score;
        index = other_index;
      }
    }
    if (lane == 0) {
      sh_score[0] = score;
      sh_index[0] = index;
    }
  }
  __syncthreads();
  score = sh_score[0];
  index = sh_index[0];
  __syncthreads();  // sh_* are reused by the next call
}

// One block of kSoftNmsThreads threads (a multiple of 32) per label group g:
// positions [group_begin[g], group_begin[g + 1]) of the label-sorted arrays
// (input order within a group, so a lower position is a lower input index).
// The live positions are kept compacted in live_a / live_b (same slice); the
// order in which survivors are compacted varies, which changes nothing: each
// candidate's decay depends only on itself and the selected segment, and the
// maximum is taken by (score, position). Selections of group g are written
// at [group_begin[g], group_begin[g] + sel_count[g]) of sel_pos / sel_score.
template <typename acc_t>
__global__ void soft_nms_group_kernel(const acc_t* __restrict__ start,
                                      const acc_t* __restrict__ end,
                                      const acc_t* __restrict__ score,
                                      const int64_t* __restrict__ group_begin,
                                      acc_t iou_threshold, acc_t sigma, acc_t min_score,
                                      int64_t method, int64_t max_keep,
                                      acc_t* __restrict__ current, int64_t* __restrict__ live_a,
                                      int64_t* __restrict__ live_b, int64_t* __restrict__ sel_pos,
                                      acc_t* __restrict__ sel_score,
                                      int64_t* __restrict__ sel_count) {
  __shared__ acc_t sh_score[kWarp];
  __shared__ int64_t sh_index[kWarp];
  __shared__ unsigned long long sh_live;
  const int64_t g = blockIdx.x;
  const int64_t p0 = group_begin[g];
  int64_t m = group_begin[g + 1] - p0;
  int64_t* live_in = live_a + p0;
  int64_t* live_out = live_b + p0;
  acc_t best_score = 0;
  int64_t best = -1;
  for (int64_t r = threadIdx.x; r < m; r += blockDim.x) {
    const int64_t p = p0 + r;
    current[p] = score[p];
    live_in[r] = p;
    if (better(current[p], p, best_score, best)) {
      best_score = current[p];
      best = p;
    }
  }
  block_argmax(best_score, best, sh_score, sh_index);
  int64_t count = 0;
  while (best >= 0 && (max_keep <= 0 || count < max_keep)) {
    const int64_t sel = best;
    if (threadIdx.x == 0) {
      sel_pos[p0 + count] = sel;
      sel_score[p0 + count] = best_score;
      sh_live = 0;
    }
    ++count;
    __syncthreads();
    const acc_t ss = start[sel];
    const acc_t se = end[sel];
    const acc_t sl = segment_length(ss, se);
    best_score = 0;
    best = -1;
    for (int64_t r = threadIdx.x; r < m; r += blockDim.x) {
      const int64_t p = live_in[r];
      if (p == sel) continue;
      const acc_t iou = segment_iou_with_lengths(ss, se, sl, start[p], end[p],
                                                 segment_length(start[p], end[p]));
      const acc_t s = current[p] * soft_nms_weight(iou, iou_threshold, sigma, method);
      if (s < min_score) continue;
      current[p] = s;
      live_out[atomicAdd(&sh_live, 1ULL)] = p;
      if (better(s, p, best_score, best)) {
        best_score = s;
        best = p;
      }
    }
    __syncthreads();
    m = static_cast<int64_t>(sh_live);
    int64_t* swap = live_in;
    live_in = live_out;
    live_out = swap;
    block_argmax(best_score, best, sh_score, sh_index);  // its syncs also guard sh_live
  }
  if (threadIdx.x == 0) sel_count[g] = count;
}

// One warp per selected segment q: the weighted average of the original
// segments of its group [vote_begin[q], vote_end[q]) with voting_weight > 0
// (unchanged if the weights sum to 0). Each lane sums a strided part, then
// the lanes are added in a fixed tree order, so the result is deterministic.
template <typename scalar_t, typename acc_t>
__global__ void voting_kernel(int64_t k, const acc_t* __restrict__ start,
                              const acc_t* __restrict__ end, const acc_t* __restrict__ score,
                              const int64_t* __restrict__ sel, const int64_t* __restrict__ vote_begin,
                              const int64_t* __restrict__ vote_end, acc_t voting_threshold,
                              scalar_t* __restrict__ out) {
  const int lane = threadIdx.x % kWarp;
  const int64_t warps_per_block = blockDim.x / kWarp;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * warps_per_block + threadIdx.x / kWarp;
  for (int64_t q = first; q < k; q += static_cast<int64_t>(gridDim.x) * warps_per_block) {
    const int64_t i = sel[q];
    const acc_t s = start[i];
    const acc_t e = end[i];
    const acc_t l = segment_length(s, e);
    acc_t sum_w = 0, sum_s = 0, sum_e = 0;
    for (int64_t j = vote_begin[q] + lane; j < vote_end[q]; j += kWarp) {
      const acc_t js = start[j];
      const acc_t je = end[j];
      const acc_t iou = segment_iou_with_lengths(s, e, l, js, je, segment_length(js, je));
      const acc_t w = voting_weight(iou, score[j], voting_threshold);
      sum_w += w;
      sum_s += w * js;
      sum_e += w * je;
    }
    for (int offset = kWarp / 2; offset > 0; offset /= 2) {
      sum_w += __shfl_down_sync(0xffffffffu, sum_w, offset);
      sum_s += __shfl_down_sync(0xffffffffu, sum_s, offset);
      sum_e += __shfl_down_sync(0xffffffffu, sum_e, offset);
    }
    if (lane == 0) {
      out[2 * q] = static_cast<scalar_t>(sum_w > acc_t(0) ? sum_s / sum_w : s);
      out[2 * q + 1] = static_cast<scalar_t>(sum_w > acc_t(0) ? sum_e / sum_w : e);
    }
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> soft_nms_cuda(
    const at::Tensor& segments_in, const at::Tensor& scores_in, double iou_threshold,
    double sigma, double min_score, int64_t method, const std::optional<at::Tensor>& labels_in,
    int64_t max_keep, std::optional<double> voting_threshold) {
  const char* op = "soft_nms";
  check_nms_inputs(segments_in, scores_in, labels_in, op);
  check_device(segments_in, c10::DeviceType::CUDA, op, "segments");
  check_soft_nms_params(iou_threshold, sigma, min_score, method, voting_threshold);
  const c10::cuda::CUDAGuard guard(segments_in.device());
  const int64_t n = segments_in.size(0);
  if (n == 0) {
    return {at::empty({0, 2}, segments_in.options()), at::empty({0}, scores_in.options()),
            at::empty({0}, segments_in.options().dtype(at::kLong))};
  }
  check_nms_values(segments_in, scores_in, /*finite_scores=*/true, op);
  const auto acc_type = at::toOpMathType(segments_in.scalar_type());
  const auto long_opts = segments_in.options().dtype(at::kLong);

  // Label groups: positions sorted by label, input order within a label.
  at::Tensor order;
  std::vector<int64_t> group_begin{0, n};
  if (labels_in.has_value()) {
    const auto [sorted_labels, perm] =
        labels_in->to(at::kLong).sort(/*stable=*/true, /*dim=*/0, /*descending=*/false);
    order = perm;
    const at::Tensor counts = std::get<2>(at::unique_consecutive(sorted_labels, false, true));
    const at::Tensor ends = counts.cumsum(0).cpu();
    group_begin.assign(1, 0);
    const int64_t* pe = ends.const_data_ptr<int64_t>();
    group_begin.insert(group_begin.end(), pe, pe + ends.size(0));
  } else {
    order = at::arange(n, long_opts);
  }
  const int64_t num_groups = static_cast<int64_t>(group_begin.size()) - 1;
  const at::Tensor sorted = segments_in.index_select(0, order).to(acc_type);
  const at::Tensor start = sorted.select(1, 0).contiguous();
  const at::Tensor end = sorted.select(1, 1).contiguous();
  const at::Tensor score = scores_in.index_select(0, order).to(acc_type).contiguous();
  at::Tensor group_begin_cpu = at::empty({num_groups + 1}, at::dtype(at::kLong));
  std::copy(group_begin.begin(), group_begin.end(), group_begin_cpu.mutable_data_ptr<int64_t>());
  const at::Tensor group_begin_dev = group_begin_cpu.to(segments_in.device());

  at::Tensor current = at::empty({n}, start.options());
  at::Tensor live_a = at::empty({n}, long_opts);
  at::Tensor live_b = at::empty({n}, long_opts);
  at::Tensor sel_pos = at::empty({n}, long_opts);
  at::Tensor sel_score = at::empty({n}, start.options());
  at::Tensor sel_count = at::empty({num_groups}, long_opts);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(acc_type, "soft_nms_cuda", [&] {
    soft_nms_group_kernel<scalar_t><<<static_cast<unsigned int>(num_groups), kSoftNmsThreads, 0,
                                      stream>>>(
        start.const_data_ptr<scalar_t>(), end.const_data_ptr<scalar_t>(),
        score.const_data_ptr<scalar_t>(), group_begin_dev.const_data_ptr<int64_t>(),
        static_cast<scalar_t>(iou_threshold), static_cast<scalar_t>(sigma),
        static_cast<scalar_t>(min_score), method, max_keep, current.mutable_data_ptr<scalar_t>(),
        live_a.mutable_data_ptr<int64_t>(), live_b.mutable_data_ptr<int64_t>(),
        sel_pos.mutable_data_ptr<int64_t>(), sel_score.mutable_data_ptr<scalar_t>(),
        sel_count.mutable_data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });

  // Merge the groups' selection sequences on the host, as the CPU kernel
  // does: repeatedly the head with the highest score (ties: lower input index).
  const at::Tensor ints_cpu = at::cat({sel_count, sel_pos, order}).cpu();
  const at::Tensor score_cpu = sel_score.to(at::kDouble).cpu();
  const int64_t* pc = ints_cpu.const_data_ptr<int64_t>();  // [num_groups]
  const int64_t* pp = pc + num_groups;                      // sel_pos [n]
  const int64_t* po = pp + n;                               // order [n]
  const double* psc = score_cpu.const_data_ptr<double>();
  int64_t total = 0;
  for (int64_t g = 0; g < num_groups; ++g) total += pc[g];
  if (max_keep > 0) total = std::min(total, max_keep);
  // slot = index into sel_pos / sel_score; its input index is po[pp[slot]]
  const auto later = [&](int64_t a, int64_t b) {
    return score_before(psc[b], po[pp[b]], psc[a], po[pp[a]]);
  };
  std::priority_queue<int64_t, std::vector<int64_t>, decltype(later)> heads(later);
  std::vector<int64_t> next_slot(num_groups), group_of_slot(n);
  for (int64_t g = 0; g < num_groups; ++g) {
    next_slot[g] = group_begin[g] + 1;
    for (int64_t s = group_begin[g]; s < group_begin[g] + pc[g]; ++s) group_of_slot[s] = g;
    if (pc[g] > 0) heads.push(group_begin[g]);
  }
  at::Tensor merged_cpu = at::empty({total}, at::dtype(at::kLong));
  at::Tensor vote_range_cpu = at::empty({2, total}, at::dtype(at::kLong));
  int64_t* pm = merged_cpu.mutable_data_ptr<int64_t>();
  int64_t* pv = vote_range_cpu.mutable_data_ptr<int64_t>();
  for (int64_t q = 0; q < total; ++q) {
    const int64_t slot = heads.top();
    heads.pop();
    const int64_t g = group_of_slot[slot];
    pm[q] = slot;
    pv[q] = group_begin[g];
    pv[total + q] = group_begin[g + 1];
    if (next_slot[g] < group_begin[g] + pc[g]) heads.push(next_slot[g]++);
  }
  const at::Tensor merged = merged_cpu.to(segments_in.device());
  const at::Tensor positions = sel_pos.index_select(0, merged);
  const at::Tensor indices = order.index_select(0, positions);
  const at::Tensor out_scores = sel_score.index_select(0, merged).to(scores_in.scalar_type());
  at::Tensor out_segments;
  if (voting_threshold.has_value() && total > 0) {
    const at::Tensor vote_range = vote_range_cpu.to(segments_in.device());
    out_segments = at::empty({total, 2}, segments_in.options());
    const int64_t warps_per_block = kThreadsPerBlock / kWarp;
    const unsigned int blocks = static_cast<unsigned int>(
        std::min<int64_t>((total + warps_per_block - 1) / warps_per_block, 65535 * 8));
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, segments_in.scalar_type(), "soft_nms_voting_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      voting_kernel<scalar_t, acc_t><<<blocks, kThreadsPerBlock, 0, stream>>>(
          total, start.const_data_ptr<acc_t>(), end.const_data_ptr<acc_t>(),
          score.const_data_ptr<acc_t>(), positions.const_data_ptr<int64_t>(),
          vote_range.select(0, 0).const_data_ptr<int64_t>(),
          vote_range.select(0, 1).const_data_ptr<int64_t>(),
          static_cast<acc_t>(*voting_threshold), out_segments.mutable_data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  } else {
    out_segments = segments_in.index_select(0, indices);
  }
  return {out_segments, out_scores, indices};
}

}  // namespace

TORCH_LIBRARY_IMPL(stovtal, CUDA, m) {
  m.impl("temporal_nms", &temporal_nms_cuda);
  m.impl("soft_nms", &soft_nms_cuda);
  m.impl("_temporal_nms_banded", &temporal_nms_banded_cuda);
}

}  // namespace stovtal
