// CPU kernels of segment_iou (pairwise and aligned, forward and backward).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include <tuple>
#include <vector>

#include "segment_iou.h"
#include "segment_iou_common.h"

namespace stovtal {
namespace {

// Work items per parallel chunk: pairs are cheap, so chunks must be large.
constexpr int64_t kPairGrain = 1 << 14;

at::Tensor segment_iou_cpu(const at::Tensor& a_in, const at::Tensor& b_in) {
  check_segment_pair(a_in, b_in, /*aligned=*/false, "segment_iou");
  check_device(a_in, c10::DeviceType::CPU, "segment_iou", "a");
  const at::Tensor a = a_in.contiguous();
  const at::Tensor b = b_in.contiguous();
  const int64_t n = a.size(0);
  const int64_t m = b.size(0);
  at::Tensor out = at::empty({n, m}, a.options());
  if (n == 0 || m == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "segment_iou_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* pa = a.const_data_ptr<scalar_t>();
    const scalar_t* pb = b.const_data_ptr<scalar_t>();
    scalar_t* po = out.mutable_data_ptr<scalar_t>();
    // b in structure-of-arrays form with precomputed lengths, shared by all rows.
    std::vector<acc_t> bs(m), be(m), bl(m);
    for (int64_t j = 0; j < m; ++j) {
      bs[j] = static_cast<acc_t>(pb[2 * j]);
      be[j] = static_cast<acc_t>(pb[2 * j + 1]);
      bl[j] = segment_length(bs[j], be[j]);
    }
    const int64_t row_grain = std::max<int64_t>(1, kPairGrain / m);
    at::parallel_for(0, n, row_grain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const acc_t s1 = static_cast<acc_t>(pa[2 * i]);
        const acc_t e1 = static_cast<acc_t>(pa[2 * i + 1]);
        const acc_t l1 = segment_length(s1, e1);
        scalar_t* row = po + i * m;
        for (int64_t j = 0; j < m; ++j) {
          row[j] = static_cast<scalar_t>(
              segment_iou_with_lengths(s1, e1, l1, bs[j], be[j], bl[j]));
        }
      }
    });
  });
  return out;
}

at::Tensor segment_iou_aligned_cpu(const at::Tensor& a_in, const at::Tensor& b_in) {
  check_segment_pair(a_in, b_in, /*aligned=*/true, "segment_iou_aligned");
  check_device(a_in, c10::DeviceType::CPU, "segment_iou_aligned", "a");
  const at::Tensor a = a_in.contiguous();
  const at::Tensor b = b_in.contiguous();
  const int64_t n = a.size(0);
  at::Tensor out = at::empty({n}, a.options());
  if (n == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "segment_iou_aligned_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* pa = a.const_data_ptr<scalar_t>();
    const scalar_t* pb = b.const_data_ptr<scalar_t>();
    scalar_t* po = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, n, kPairGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        po[i] = static_cast<scalar_t>(segment_iou_pair<acc_t>(pa[2 * i], pa[2 * i + 1],
                                                              pb[2 * i], pb[2 * i + 1]));
      }
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> segment_iou_aligned_backward_cpu(const at::Tensor& grad_in,
                                                                    const at::Tensor& a_in,
                                                                    const at::Tensor& b_in) {
  check_segment_pair(a_in, b_in, /*aligned=*/true, "segment_iou_aligned_backward");
  check_grad(grad_in, {a_in.size(0)}, a_in, "segment_iou_aligned_backward");
  const at::Tensor grad = grad_in.contiguous();
  const at::Tensor a = a_in.contiguous();
  const at::Tensor b = b_in.contiguous();
  const int64_t n = a.size(0);
  at::Tensor ga = at::empty_like(a);
  at::Tensor gb = at::empty_like(b);
  if (n == 0) return {ga, gb};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "segment_iou_aligned_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* pg = grad.const_data_ptr<scalar_t>();
    const scalar_t* pa = a.const_data_ptr<scalar_t>();
    const scalar_t* pb = b.const_data_ptr<scalar_t>();
    scalar_t* pga = ga.mutable_data_ptr<scalar_t>();
    scalar_t* pgb = gb.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, n, kPairGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        acc_t gs1, ge1, gs2, ge2;
        segment_iou_pair_backward<acc_t>(pg[i], pa[2 * i], pa[2 * i + 1], pb[2 * i],
                                         pb[2 * i + 1], &gs1, &ge1, &gs2, &ge2);
        pga[2 * i] = static_cast<scalar_t>(gs1);
        pga[2 * i + 1] = static_cast<scalar_t>(ge1);
        pgb[2 * i] = static_cast<scalar_t>(gs2);
        pgb[2 * i + 1] = static_cast<scalar_t>(ge2);
      }
    });
  });
  return {ga, gb};
}

