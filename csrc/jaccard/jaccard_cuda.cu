// CUDA kernels of jaccard_distance / jaccard_distance_topk: the per-row math
// of jaccard.h, one thread per row, driven by the shared host pipeline
// (blocked kNN with ATen matmul + top-k, sparse V). The min-sums run per
// block of rows: one CUDA block per row marks the rows sharing a column with
// it through the inverted index, then computes each marked pair's min-sum by
// merging the two sorted rows (deterministic, in increasing column order, as
// on the CPU). The m smallest per row are then selected with ATen ops, ties
// to the lower index.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <tuple>

#include "../common/cuda_utils.cuh"
#include "jaccard.h"
#include "jaccard_pipeline.h"

namespace stovtal {
namespace jaccard {
namespace {

// Rows x N doubles of min-sum workspace per block of rows.
constexpr int64_t kMinSumBlockElems = int64_t(1) << 25;

template <typename scalar_t>
__global__ void rerank_kernel(const scalar_t* __restrict__ x, int64_t dim,
                              const int64_t* __restrict__ rows, const int64_t* __restrict__ cand,
                              int64_t n_rows, int64_t kc, int64_t k1, int64_t* __restrict__ rank,
                              int64_t row_offset, double* __restrict__ scratch) {
  STOVTAL_CUDA_KERNEL_LOOP(q, n_rows) {
    const int64_t i = rows[q];
    rerank_row(x, dim, i, cand + q * kc, kc, k1, rank + (row_offset + i) * k1, scratch + q * k1);
  }
}

__global__ void reciprocal_kernel(const int64_t* __restrict__ rank, int64_t rows, int64_t n,
                                  int64_t k1, int64_t k, int32_t* __restrict__ out, int64_t width,
                                  int32_t* __restrict__ count) {
  STOVTAL_CUDA_KERNEL_LOOP(g, rows) {
    const int64_t base = g / n * n;
    count[g] = reciprocal_row(rank + base * k1, k1, g - base, k, out + g * width);
  }
}

__global__ void expansion_bound_kernel(const int32_t* __restrict__ rf, const int32_t* __restrict__ rfc,
                                       const int32_t* __restrict__ rh, const int32_t* __restrict__ rhc,
                                       int64_t rows, int64_t n, int64_t k1, int64_t hw,
                                       int64_t* __restrict__ bound) {
  STOVTAL_CUDA_KERNEL_LOOP(g, rows) {
    const int64_t base = g / n * n;
    bound[g] = expansion_bound(g - base, rf + base * k1, rfc + base, k1, rh + base * hw, rhc + base,
                               hw);
  }
}

template <typename scalar_t>
__global__ void expansion_fill_kernel(const scalar_t* __restrict__ x, int64_t dim,
                                      const int32_t* __restrict__ rf, const int32_t* __restrict__ rfc,
                                      const int32_t* __restrict__ rh, const int32_t* __restrict__ rhc,
                                      int64_t rows, int64_t n, int64_t k1, int64_t hw,
                                      const int64_t* __restrict__ start, int32_t* __restrict__ cols,
                                      double* __restrict__ vals, int64_t* __restrict__ len) {
  STOVTAL_CUDA_KERNEL_LOOP(g, rows) {
    const int64_t base = g / n * n;
    len[g] = expansion_fill(x + base * dim, dim, g - base, rf + base * k1, rfc + base, k1,
                            rh + base * hw, rhc + base, hw, cols + start[g], vals + start[g]);
  }
}

__global__ void query_expansion_bound_kernel(const int64_t* __restrict__ rank, int64_t rows,
                                             int64_t n, int64_t k1, int64_t k2,
                                             const int64_t* __restrict__ len,
                                             int64_t* __restrict__ bound) {
  STOVTAL_CUDA_KERNEL_LOOP(g, rows) {
    const int64_t base = g / n * n;
    bound[g] = query_expansion_bound(rank + base * k1, k1, k2, g - base, len + base);
  }
}

__global__ void query_expansion_fill_kernel(const int64_t* __restrict__ rank, int64_t rows,
                                            int64_t n, int64_t k1, int64_t k2,
                                            const int64_t* __restrict__ start,
                                            const int64_t* __restrict__ len,
                                            const int32_t* __restrict__ cols,
                                            const double* __restrict__ vals,
                                            int64_t* __restrict__ cursor,
                                            const int64_t* __restrict__ out_start,
                                            int32_t* __restrict__ out_cols,
                                            double* __restrict__ out_vals,
                                            int64_t* __restrict__ out_len) {
  STOVTAL_CUDA_KERNEL_LOOP(g, rows) {
    const int64_t base = g / n * n;
    out_len[g] = query_expansion_fill(rank + base * k1, k1, k2, g - base, start + base, len + base,
                                      cols, vals, cursor + g * k2, out_cols + out_start[g],
                                      out_vals + out_start[g]);
  }
}

__global__ void compact_kernel(const int64_t* __restrict__ start, const int64_t* __restrict__ len,
                               const int32_t* __restrict__ cols, const double* __restrict__ vals,
                               const int64_t* __restrict__ ptr, int64_t rows,
                               int32_t* __restrict__ out_cols, double* __restrict__ out_vals) {
  STOVTAL_CUDA_KERNEL_LOOP(g, rows) {
    for (int64_t q = 0; q < len[g]; ++q) {
      out_cols[ptr[g] + q] = cols[start[g] + q];
      out_vals[ptr[g] + q] = vals[start[g] + q];
    }
  }
}

// Inverted index (rows per global column); the order within a column does not
// matter here, it only marks candidates.
__global__ void column_count_kernel(const int64_t* __restrict__ ptr, const int32_t* __restrict__ cols,
                                    int64_t rows, int64_t n, unsigned long long* __restrict__ count) {
  STOVTAL_CUDA_KERNEL_LOOP(g, rows) {
    const int64_t base = g / n * n;
    for (int64_t e = ptr[g]; e < ptr[g + 1]; ++e) atomicAdd(count + base + cols[e], 1ULL);
  }
}

__global__ void column_fill_kernel(const int64_t* __restrict__ ptr, const int32_t* __restrict__ cols,
                                   int64_t rows, int64_t n, unsigned long long* __restrict__ cursor,
                                   int32_t* __restrict__ col_rows) {
  STOVTAL_CUDA_KERNEL_LOOP(g, rows) {
    const int64_t base = g / n * n;
    for (int64_t e = ptr[g]; e < ptr[g + 1]; ++e) {
      const unsigned long long q = atomicAdd(cursor + base + cols[e], 1ULL);
      col_rows[q] = static_cast<int32_t>(g - base);
    }
  }
}

// Distances of rows [row0, row0 + n_rows) to every row of their set, into
// out [n_rows, n] (zeroed by the caller). One block per row.
__global__ void distance_rows_kernel(const int64_t* __restrict__ ptr, const int32_t* __restrict__ cols,
                                     const double* __restrict__ vals,
                                     const int64_t* __restrict__ col_ptr,
                                     const int32_t* __restrict__ col_rows, int64_t row0,
                                     int64_t n_rows, int64_t n, double* __restrict__ out) {
  for (int64_t r = blockIdx.x; r < n_rows; r += gridDim.x) {
    const int64_t g = row0 + r;
    const int64_t base = g / n * n;
    double* w = out + r * n;
    for (int64_t e = ptr[g] + threadIdx.x; e < ptr[g + 1]; e += blockDim.x) {
      const int64_t c = base + cols[e];
      for (int64_t q = col_ptr[c]; q < col_ptr[c + 1]; ++q) w[col_rows[q]] = -1.0;
    }
    __syncthreads();
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
      if (w[j] < 0) {
        const int64_t h = base + j;
        const double s = min_sum_merge(cols + ptr[g], vals + ptr[g], ptr[g + 1] - ptr[g],
                                       cols + ptr[h], vals + ptr[h], ptr[h + 1] - ptr[h]);
        w[j] = distance_from_min_sum(s);
      } else {
        w[j] = 1.0;  // no shared column: s = 0
      }
    }
    __syncthreads();
  }
}

cudaStream_t stream() { return c10::cuda::getCurrentCUDAStream(); }

// Whether float32 matmuls may run in TF32 behind torch's setting:
// NVIDIA_TF32_OVERRIDE (read by cuBLAS itself) set to anything but "0" may
// turn TF32 on ("0" forces it off, which is safe), and
// TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1 makes torch ask cuBLAS for TF32
// whatever the precision setting says. Read on every call, as torch reads
// its own setting.
bool tf32_forced_by_environment() {
  const char* nvidia = std::getenv("NVIDIA_TF32_OVERRIDE");
  if (nvidia != nullptr && std::strcmp(nvidia, "0") != 0) return true;
  const char* torch_override = std::getenv("TORCH_ALLOW_TF32_CUBLAS_OVERRIDE");
  return torch_override != nullptr && std::strcmp(torch_override, "1") == 0;
}

// The sets the kNN search and V are computed from. knn_rank proves its
// candidates with a rounding bound of IEEE float32 keys; with TF32 matmuls
// (torch.backends.cuda.matmul.fp32_precision = "tf32", e.g. after
// torch.set_float32_matmul_precision("high"), or forced by the environment,
// tf32_forced_by_environment) cuBLAS rounds the inputs of the float32 key
// matmul to 10 mantissa bits, far beyond that bound, so a "proven" candidate
// set can miss a true neighbour. Those sets are then searched in float64
// (never TF32): every later stage computes in double from the same values, so
// the result is the one of the float32 path.
at::Tensor search_sets(const at::Tensor& x) {
  if (x.scalar_type() == at::kFloat &&
      (at::globalContext().float32Precision(at::Float32Backend::CUDA, at::Float32Op::MATMUL) ==
           at::Float32Precision::TF32 ||
       tf32_forced_by_environment())) {
    return x.to(at::kDouble);
  }
  return x;
}

struct CudaBackend {
  // row blocks of keys with at::topk: the GPU has the matmul throughput to
  // spare, and a running per-row selection would serialise on the heaps
  static constexpr bool kSymmetricKnn = false;

