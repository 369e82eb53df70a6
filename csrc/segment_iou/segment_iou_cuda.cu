// CUDA kernels of segment_iou: the same HOST_DEVICE math as the CPU kernels
// (segment_iou.h); float16/bfloat16 compute in float32.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <tuple>

#include "../common/cuda_utils.cuh"
#include "segment_iou.h"
#include "segment_iou_common.h"

namespace stovtal {
namespace {

template <typename scalar_t, typename acc_t>
__global__ void segment_iou_pairwise_kernel(const scalar_t* __restrict__ a,
                                            const scalar_t* __restrict__ b, scalar_t* __restrict__ out,
                                            int64_t n, int64_t m) {
  STOVTAL_CUDA_KERNEL_LOOP(idx, n * m) {
    const int64_t i = idx / m;
    const int64_t j = idx - i * m;
    out[idx] = static_cast<scalar_t>(segment_iou_pair<acc_t>(
        static_cast<acc_t>(a[2 * i]), static_cast<acc_t>(a[2 * i + 1]),
        static_cast<acc_t>(b[2 * j]), static_cast<acc_t>(b[2 * j + 1])));
  }
}

template <typename scalar_t, typename acc_t>
__global__ void segment_iou_aligned_kernel(const scalar_t* __restrict__ a,
                                           const scalar_t* __restrict__ b, scalar_t* __restrict__ out,
                                           int64_t n) {
  STOVTAL_CUDA_KERNEL_LOOP(i, n) {
    out[i] = static_cast<scalar_t>(segment_iou_pair<acc_t>(
        static_cast<acc_t>(a[2 * i]), static_cast<acc_t>(a[2 * i + 1]),
        static_cast<acc_t>(b[2 * i]), static_cast<acc_t>(b[2 * i + 1])));
  }
}

template <typename scalar_t, typename acc_t>
__global__ void segment_iou_aligned_backward_kernel(const scalar_t* __restrict__ grad,
                                                    const scalar_t* __restrict__ a,
                                                    const scalar_t* __restrict__ b,
                                                    scalar_t* __restrict__ ga,
                                                    scalar_t* __restrict__ gb, int64_t n) {
  STOVTAL_CUDA_KERNEL_LOOP(i, n) {
    acc_t gs1, ge1, gs2, ge2;
    segment_iou_pair_backward<acc_t>(
        static_cast<acc_t>(grad[i]), static_cast<acc_t>(a[2 * i]),
        static_cast<acc_t>(a[2 * i + 1]), static_cast<acc_t>(b[2 * i]),
        static_cast<acc_t>(b[2 * i + 1]), &gs1, &ge1, &gs2, &ge2);
    ga[2 * i] = static_cast<scalar_t>(gs1);
    ga[2 * i + 1] = static_cast<scalar_t>(ge1);
    gb[2 * i] = static_cast<scalar_t>(gs2);
    gb[2 * i + 1] = static_cast<scalar_t>(ge2);
  }
}

// Gradient of the pairwise IoU, parallel over both sides: one block of
// 32 x 8 threads per 32 x 32 tile of pairs (a rows i, b columns j); a thread
// takes column j = 32 * tile_j + threadIdx.x (coalesced reads of grad) and
// rows threadIdx.y + 8 * r. Each tile writes, in a fixed order (no atomics),
//   part_a[i, tile_j] = sum over the tile's columns of d/d a_i  (warp shuffles)
//   part_b[j, tile_i] = sum over the tile's rows of d/d b_j     (shared memory)
// and the caller sums the parts over tiles. So n = 1 with m = 1e6 runs on
// 31250 blocks, not on one thread.
constexpr int kTile = 32;
constexpr int kTileRowThreads = 8;

template <typename scalar_t, typename acc_t>
__global__ void segment_iou_pairwise_backward_kernel(const scalar_t* __restrict__ grad,
                                                     const scalar_t* __restrict__ a,
                                                     const scalar_t* __restrict__ b,
                                                     acc_t* __restrict__ part_a,
                                                     acc_t* __restrict__ part_b, int64_t n,
                                                     int64_t m) {
  __shared__ acc_t sh_b[kTileRowThreads][kTile][2];
  const int64_t tiles_i = (n + kTile - 1) / kTile;
  const int64_t tiles_j = (m + kTile - 1) / kTile;
  const int64_t tj = blockIdx.x;
  const int64_t j = tj * kTile + threadIdx.x;
  const bool j_ok = j < m;
  const acc_t bs = j_ok ? static_cast<acc_t>(b[2 * j]) : acc_t(0);
  const acc_t be = j_ok ? static_cast<acc_t>(b[2 * j + 1]) : acc_t(0);
  for (int64_t ti = blockIdx.y; ti < tiles_i; ti += gridDim.y) {
    acc_t gb_s = 0, gb_e = 0;
    for (int r = threadIdx.y; r < kTile; r += kTileRowThreads) {
      const int64_t i = ti * kTile + r;
      acc_t ga_s = 0, ga_e = 0;
      if (i < n && j_ok) {
        acc_t g1s, g1e, g2s, g2e;
        segment_iou_pair_backward<acc_t>(static_cast<acc_t>(grad[i * m + j]),
                                         static_cast<acc_t>(a[2 * i]),
                                         static_cast<acc_t>(a[2 * i + 1]), bs, be, &g1s, &g1e,
                                         &g2s, &g2e);
        ga_s = g1s;
        ga_e = g1e;
        gb_s += g2s;
        gb_e += g2e;
      }
      for (int offset = kTile / 2; offset > 0; offset /= 2) {
        ga_s += __shfl_down_sync(0xffffffffu, ga_s, offset);
        ga_e += __shfl_down_sync(0xffffffffu, ga_e, offset);
      }
      if (threadIdx.x == 0 && i < n) {
        part_a[(i * tiles_j + tj) * 2] = ga_s;
        part_a[(i * tiles_j + tj) * 2 + 1] = ga_e;
      }
    }
    sh_b[threadIdx.y][threadIdx.x][0] = gb_s;
    sh_b[threadIdx.y][threadIdx.x][1] = gb_e;
    __syncthreads();
    if (threadIdx.y == 0 && j_ok) {
      acc_t sum_s = 0, sum_e = 0;
      for (int y = 0; y < kTileRowThreads; ++y) {
        sum_s += sh_b[y][threadIdx.x][0];
        sum_e += sh_b[y][threadIdx.x][1];
      }
      part_b[(j * tiles_i + ti) * 2] = sum_s;
      part_b[(j * tiles_i + ti) * 2 + 1] = sum_e;
    }
    __syncthreads();  // sh_b is reused by the next tile
  }
}

at::Tensor segment_iou_cuda(const at::Tensor& a_in, const at::Tensor& b_in) {
  check_segment_pair(a_in, b_in, /*aligned=*/false, "segment_iou");
  check_device(a_in, c10::DeviceType::CUDA, "segment_iou", "a");
  const c10::cuda::CUDAGuard guard(a_in.device());
  const at::Tensor a = a_in.contiguous();
  const at::Tensor b = b_in.contiguous();
  const int64_t n = a.size(0);
  const int64_t m = b.size(0);
  at::Tensor out = at::empty({n, m}, a.options());
  if (n == 0 || m == 0) return out;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "segment_iou_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    segment_iou_pairwise_kernel<scalar_t, acc_t><<<blocks_for(n * m), kThreadsPerBlock, 0, stream>>>(
        a.const_data_ptr<scalar_t>(), b.const_data_ptr<scalar_t>(),
        out.mutable_data_ptr<scalar_t>(), n, m);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

at::Tensor segment_iou_aligned_cuda(const at::Tensor& a_in, const at::Tensor& b_in) {
  check_segment_pair(a_in, b_in, /*aligned=*/true, "segment_iou_aligned");
  check_device(a_in, c10::DeviceType::CUDA, "segment_iou_aligned", "a");
  const c10::cuda::CUDAGuard guard(a_in.device());
  const at::Tensor a = a_in.contiguous();
  const at::Tensor b = b_in.contiguous();
  const int64_t n = a.size(0);
  at::Tensor out = at::empty({n}, a.options());
  if (n == 0) return out;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "segment_iou_aligned_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    segment_iou_aligned_kernel<scalar_t, acc_t><<<blocks_for(n), kThreadsPerBlock, 0, stream>>>(
        a.const_data_ptr<scalar_t>(), b.const_data_ptr<scalar_t>(),
        out.mutable_data_ptr<scalar_t>(), n);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> segment_iou_aligned_backward_cuda(const at::Tensor& grad_in,
                                                                     const at::Tensor& a_in,
                                                                     const at::Tensor& b_in) {
  check_segment_pair(a_in, b_in, /*aligned=*/true, "segment_iou_aligned_backward");
  check_grad(grad_in, {a_in.size(0)}, a_in, "segment_iou_aligned_backward");
  check_device(a_in, c10::DeviceType::CUDA, "segment_iou_aligned_backward", "a");
  const c10::cuda::CUDAGuard guard(a_in.device());
  const at::Tensor grad = grad_in.contiguous();
  const at::Tensor a = a_in.contiguous();
  const at::Tensor b = b_in.contiguous();
  const int64_t n = a.size(0);
  at::Tensor ga = at::empty_like(a);
  at::Tensor gb = at::empty_like(b);
  if (n == 0) return {ga, gb};
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "segment_iou_aligned_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    segment_iou_aligned_backward_kernel<scalar_t, acc_t>
        <<<blocks_for(n), kThreadsPerBlock, 0, stream>>>(
            grad.const_data_ptr<scalar_t>(), a.const_data_ptr<scalar_t>(),
            b.const_data_ptr<scalar_t>(), ga.mutable_data_ptr<scalar_t>(),
            gb.mutable_data_ptr<scalar_t>(), n);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {ga, gb};
}

std::tuple<at::Tensor, at::Tensor> segment_iou_backward_cuda(const at::Tensor& grad_in,
                                                             const at::Tensor& a_in,
                                                             const at::Tensor& b_in) {
  check_segment_pair(a_in, b_in, /*aligned=*/false, "segment_iou_backward");
  check_grad(grad_in, {a_in.size(0), b_in.size(0)}, a_in, "segment_iou_backward");
  check_device(a_in, c10::DeviceType::CUDA, "segment_iou_backward", "a");
  const c10::cuda::CUDAGuard guard(a_in.device());
  const at::Tensor grad = grad_in.contiguous();
  const at::Tensor a = a_in.contiguous();
  const at::Tensor b = b_in.contiguous();
  const int64_t n = a.size(0);
  const int64_t m = b.size(0);
  if (n == 0 || m == 0) return {at::zeros_like(a), at::zeros_like(b)};
  const int64_t tiles_i = (n + kTile - 1) / kTile;
  const int64_t tiles_j = (m + kTile - 1) / kTile;
  const auto acc_type = at::toOpMathType(a.scalar_type());
  at::Tensor part_a = at::empty({n, tiles_j, 2}, a.options().dtype(acc_type));
  at::Tensor part_b = at::empty({m, tiles_i, 2}, a.options().dtype(acc_type));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  TORCH_CHECK(tiles_j <= std::numeric_limits<int32_t>::max(), "segment_iou_backward: b has too many segments (",
              m, ")");
  const dim3 grid(static_cast<unsigned int>(tiles_j),
                  static_cast<unsigned int>(std::min<int64_t>(tiles_i, 65535)));
  const dim3 block(kTile, kTileRowThreads);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "segment_iou_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    segment_iou_pairwise_backward_kernel<scalar_t, acc_t><<<grid, block, 0, stream>>>(
        grad.const_data_ptr<scalar_t>(), a.const_data_ptr<scalar_t>(),
        b.const_data_ptr<scalar_t>(), part_a.mutable_data_ptr<acc_t>(),
        part_b.mutable_data_ptr<acc_t>(), n, m);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  const at::Tensor ga = part_a.sum(1).to(a.scalar_type());
  const at::Tensor gb = part_b.sum(1).to(b.scalar_type());
  return {ga, gb};
}

}  // namespace

TORCH_LIBRARY_IMPL(stovtal, CUDA, m) {
  m.impl("segment_iou", &segment_iou_cuda);
  m.impl("segment_iou_aligned", &segment_iou_aligned_cuda);
  m.impl("segment_iou_backward", &segment_iou_backward_cuda);
  m.impl("segment_iou_aligned_backward", &segment_iou_aligned_backward_cuda);
}

}  // namespace stovtal