std::tuple<at::Tensor, at::Tensor> segment_iou_backward_cpu(const at::Tensor& grad_in,
                                                            const at::Tensor& a_in,
                                                            const at::Tensor& b_in) {
  check_segment_pair(a_in, b_in, /*aligned=*/false, "segment_iou_backward");
  check_grad(grad_in, {a_in.size(0), b_in.size(0)}, a_in, "segment_iou_backward");
  const at::Tensor grad = grad_in.contiguous();
  const at::Tensor a = a_in.contiguous();
  const at::Tensor b = b_in.contiguous();
  const int64_t n = a.size(0);
  const int64_t m = b.size(0);
  at::Tensor ga = at::zeros_like(a);
  at::Tensor gb = at::zeros_like(b);
  if (n == 0 || m == 0) return {ga, gb};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "segment_iou_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* pg = grad.const_data_ptr<scalar_t>();
    const scalar_t* pa = a.const_data_ptr<scalar_t>();
    const scalar_t* pb = b.const_data_ptr<scalar_t>();
    scalar_t* pga = ga.mutable_data_ptr<scalar_t>();
    scalar_t* pgb = gb.mutable_data_ptr<scalar_t>();
    // Each output row / column is owned by one task: no races, no atomics.
    at::parallel_for(0, n, std::max<int64_t>(1, kPairGrain / m), [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        acc_t acc_s = 0, acc_e = 0;
        for (int64_t j = 0; j < m; ++j) {
          acc_t gs1, ge1, gs2, ge2;
          segment_iou_pair_backward<acc_t>(pg[i * m + j], pa[2 * i], pa[2 * i + 1], pb[2 * j],
                                           pb[2 * j + 1], &gs1, &ge1, &gs2, &ge2);
          acc_s += gs1;
          acc_e += ge1;
        }
        pga[2 * i] = static_cast<scalar_t>(acc_s);
        pga[2 * i + 1] = static_cast<scalar_t>(acc_e);
      }
    });
    at::parallel_for(0, m, std::max<int64_t>(1, kPairGrain / n), [&](int64_t begin, int64_t end) {
      for (int64_t j = begin; j < end; ++j) {
        acc_t acc_s = 0, acc_e = 0;
        for (int64_t i = 0; i < n; ++i) {
          acc_t gs1, ge1, gs2, ge2;
          segment_iou_pair_backward<acc_t>(pg[i * m + j], pa[2 * i], pa[2 * i + 1], pb[2 * j],
                                           pb[2 * j + 1], &gs1, &ge1, &gs2, &ge2);
          acc_s += gs2;
          acc_e += ge2;
        }
        pgb[2 * j] = static_cast<scalar_t>(acc_s);
        pgb[2 * j + 1] = static_cast<scalar_t>(acc_e);
      }
    });
  });
  return {ga, gb};
}

}  // namespace

TORCH_LIBRARY_IMPL(stovtal, CPU, m) {
  m.impl("segment_iou", &segment_iou_cpu);
  m.impl("segment_iou_aligned", &segment_iou_aligned_cpu);
  m.impl("segment_iou_backward", &segment_iou_backward_cpu);
  m.impl("segment_iou_aligned_backward", &segment_iou_aligned_backward_cpu);
}

}  // namespace stovtal