  static std::tuple<at::Tensor, at::Tensor> candidates(const at::Tensor& keys, int64_t kc) {
    return at::topk(keys, kc, 1, /*largest=*/false, /*sorted=*/true);
  }

  static void rerank(const at::Tensor& xs, const at::Tensor& rows, const at::Tensor& cand,
                     int64_t k1, at::Tensor& rank, int64_t row_offset) {
    const int64_t n_rows = rows.size(0), kc = cand.size(1), dim = xs.size(1);
    const at::Tensor cand_c = cand.contiguous();
    at::Tensor scratch = at::empty({n_rows, k1}, xs.options().dtype(at::kDouble));
    AT_DISPATCH_FLOATING_TYPES(xs.scalar_type(), "jaccard_rerank_cuda", [&] {
      rerank_kernel<scalar_t><<<blocks_for(n_rows), kThreadsPerBlock, 0, stream()>>>(
          xs.const_data_ptr<scalar_t>(), dim, rows.const_data_ptr<int64_t>(),
          cand_c.const_data_ptr<int64_t>(), n_rows, kc, k1, rank.mutable_data_ptr<int64_t>(),
          row_offset, scratch.mutable_data_ptr<double>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }

  static void reciprocal(const at::Tensor& rank, int64_t n, int64_t k1, int64_t k, at::Tensor& out,
                         at::Tensor& count) {
    const int64_t rows = rank.size(0);
    reciprocal_kernel<<<blocks_for(rows), kThreadsPerBlock, 0, stream()>>>(
        rank.const_data_ptr<int64_t>(), rows, n, k1, k, out.mutable_data_ptr<int32_t>(),
        out.size(1), count.mutable_data_ptr<int32_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  static at::Tensor expansion_bound(const at::Tensor& rf, const at::Tensor& rfc,
                                    const at::Tensor& rh, const at::Tensor& rhc, int64_t n,
                                    int64_t k1, int64_t hw) {
    const int64_t rows = rf.size(0);
    at::Tensor ub = at::empty({rows}, rf.options().dtype(at::kLong));
    expansion_bound_kernel<<<blocks_for(rows), kThreadsPerBlock, 0, stream()>>>(
        rf.const_data_ptr<int32_t>(), rfc.const_data_ptr<int32_t>(), rh.const_data_ptr<int32_t>(),
        rhc.const_data_ptr<int32_t>(), rows, n, k1, hw, ub.mutable_data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return ub;
  }

  static void expansion_fill(const at::Tensor& x, const at::Tensor& rf, const at::Tensor& rfc,
                             const at::Tensor& rh, const at::Tensor& rhc, int64_t n, int64_t k1,
                             int64_t hw, const at::Tensor& start, at::Tensor& cols,
                             at::Tensor& vals, at::Tensor& len) {
    const int64_t rows = rf.size(0), dim = x.size(2);
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "jaccard_expansion_cuda", [&] {
      expansion_fill_kernel<scalar_t><<<blocks_for(rows), kThreadsPerBlock, 0, stream()>>>(
          x.const_data_ptr<scalar_t>(), dim, rf.const_data_ptr<int32_t>(),
          rfc.const_data_ptr<int32_t>(), rh.const_data_ptr<int32_t>(),
          rhc.const_data_ptr<int32_t>(), rows, n, k1, hw, start.const_data_ptr<int64_t>(),
          cols.mutable_data_ptr<int32_t>(), vals.mutable_data_ptr<double>(),
          len.mutable_data_ptr<int64_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }

  static at::Tensor query_expansion_bound(const at::Tensor& rank, int64_t n, int64_t k1,
                                          int64_t k2, const at::Tensor& len) {
    const int64_t rows = rank.size(0);
    at::Tensor ub = at::empty({rows}, rank.options());
    query_expansion_bound_kernel<<<blocks_for(rows), kThreadsPerBlock, 0, stream()>>>(
        rank.const_data_ptr<int64_t>(), rows, n, k1, k2, len.const_data_ptr<int64_t>(),
        ub.mutable_data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return ub;
  }

  static void query_expansion_fill(const at::Tensor& rank, int64_t n, int64_t k1, int64_t k2,
                                   const at::Tensor& start, const at::Tensor& len,
                                   const at::Tensor& cols, const at::Tensor& vals,
                                   const at::Tensor& out_start, at::Tensor& out_cols,
                                   at::Tensor& out_vals, at::Tensor& out_len) {
    const int64_t rows = rank.size(0);
    at::Tensor cursor = at::empty({rows, k2}, rank.options());
    query_expansion_fill_kernel<<<blocks_for(rows), kThreadsPerBlock, 0, stream()>>>(
        rank.const_data_ptr<int64_t>(), rows, n, k1, k2, start.const_data_ptr<int64_t>(),
        len.const_data_ptr<int64_t>(), cols.const_data_ptr<int32_t>(),
        vals.const_data_ptr<double>(), cursor.mutable_data_ptr<int64_t>(),
        out_start.const_data_ptr<int64_t>(), out_cols.mutable_data_ptr<int32_t>(),
        out_vals.mutable_data_ptr<double>(), out_len.mutable_data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  static void compact(const at::Tensor& start, const at::Tensor& len, const at::Tensor& cols,
                      const at::Tensor& vals, const at::Tensor& ptr, at::Tensor& out_cols,
                      at::Tensor& out_vals) {
    const int64_t rows = len.size(0);
    compact_kernel<<<blocks_for(rows), kThreadsPerBlock, 0, stream()>>>(
        start.const_data_ptr<int64_t>(), len.const_data_ptr<int64_t>(),
        cols.const_data_ptr<int32_t>(), vals.const_data_ptr<double>(),
        ptr.const_data_ptr<int64_t>(), rows, out_cols.mutable_data_ptr<int32_t>(),
        out_vals.mutable_data_ptr<double>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

// Inverted index of V: col_ptr [rows + 1] and the (local) rows of every column.
std::tuple<at::Tensor, at::Tensor> transpose(const Csr& v, int64_t n) {
  const int64_t rows = v.ptr.size(0) - 1;
  at::Tensor count = at::zeros({rows}, v.ptr.options());
  column_count_kernel<<<blocks_for(rows), kThreadsPerBlock, 0, stream()>>>(
      v.ptr.const_data_ptr<int64_t>(), v.cols.const_data_ptr<int32_t>(), rows, n,
      reinterpret_cast<unsigned long long*>(count.mutable_data_ptr<int64_t>()));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  at::Tensor col_ptr = exclusive_cumsum(count);
  at::Tensor cursor = col_ptr.narrow(0, 0, rows).clone();
  at::Tensor col_rows = at::empty({v.cols.size(0)}, v.cols.options());
  column_fill_kernel<<<blocks_for(rows), kThreadsPerBlock, 0, stream()>>>(
      v.ptr.const_data_ptr<int64_t>(), v.cols.const_data_ptr<int32_t>(), rows, n,
      reinterpret_cast<unsigned long long*>(cursor.mutable_data_ptr<int64_t>()),
      col_rows.mutable_data_ptr<int32_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {col_ptr, col_rows};
}

// Calls fn(row0, distances [n_rows, n] double) for consecutive blocks of rows.
template <class Fn>
void for_distance_blocks(const Csr& v, int64_t n, Fn fn) {
  const int64_t rows = v.ptr.size(0) - 1;
  const auto [col_ptr, col_rows] = transpose(v, n);
  const int64_t chunk = std::max<int64_t>(1, std::min(rows, kMinSumBlockElems / n));
  at::Tensor work = at::empty({chunk, n}, v.vals.options());
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    const int64_t nr = std::min(chunk, rows - r0);
    at::Tensor w = work.narrow(0, 0, nr);
    w.zero_();
    const unsigned int blocks = static_cast<unsigned int>(std::min<int64_t>(nr, 65535));
    distance_rows_kernel<<<blocks, kThreadsPerBlock, 0, stream()>>>(
        v.ptr.const_data_ptr<int64_t>(), v.cols.const_data_ptr<int32_t>(),
        v.vals.const_data_ptr<double>(), col_ptr.const_data_ptr<int64_t>(),
        col_rows.const_data_ptr<int32_t>(), r0, nr, n, w.mutable_data_ptr<double>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    fn(r0, w);
  }
}

// The m smallest entries of every row of d [R, n], sorted by (value, index):
// everything below the m-th smallest value, then the lowest-index entries
// equal to it.
std::tuple<at::Tensor, at::Tensor> smallest_m(const at::Tensor& d, int64_t m) {
  const int64_t rows = d.size(0);
  const at::Tensor mth = std::get<0>(at::topk(d, m, 1, /*largest=*/false, /*sorted=*/true))
                             .narrow(1, m - 1, 1);
  const at::Tensor below = d < mth;
  const at::Tensor need = below.sum(1, /*keepdim=*/true).neg().add(m);
  const at::Tensor equal = d == mth;
  const at::Tensor take = below.logical_or(equal.logical_and(equal.cumsum(1) <= need));
  const at::Tensor cols = take.nonzero().select(1, 1).reshape({rows, m});
  const at::Tensor vals = d.gather(1, cols);
  const at::Tensor order = std::get<1>(at::sort(vals, /*stable=*/true, 1, /*descending=*/false));
  return {vals.gather(1, order), cols.gather(1, order)};
}

at::Tensor jaccard_distance_cuda(const at::Tensor& features, int64_t k1, int64_t k2) {
  const char* op = "jaccard_distance";
  const Dims d = check_inputs(features, k1, k2, op);
  check_device(features, c10::DeviceType::CUDA, op, "features");
  const c10::cuda::CUDAGuard guard(features.device());
  const at::Tensor x = as_sets(features, d);
  at::Tensor out = at::empty({d.batch, d.n, d.n}, x.options());
  if (d.batch > 0) {
    const at::Tensor xs = search_sets(x);
    const at::Tensor rank = knn_rank<CudaBackend>(xs, k1);
    const Csr v = build_v<CudaBackend>(xs, rank, k1, k2);
    at::Tensor flat = out.view({d.batch * d.n, d.n});
    for_distance_blocks(v, d.n, [&](int64_t r0, const at::Tensor& w) {
      flat.narrow(0, r0, w.size(0)).copy_(w);
    });
  }
  if (!d.batched) out = out.squeeze(0);
  return out.to(features.scalar_type());
}

std::tuple<at::Tensor, at::Tensor> jaccard_distance_topk_cuda(const at::Tensor& features,
                                                              int64_t k1, int64_t k2, int64_t m) {
  const char* op = "jaccard_distance_topk";
  const Dims d = check_inputs(features, k1, k2, op);
  check_m(m, d, op);
  check_device(features, c10::DeviceType::CUDA, op, "features");
  const c10::cuda::CUDAGuard guard(features.device());
  const at::Tensor x = as_sets(features, d);
  at::Tensor dist = at::empty({d.batch, d.n, m}, x.options());
  at::Tensor idx = at::empty({d.batch, d.n, m}, x.options().dtype(at::kLong));
  if (d.batch > 0) {
    const at::Tensor xs = search_sets(x);
    const at::Tensor rank = knn_rank<CudaBackend>(xs, k1);
    const Csr v = build_v<CudaBackend>(xs, rank, k1, k2);
    at::Tensor flat_d = dist.view({d.batch * d.n, m});
    at::Tensor flat_i = idx.view({d.batch * d.n, m});
    for_distance_blocks(v, d.n, [&](int64_t r0, const at::Tensor& w) {
      auto [vals, cols] = smallest_m(w, m);
      flat_d.narrow(0, r0, w.size(0)).copy_(vals);
      flat_i.narrow(0, r0, w.size(0)).copy_(cols);
    });
  }
  if (!d.batched) {
    dist = dist.squeeze(0);
    idx = idx.squeeze(0);
  }
  return {dist.to(features.scalar_type()), idx};
}

}  // namespace
}  // namespace jaccard

TORCH_LIBRARY_IMPL(stovtal, CUDA, m) {
  m.impl("jaccard_distance", &jaccard::jaccard_distance_cuda);
  m.impl("jaccard_distance_topk", &jaccard::jaccard_distance_topk_cuda);
}

}  // namespace stovtal
