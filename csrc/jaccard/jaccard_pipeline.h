// Host-side driver of the k-reciprocal Jaccard distance, shared by the CPU
// and CUDA entry points. It does the ATen parts (validation, the blocked kNN
// search by chunked matmul + top-k, prefix sums, allocation) and calls a
// Backend for the per-row kernels:
//
//   Backend::candidates(keys, kc) -> (values, indices): the kc smallest keys
//       of every row, sorted ascending (the CUDA backend uses at::topk)
//   Backend::kSymmetricKnn; if true, Backend::symmetric_candidates(xk, norms,
//       kc, strip_rows) -> the same for every row of one set, from half the
//       Gram matrix (the CPU backend)
//   Backend::rerank(X_set, rows, cand, k1, rank, row_offset)
//   Backend::reciprocal(rank, N, k1, k, out, count)
//   Backend::expansion_bound(rf, rfc, rh, rhc, N, k1, hw) -> int64 [rows]
//   Backend::expansion_fill(X, rf, rfc, rh, rhc, N, k1, hw, start, cols, vals, len)
//   Backend::query_expansion_bound(rank, N, k1, k2, len) -> int64 [rows]
//   Backend::query_expansion_fill(rank, N, k1, k2, start, len, cols, vals,
//                                 out_start, out_cols, out_vals, out_len)
//   Backend::compact(start, len, cols, vals, ptr, out_cols, out_vals)
//
// Rows are numbered globally over a batch ([B, N, D] -> B*N rows); neighbour
// and column indices are local to the row's set.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cfloat>
#include <cstdint>
#include <limits>
#include <tuple>

#include "../common/checks.h"
#include "jaccard.h"

