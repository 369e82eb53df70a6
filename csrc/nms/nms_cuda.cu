// CUDA kernels of temporal_nms and soft_nms, on the HOST_DEVICE math of
// nms.h / segment_iou.h (float16/bfloat16 compute in float32).
//
// temporal_nms: the bitmask scheme. Candidates are sorted by score; a 2-D
// grid of 64-thread blocks computes, for every candidate i and every block of
// 64 later candidates, a 64-bit mask of the ones i would suppress (IoU >
// threshold, same label). The greedy sweep over those masks is sequential
// and cheap (one OR of a mask row per kept candidate); it runs on the host
// after one device-to-host copy of the masks, like torchvision's nms.
//
// soft_nms: one thread block runs the whole greedy loop on the device: each
// iteration decays the remaining candidates in parallel, drops those below
// min_score and reduces the next maximum (warp shuffles + shared memory).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <cstdint>
#include <tuple>
#include <vector>

#include "../common/cuda_utils.cuh"
#include "nms.h"
#include "nms_common.h"

namespace stovtal {
namespace {

constexpr int kMaskBits = 64;
constexpr int kSoftNmsThreads = 512;

void check_values_cuda(const at::Tensor& segments, const at::Tensor& scores, bool finite_scores,
                       const char* op) {
  TORCH_CHECK(!scores.isnan().any().item<bool>(), op, ": scores must not contain NaN");
  TORCH_CHECK(!finite_scores || scores.isfinite().all().item<bool>(), op,
              ": scores must be finite");
  TORCH_CHECK(segments.isfinite().all().item<bool>(), op, ": segments must be finite");
}

at::Tensor labels_as_int64(const std::optional<at::Tensor>& labels) {
  if (!labels.has_value()) return at::Tensor();
  return labels->to(at::kLong).contiguous();
}

// ---------------------------------------------------------------- hard NMS

// mask[i * col_blocks + cb] bit t: sorted candidate i suppresses sorted
// candidate cb * 64 + t (> i). Blocks below the diagonal are never read.
template <typename acc_t>
__global__ void nms_mask_kernel(int64_t n, const acc_t* __restrict__ start,
                                const acc_t* __restrict__ end,
                                const int64_t* __restrict__ labels, acc_t iou_threshold,
                                int64_t col_blocks, unsigned long long* __restrict__ mask) {
  const int64_t row_block = blockIdx.y;
  const int64_t col_block = blockIdx.x;
  if (col_block < row_block) return;
  const int64_t row_size = min(n - row_block * kMaskBits, static_cast<int64_t>(kMaskBits));
  const int64_t col_size = min(n - col_block * kMaskBits, static_cast<int64_t>(kMaskBits));

  __shared__ acc_t col_start[kMaskBits];
  __shared__ acc_t col_end[kMaskBits];
  __shared__ acc_t col_len[kMaskBits];
  __shared__ int64_t col_label[kMaskBits];
  const int t = threadIdx.x;
  if (t < col_size) {
    const int64_t j = col_block * kMaskBits + t;
    col_start[t] = start[j];
    col_end[t] = end[j];
    col_len[t] = segment_length(start[j], end[j]);
    col_label[t] = labels != nullptr ? labels[j] : 0;
  }
  __syncthreads();
  if (t >= row_size) return;
  const int64_t i = row_block * kMaskBits + t;
  const acc_t s = start[i];
  const acc_t e = end[i];
  const acc_t l = segment_length(s, e);
  const int64_t label = labels != nullptr ? labels[i] : 0;
  unsigned long long bits = 0;
  for (int64_t c = (row_block == col_block) ? t + 1 : 0; c < col_size; ++c) {
    if (col_label[c] != label) continue;
    const acc_t iou = segment_iou_with_lengths(s, e, l, col_start[c], col_end[c], col_len[c]);
    if (nms_suppresses(iou, iou_threshold)) bits |= 1ULL << c;
  }
  mask[i * col_blocks + col_block] = bits;
}

at::Tensor temporal_nms_cuda(const at::Tensor& segments_in, const at::Tensor& scores_in,
                             double iou_threshold, const std::optional<at::Tensor>& labels_in,
                             int64_t max_keep) {
  const char* op = "temporal_nms";
  check_nms_inputs(segments_in, scores_in, labels_in, op);
  check_device(segments_in, c10::DeviceType::CUDA, op, "segments");
  check_iou_threshold(iou_threshold, op);
  const c10::cuda::CUDAGuard guard(segments_in.device());
  const int64_t n = segments_in.size(0);
  if (n == 0) return at::empty({0}, segments_in.options().dtype(at::kLong));
  check_values_cuda(segments_in, scores_in, /*finite_scores=*/false, op);
  const int64_t col_blocks = (n + kMaskBits - 1) / kMaskBits;
  TORCH_CHECK(col_blocks <= 65535, op, ": at most ", 65535 * kMaskBits,
              " candidates are supported on CUDA, got ", n);

  // Descending score, ties by lower index (stable sort).
  const at::Tensor order = std::get<1>(scores_in.sort(/*stable=*/true, /*dim=*/0, /*descending=*/true));
  const auto acc_type = at::toOpMathType(segments_in.scalar_type());
  const at::Tensor sorted = segments_in.index_select(0, order).to(acc_type);
  const at::Tensor start = sorted.select(1, 0).contiguous();
  const at::Tensor end = sorted.select(1, 1).contiguous();
  at::Tensor labels = labels_as_int64(labels_in);
  if (labels.defined()) labels = labels.index_select(0, order).contiguous();
  at::Tensor mask = at::empty({n * col_blocks}, segments_in.options().dtype(at::kLong));

  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const dim3 grid(static_cast<unsigned int>(col_blocks), static_cast<unsigned int>(col_blocks));
  AT_DISPATCH_FLOATING_TYPES(acc_type, "temporal_nms_cuda", [&] {
    nms_mask_kernel<scalar_t><<<grid, kMaskBits, 0, stream>>>(
        n, start.const_data_ptr<scalar_t>(), end.const_data_ptr<scalar_t>(),
        labels.defined() ? labels.const_data_ptr<int64_t>() : nullptr,
        static_cast<scalar_t>(iou_threshold), col_blocks,
        reinterpret_cast<unsigned long long*>(mask.mutable_data_ptr<int64_t>()));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });

  // Sequential sweep over the masks, in score order.
  const at::Tensor mask_cpu = mask.cpu();
  const auto* pm = reinterpret_cast<const unsigned long long*>(mask_cpu.const_data_ptr<int64_t>());
  std::vector<unsigned long long> removed(col_blocks, 0);
  std::vector<int64_t> keep;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t block = i / kMaskBits;
    if (removed[block] & (1ULL << (i % kMaskBits))) continue;
    keep.push_back(i);
    if (max_keep > 0 && static_cast<int64_t>(keep.size()) >= max_keep) break;
    const unsigned long long* row = pm + i * col_blocks;
    for (int64_t b = block; b < col_blocks; ++b) removed[b] |= row[b];
  }
  at::Tensor keep_cpu = at::empty({static_cast<int64_t>(keep.size())}, at::dtype(at::kLong));
  std::copy(keep.begin(), keep.end(), keep_cpu.mutable_data_ptr<int64_t>());
  return order.index_select(0, keep_cpu.to(order.device(), /*non_blocking=*/false));
}

// ---------------------------------------------------------------- soft-NMS

template <typename T>
__device__ __forceinline__ bool better(T score, int64_t index, T best_score, int64_t best_index) {
  return index >= 0 && (best_index < 0 || score_before(score, index, best_score, best_index));
}

// Block-wide max (score, lowest index); index -1 = none. Every thread gets the result.
template <typename T>
__device__ void block_argmax(T& score, int64_t& index, T* sh_score, int64_t* sh_index) {
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  for (int offset = 16; offset > 0; offset /= 2) {
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
    const int num_warps = blockDim.x / 32;
    score = lane < num_warps ? sh_score[lane] : T(0);
    index = lane < num_warps ? sh_index[lane] : -1;
    for (int offset = 16; offset > 0; offset /= 2) {
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

// Launched with one block of kSoftNmsThreads threads (a multiple of 32).
template <typename scalar_t, typename acc_t>
__global__ void soft_nms_kernel(int64_t n, const scalar_t* __restrict__ segments,
                                const scalar_t* __restrict__ scores,
                                const int64_t* __restrict__ labels, acc_t iou_threshold,
                                acc_t sigma, acc_t min_score, int64_t method, int64_t max_keep,
                                acc_t* __restrict__ current, unsigned char* __restrict__ alive,
                                int64_t* __restrict__ sel_index, acc_t* __restrict__ sel_score,
                                int64_t* __restrict__ sel_count) {
  __shared__ acc_t sh_score[32];
  __shared__ int64_t sh_index[32];
  acc_t best_score = 0;
  int64_t best = -1;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    current[j] = static_cast<acc_t>(scores[j]);
    alive[j] = 1;
    if (better(current[j], j, best_score, best)) {
      best_score = current[j];
      best = j;
    }
  }
  block_argmax(best_score, best, sh_score, sh_index);
  int64_t count = 0;
  while (best >= 0 && (max_keep <= 0 || count < max_keep)) {
    const int64_t sel = best;
    if (threadIdx.x == 0) {
      sel_index[count] = sel;
      sel_score[count] = current[sel];
    }
    ++count;
    const acc_t ss = static_cast<acc_t>(segments[2 * sel]);
    const acc_t se = static_cast<acc_t>(segments[2 * sel + 1]);
    const acc_t sl = segment_length(ss, se);
    const int64_t sel_label = labels != nullptr ? labels[sel] : 0;
    best_score = 0;
    best = -1;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
      if (!alive[j]) continue;
      if (j == sel) {
        alive[j] = 0;
        continue;
      }
      acc_t s = current[j];
      if (labels == nullptr || labels[j] == sel_label) {
        const acc_t js = static_cast<acc_t>(segments[2 * j]);
        const acc_t je = static_cast<acc_t>(segments[2 * j + 1]);
        const acc_t iou = segment_iou_with_lengths(ss, se, sl, js, je, segment_length(js, je));
        s *= soft_nms_weight(iou, iou_threshold, sigma, method);
        current[j] = s;
        if (s < min_score) {
          alive[j] = 0;
          continue;
        }
      }
      if (better(s, j, best_score, best)) {
        best_score = s;
        best = j;
      }
    }
    block_argmax(best_score, best, sh_score, sh_index);
  }
  if (threadIdx.x == 0) *sel_count = count;
}

// One thread per selected segment: score-weighted average of the segments of
// its label with IoU >= voting_threshold (unchanged if the weights sum to 0).
template <typename scalar_t, typename acc_t>
__global__ void voting_kernel(int64_t k, int64_t n, const scalar_t* __restrict__ segments,
                              const scalar_t* __restrict__ scores,
                              const int64_t* __restrict__ labels,
                              const int64_t* __restrict__ sel_index, acc_t voting_threshold,
                              scalar_t* __restrict__ out) {
  STOVTAL_CUDA_KERNEL_LOOP(q, k) {
    const int64_t i = sel_index[q];
    const acc_t s = static_cast<acc_t>(segments[2 * i]);
    const acc_t e = static_cast<acc_t>(segments[2 * i + 1]);
    const acc_t l = segment_length(s, e);
    const int64_t label = labels != nullptr ? labels[i] : 0;
    acc_t sum_w = 0, sum_s = 0, sum_e = 0;
    for (int64_t j = 0; j < n; ++j) {
      if (labels != nullptr && labels[j] != label) continue;
      const acc_t js = static_cast<acc_t>(segments[2 * j]);
      const acc_t je = static_cast<acc_t>(segments[2 * j + 1]);
      const acc_t iou = segment_iou_with_lengths(s, e, l, js, je, segment_length(js, je));
      const acc_t w = voting_weight(iou, static_cast<acc_t>(scores[j]), voting_threshold);
      sum_w += w;
      sum_s += w * js;
      sum_e += w * je;
    }
    out[2 * q] = static_cast<scalar_t>(sum_w > acc_t(0) ? sum_s / sum_w : s);
    out[2 * q + 1] = static_cast<scalar_t>(sum_w > acc_t(0) ? sum_e / sum_w : e);
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
  check_values_cuda(segments_in, scores_in, /*finite_scores=*/true, op);
  const at::Tensor segments = segments_in.contiguous();
  const at::Tensor scores = scores_in.contiguous();
  const at::Tensor labels = labels_as_int64(labels_in);
  const int64_t* pl = labels.defined() ? labels.const_data_ptr<int64_t>() : nullptr;
  const auto acc_type = at::toOpMathType(segments.scalar_type());
  at::Tensor current = at::empty({n}, segments.options().dtype(acc_type));
  at::Tensor alive = at::empty({n}, segments.options().dtype(at::kByte));
  at::Tensor sel_index = at::empty({n}, segments.options().dtype(at::kLong));
  at::Tensor sel_score = at::empty({n}, segments.options().dtype(acc_type));
  at::Tensor sel_count = at::empty({1}, segments.options().dtype(at::kLong));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, segments.scalar_type(), "soft_nms_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    soft_nms_kernel<scalar_t, acc_t><<<1, kSoftNmsThreads, 0, stream>>>(
        n, segments.const_data_ptr<scalar_t>(), scores.const_data_ptr<scalar_t>(), pl,
        static_cast<acc_t>(iou_threshold), static_cast<acc_t>(sigma),
        static_cast<acc_t>(min_score), method, max_keep, current.mutable_data_ptr<acc_t>(),
        alive.mutable_data_ptr<unsigned char>(), sel_index.mutable_data_ptr<int64_t>(),
        sel_score.mutable_data_ptr<acc_t>(), sel_count.mutable_data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  const int64_t k = sel_count.item<int64_t>();
  const at::Tensor indices = sel_index.narrow(0, 0, k);
  const at::Tensor out_scores = sel_score.narrow(0, 0, k).to(scores.scalar_type());
  at::Tensor out_segments;
  if (voting_threshold.has_value() && k > 0) {
    out_segments = at::empty({k, 2}, segments.options());
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, segments.scalar_type(), "soft_nms_voting_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      voting_kernel<scalar_t, acc_t><<<blocks_for(k), kThreadsPerBlock, 0, stream>>>(
          k, n, segments.const_data_ptr<scalar_t>(), scores.const_data_ptr<scalar_t>(), pl,
          indices.const_data_ptr<int64_t>(), static_cast<acc_t>(*voting_threshold),
          out_segments.mutable_data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  } else {
    out_segments = segments.index_select(0, indices);
  }
  return {out_segments, out_scores, indices.clone()};
}

}  // namespace

TORCH_LIBRARY_IMPL(stovtal, CUDA, m) {
  m.impl("temporal_nms", &temporal_nms_cuda);
  m.impl("soft_nms", &soft_nms_cuda);
}

}  // namespace stovtal
