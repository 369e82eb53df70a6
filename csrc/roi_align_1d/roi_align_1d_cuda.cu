// CUDA kernels of roi_align_1d: the roi1d_* math of roi_align_1d.h, one
// thread per output element (roi, channel, bin); float16/bfloat16 compute
// in float32. The backward scatters with atomic adds into a gradient buffer
// in the accumulation type (float for the half types), converted at the end.
#include <ATen/Context.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include "../common/cuda_utils.cuh"
#include "roi_align_1d.h"
#include "roi_align_1d_checks.h"

namespace stovtal {
namespace {

template <typename scalar_t, typename acc_t>
__global__ void roi_align_1d_forward_kernel(const scalar_t* __restrict__ features,
                                            const scalar_t* __restrict__ rois,
                                            scalar_t* __restrict__ out, int64_t num_rois,
                                            int64_t channels, int64_t length, int64_t output_size,
                                            acc_t spatial_scale, int64_t sampling_ratio,
                                            bool aligned) {
  STOVTAL_CUDA_KERNEL_LOOP(idx, num_rois * channels * output_size) {
    const int64_t l = idx % output_size;
    const int64_t c = (idx / output_size) % channels;
    const int64_t k = idx / (output_size * channels);
    const scalar_t* roi = rois + 3 * k;
    const int64_t b = static_cast<int64_t>(static_cast<acc_t>(roi[0]));
    const Roi1d<acc_t> r =
        roi1d_geometry<acc_t>(static_cast<acc_t>(roi[1]), static_cast<acc_t>(roi[2]),
                              spatial_scale, output_size, sampling_ratio, aligned);
    int64_t lo, hi;
    roi1d_valid_samples(r, l, length, &lo, &hi);
    const scalar_t* row = features + (b * channels + c) * length;
    acc_t acc = 0;
    for (int64_t s = lo; s < hi; ++s) {
      int64_t t0, t1;
      acc_t w0, w1;
      roi1d_taps(roi1d_sample(r, l, s), length, &t0, &t1, &w0, &w1);
      acc += w0 * static_cast<acc_t>(row[t0]) + w1 * static_cast<acc_t>(row[t1]);
    }
    out[idx] = static_cast<scalar_t>(acc / r.count);
  }
}

template <typename scalar_t, typename acc_t>
__global__ void roi_align_1d_backward_kernel(const scalar_t* __restrict__ grad,
                                             const scalar_t* __restrict__ rois,
                                             acc_t* __restrict__ grad_features, int64_t num_rois,
                                             int64_t channels, int64_t length,
                                             int64_t output_size, acc_t spatial_scale,
                                             int64_t sampling_ratio, bool aligned) {
  STOVTAL_CUDA_KERNEL_LOOP(idx, num_rois * channels * output_size) {
    const int64_t l = idx % output_size;
    const int64_t c = (idx / output_size) % channels;
    const int64_t k = idx / (output_size * channels);
    const scalar_t* roi = rois + 3 * k;
    const int64_t b = static_cast<int64_t>(static_cast<acc_t>(roi[0]));
    const Roi1d<acc_t> r =
        roi1d_geometry<acc_t>(static_cast<acc_t>(roi[1]), static_cast<acc_t>(roi[2]),
                              spatial_scale, output_size, sampling_ratio, aligned);
    int64_t lo, hi;
    roi1d_valid_samples(r, l, length, &lo, &hi);
    const acc_t g = static_cast<acc_t>(grad[idx]) / r.count;
    acc_t* row = grad_features + (b * channels + c) * length;
    for (int64_t s = lo; s < hi; ++s) {
      int64_t t0, t1;
      acc_t w0, w1;
      roi1d_taps(roi1d_sample(r, l, s), length, &t0, &t1, &w0, &w1);
      atomicAdd(row + t0, g * w0);
      atomicAdd(row + t1, g * w1);
    }
  }
}

at::Tensor roi_align_1d_cuda(const at::Tensor& features_in, const at::Tensor& rois_in,
                             int64_t output_size, double spatial_scale, int64_t sampling_ratio,
                             bool aligned) {
  constexpr const char* op = "roi_align_1d";
  check_roi_align_args(features_in, rois_in, output_size, spatial_scale, sampling_ratio, op);
  check_device(features_in, c10::DeviceType::CUDA, op, "features");
  const c10::cuda::CUDAGuard guard(features_in.device());
  const at::Tensor features = features_in.contiguous();
  const at::Tensor rois = rois_in.contiguous();
  const int64_t channels = features.size(1), length = features.size(2);
  const int64_t num_rois = rois.size(0);
  check_roi_values(rois, features.size(0), op);
  at::Tensor out = at::empty({num_rois, channels, output_size}, features.options());
  const int64_t n = out.numel();
  if (n == 0) return out;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, features.scalar_type(), "roi_align_1d_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    roi_align_1d_forward_kernel<scalar_t, acc_t><<<blocks_for(n), kThreadsPerBlock, 0, stream>>>(
        features.const_data_ptr<scalar_t>(), rois.const_data_ptr<scalar_t>(),
        out.mutable_data_ptr<scalar_t>(), num_rois, channels, length, output_size,
        static_cast<acc_t>(spatial_scale), sampling_ratio, aligned);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

at::Tensor roi_align_1d_backward_cuda(const at::Tensor& grad_in, const at::Tensor& rois_in,
                                      int64_t batch, int64_t length, double spatial_scale,
                                      int64_t sampling_ratio, bool aligned) {
  constexpr const char* op = "roi_align_1d_backward";
  check_roi_align_grad(grad_in, rois_in, batch, length, spatial_scale, sampling_ratio, op);
  check_device(grad_in, c10::DeviceType::CUDA, op, "grad");
  const c10::cuda::CUDAGuard guard(grad_in.device());
  const at::Tensor grad = grad_in.contiguous();
  const at::Tensor rois = rois_in.contiguous();
  const int64_t num_rois = grad.size(0), channels = grad.size(1), output_size = grad.size(2);
  check_roi_values(rois, batch, op);
  const at::ScalarType acc_type = at::toOpMathType(grad.scalar_type());
  at::Tensor acc = at::zeros({batch, channels, length}, grad.options().dtype(acc_type));
  const int64_t n = grad.numel();
  if (n > 0) {
    // atomic adds in a varying order: the gradient is not bit-reproducible (as torchvision's
    // roi_align backward, this errors or warns under torch.use_deterministic_algorithms)
    at::globalContext().alertNotDeterministic("roi_align_1d_backward_cuda");
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "roi_align_1d_backward_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      roi_align_1d_backward_kernel<scalar_t, acc_t><<<blocks_for(n), kThreadsPerBlock, 0, stream>>>(
          grad.const_data_ptr<scalar_t>(), rois.const_data_ptr<scalar_t>(),
          acc.mutable_data_ptr<acc_t>(), num_rois, channels, length, output_size,
          static_cast<acc_t>(spatial_scale), sampling_ratio, aligned);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  return acc_type == grad.scalar_type() ? acc : acc.to(grad.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(stovtal, CUDA, m) {
  m.impl("roi_align_1d", &roi_align_1d_cuda);
  m.impl("roi_align_1d_backward", &roi_align_1d_backward_cuda);
}

}  // namespace stovtal