namespace stovtal {
namespace jaccard {

// Elements of one block of the kNN key matrix (rows x N): bounds the
// O(N)-per-row working memory of the search (at least kMinChunkRows rows so
// the matmul stays efficient).
constexpr int64_t kKnnBlockElems = int64_t(1) << 23;
constexpr int64_t kMinChunkRows = 256;
// Rows per strip of the symmetric search: its matmul work is N^2 / 2 + N *
// rows / 2, and 256-row strips keep the sgemm efficient (measured best of
// 64..838 at N = 10,000, D = 256).
constexpr int64_t kSymmetricStripRows = 256;

struct Dims {
  int64_t batch, n, dim;
  bool batched;
};

inline Dims check_inputs(const at::Tensor& f, int64_t k1, int64_t k2, const char* op) {
  check_floating(f, op, "features");
  TORCH_CHECK(f.dim() == 2 || f.dim() == 3, op,
              ": features must be 2-D [N, D] or batched 3-D [B, N, D], got shape ", f.sizes());
  const bool batched = f.dim() == 3;
  const Dims d{batched ? f.size(0) : 1, f.size(-2), f.size(-1), batched};
  TORCH_CHECK(d.dim >= 1, op, ": features must have at least one column (D >= 1), got shape ",
              f.sizes());
  TORCH_CHECK(k1 >= 1, op, ": k1 must be >= 1, got ", k1);
  TORCH_CHECK(k2 >= 1 && k2 <= k1, op, ": k2 must satisfy 1 <= k2 <= k1, got k2 = ", k2,
              " with k1 = ", k1);
  TORCH_CHECK(d.n >= k1, op, ": needs at least k1 rows per set (N >= k1), got N = ", d.n,
              " and k1 = ", k1);
  TORCH_CHECK(d.n <= std::numeric_limits<int32_t>::max(), op, ": N must be below 2^31, got ", d.n);
  if (f.numel() > 0) {
    TORCH_CHECK(at::isfinite(f).all().item<bool>(), op,
                ": features must be finite, found NaN or Inf");
  }
  return d;
}

// float16/bfloat16 are computed in float32; the result is cast back.
inline at::Tensor as_sets(const at::Tensor& f, const Dims& d) {
  at::Tensor x = f;
  if (x.scalar_type() != at::kFloat && x.scalar_type() != at::kDouble) x = x.to(at::kFloat);
  return x.reshape({d.batch, d.n, d.dim}).contiguous();
}

inline at::Tensor exclusive_cumsum(const at::Tensor& counts) {
  at::Tensor out = at::zeros({counts.size(0) + 1}, counts.options().dtype(at::kLong));
  if (counts.size(0) > 0) out.narrow(0, 1, counts.size(0)).copy_(counts.cumsum(0));
  return out;
}

// Re-ranks exactly the rows whose pre-selected candidates are proven to hold
// the k1 nearest: the kc-th key exceeds the k1-th by more than twice a
// rounding bound of the key (`tol`), so no row outside the kc can be among the
// exact k1 nearest. Returns the positions (into `rows`) of the other rows
// (near ties, duplicates, overflow), which need a larger kc.
template <class Backend>
at::Tensor rerank_proven(const at::Tensor& xb, const at::Tensor& rows, const at::Tensor& vals,
                         const at::Tensor& cand, int64_t k1, const at::Tensor& tol,
                         at::Tensor& rank, int64_t row_offset) {
  const int64_t kc = cand.size(1);
  const at::Tensor gap =
      vals.select(1, kc - 1).to(at::kDouble) - vals.select(1, k1 - 1).to(at::kDouble);
  const at::Tensor ok = gap > tol.index_select(0, rows);
  const at::Tensor good = ok.nonzero().squeeze(1);
  if (good.size(0) > 0) {
    Backend::rerank(xb, rows.index_select(0, good), cand.index_select(0, good), k1, rank,
                    row_offset);
  }
  return ok.logical_not().nonzero().squeeze(1);
}

// Ranks `rows` of one set from their full key rows `keys` [rows, N]: the kc
// smallest keys pre-select candidates; unproven rows are redone with kc
// doubled, up to kc = N (then the candidates are every row: always exact).
template <class Backend>
void rank_from_keys(const at::Tensor& xb, at::Tensor rows, at::Tensor keys, int64_t kc,
                    int64_t k1, const at::Tensor& tol, at::Tensor& rank, int64_t row_offset) {
  const int64_t n = keys.size(1);
  while (rows.size(0) > 0) {
    kc = std::min(n, kc);
    auto [vals, cand] = Backend::candidates(keys, kc);
    if (kc == n) {
      Backend::rerank(xb, rows, cand, k1, rank, row_offset);
      return;
    }
    const at::Tensor bad = rerank_proven<Backend>(xb, rows, vals, cand, k1, tol, rank, row_offset);
    rows = rows.index_select(0, bad);
    keys = keys.index_select(0, bad);
    kc = 2 * kc;
  }
}

// initial_rank: the k1 nearest rows of every row of every set, [B*N, k1]
// int64 local indices, sorted by (exact squared distance in double, index).
//
// Blocked: keys n_j - 2 <x_i, x_j> (squared distance minus n_i) of a block of
// rows come from one matmul; the kc smallest keys pre-select candidates, which
// the backend re-ranks exactly (rerank_proven). A backend with
// kSymmetricKnn computes each key block once for both of its row sets (the
// Gram matrix is symmetric: half the matmul work) and keeps a running
// selection per row; its unproven rows are redone from full key rows.
template <class Backend>
at::Tensor knn_rank(const at::Tensor& x, int64_t k1) {
  const int64_t batch = x.size(0), n = x.size(1), dim = x.size(2);
  at::Tensor rank = at::empty({batch * n, k1}, x.options().dtype(at::kLong));
  const int64_t chunk = std::min(n, std::max(kMinChunkRows, kKnnBlockElems / std::max<int64_t>(n, 1)));
  const int64_t kc0 = std::min(n, k1 + 8 + k1 / 4);
  for (int64_t b = 0; b < batch; ++b) {
    const at::Tensor xb = x.select(0, b);
    at::Tensor norms = at::empty({n}, x.options().dtype(at::kDouble));
    for (int64_t r0 = 0; r0 < n; r0 += chunk) {
      const int64_t r1 = std::min(n, r0 + chunk);
      norms.narrow(0, r0, r1 - r0).copy_(xb.narrow(0, r0, r1 - r0).to(at::kDouble).pow(2).sum(1));
    }
    const double nmax = norms.max().item<double>();
    TORCH_CHECK(nmax < 1e300, "jaccard: features are too large (squared norms overflow float64)");
    // float32 keys unless squared norms could overflow them.
    const bool key_double = x.scalar_type() == at::kDouble || !(nmax < 1e30);
    const at::Tensor xk = key_double ? xb.to(at::kDouble) : xb;
    const double eps = key_double ? DBL_EPSILON : FLT_EPSILON;
    // 2 * bound on |computed key - exact key|: the dot product and the norm
    // each err by at most ~dim*eps*(n_i + n_j)/2 (plus a few roundings).
    const at::Tensor tol = (norms + nmax) * (2.0 * (4.0 * static_cast<double>(dim) + 16.0) * eps);
    const at::Tensor bias = norms.to(xk.scalar_type()).unsqueeze(0);
    // rows still to rank from full key rows, and the kc to start them with
    at::Tensor todo = at::arange(n, x.options().dtype(at::kLong));
    int64_t kc = kc0;
    if constexpr (Backend::kSymmetricKnn) {
      if (kc0 < n) {
        auto [vals, cand] =
            Backend::symmetric_candidates(xk, bias.squeeze(0), kc0, kSymmetricStripRows);
        todo = todo.index_select(
            0, rerank_proven<Backend>(xb, todo, vals, cand, k1, tol, rank, b * n));
        kc = 2 * kc0;
      }
    }
    for (int64_t r0 = 0; r0 < todo.size(0); r0 += chunk) {
      const at::Tensor rows = todo.narrow(0, r0, std::min(chunk, todo.size(0) - r0));
      at::Tensor keys = at::addmm(bias, xk.index_select(0, rows), xk.t(), 1, -2);
      rank_from_keys<Backend>(xb, rows, keys, kc, k1, tol, rank, b * n);
    }
  }
  return rank;
}

// The sparse rows of V (after local query expansion), compacted: CSR with
// ptr [rows + 1] (int64), cols (int32, local, sorted per row), vals (double).
struct Csr {
  at::Tensor ptr, cols, vals;
};

template <class Backend>
Csr build_v(const at::Tensor& x, const at::Tensor& rank, int64_t k1, int64_t k2) {
  const int64_t rows = rank.size(0);
  const int64_t n = x.size(1);
  const int64_t kh = half_k(k1);
  const int64_t hw = std::min(kh + 1, k1);
  const auto i32 = rank.options().dtype(at::kInt);
  const auto f64 = rank.options().dtype(at::kDouble);
  at::Tensor rf = at::empty({rows, k1}, i32), rfc = at::empty({rows}, i32);
  at::Tensor rh = at::empty({rows, hw}, i32), rhc = at::empty({rows}, i32);
  Backend::reciprocal(rank, n, k1, k1, rf, rfc);
  Backend::reciprocal(rank, n, k1, kh, rh, rhc);

  at::Tensor start = exclusive_cumsum(Backend::expansion_bound(rf, rfc, rh, rhc, n, k1, hw));
  int64_t total = start[rows].item<int64_t>();
  at::Tensor cols = at::empty({total}, i32), vals = at::empty({total}, f64);
  at::Tensor len = at::empty({rows}, rank.options());
  Backend::expansion_fill(x, rf, rfc, rh, rhc, n, k1, hw, start, cols, vals, len);
  rf.reset();
  rh.reset();

  if (k2 > 1) {
    at::Tensor start2 = exclusive_cumsum(Backend::query_expansion_bound(rank, n, k1, k2, len));
    total = start2[rows].item<int64_t>();
    at::Tensor cols2 = at::empty({total}, i32), vals2 = at::empty({total}, f64);
    at::Tensor len2 = at::empty({rows}, rank.options());
    Backend::query_expansion_fill(rank, n, k1, k2, start, len, cols, vals, start2, cols2, vals2,
                                  len2);
    start = start2;
    cols = cols2;
    vals = vals2;
    len = len2;
  }
  at::Tensor ptr = exclusive_cumsum(len);
  const int64_t nnz = ptr[rows].item<int64_t>();
  Csr csr{ptr, at::empty({nnz}, i32), at::empty({nnz}, f64)};
  Backend::compact(start, len, cols, vals, ptr, csr.cols, csr.vals);
  return csr;
}

inline void check_m(int64_t m, const Dims& d, const char* op) {
  TORCH_CHECK(m >= 1 && m <= d.n, op, ": m must satisfy 1 <= m <= N, got m = ", m, " with N = ",
              d.n);
}

}  // namespace jaccard
}  // namespace stovtal
