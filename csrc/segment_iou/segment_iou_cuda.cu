// CUDA kernels of segment_iou: the same HOST_DEVICE math as the CPU kernels
// (segment_iou.h); float16/bfloat16 compute in float32.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

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

// Gradient of the pairwise IoU w.r.t. one side: each thread owns one segment
// of `self` and sums over all segments of `other`, so no atomics are needed.
// `self_is_a` selects which side of the pair (and which grad stride) it is.
template <typename scalar_t, typename acc_t>
__global__ void segment_iou_pairwise_backward_kernel(const scalar_t* __restrict__ grad,
                                                     const scalar_t* __restrict__ self,
                                                     const scalar_t* __restrict__ other,
                                                     scalar_t* __restrict__ gself, int64_t n_self,
                                                     int64_t n_other, bool self_is_a) {
  STOVTAL_CUDA_KERNEL_LOOP(i, n_self) {
    const acc_t s = static_cast<acc_t>(self[2 * i]);
    const acc_t e = static_cast<acc_t>(self[2 * i + 1]);
    acc_t acc_s = 0, acc_e = 0;
    for (int64_t j = 0; j < n_other; ++j) {
      const acc_t os = static_cast<acc_t>(other[2 * j]);
      const acc_t oe = static_cast<acc_t>(other[2 * j + 1]);
      acc_t g1s, g1e, g2s, g2e;
      if (self_is_a) {
        segment_iou_pair_backward<acc_t>(static_cast<acc_t>(grad[i * n_other + j]), s, e, os, oe,
                                         &g1s, &g1e, &g2s, &g2e);
        acc_s += g1s;
        acc_e += g1e;
      } else {
        segment_iou_pair_backward<acc_t>(static_cast<acc_t>(grad[j * n_self + i]), os, oe, s, e,
                                         &g1s, &g1e, &g2s, &g2e);
        acc_s += g2s;
        acc_e += g2e;
      }
    }
    gself[2 * i] = static_cast<scalar_t>(acc_s);
    gself[2 * i + 1] = static_cast<scalar_t>(acc_e);
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
  at::Tensor ga = at::zeros_like(a);
  at::Tensor gb = at::zeros_like(b);
  if (n == 0 || m == 0) return {ga, gb};
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "segment_iou_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    segment_iou_pairwise_backward_kernel<scalar_t, acc_t>
        <<<blocks_for(n), kThreadsPerBlock, 0, stream>>>(
            grad.const_data_ptr<scalar_t>(), a.const_data_ptr<scalar_t>(),
            b.const_data_ptr<scalar_t>(), ga.mutable_data_ptr<scalar_t>(), n, m, true);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    segment_iou_pairwise_backward_kernel<scalar_t, acc_t>
        <<<blocks_for(m), kThreadsPerBlock, 0, stream>>>(
            grad.const_data_ptr<scalar_t>(), b.const_data_ptr<scalar_t>(),
            a.const_data_ptr<scalar_t>(), gb.mutable_data_ptr<scalar_t>(), m, n, false);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
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
