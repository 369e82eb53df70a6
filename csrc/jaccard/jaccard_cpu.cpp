// CPU kernels of jaccard_distance / jaccard_distance_topk: the per-row math
// of jaccard.h run with at::parallel_for, and the min-sums over an inverted
// index (V transposed) with one sparse accumulator per thread.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <tuple>
#include <utility>
#include <vector>

#include "jaccard.h"
#include "jaccard_pipeline.h"

namespace stovtal {
namespace jaccard {
namespace {

constexpr int64_t kRowGrain = 64;

// Screens a block of `lanes` keys (kLanes when full) of the symmetric kNN
// search into key[] and says whether any is below its row's threshold:
//   row side (kColumnSide false): one row, lanes columns:
//       key[l] = norms[l] - 2 * dot[l], threshold thr[0];
//   column side (kColumnSide true): lanes rows, one strip row:
//       key[l] = norms[0] - 2 * dot[l], threshold thr[l].
// Full blocks run as two fixed-length loops that the compiler vectorises
// (a fused loop with a flag is not).
template <typename scalar_t, int64_t kLanes, bool kColumnSide>
inline bool screen_block(const scalar_t* __restrict norms, const scalar_t* __restrict dot,
                         const scalar_t* __restrict thr, int64_t lanes,
                         scalar_t* __restrict key) {
  int hit = 0;
  if (lanes == kLanes) {
    if constexpr (kColumnSide) {
      const scalar_t b = norms[0];
      for (int64_t l = 0; l < kLanes; ++l) key[l] = b - 2 * dot[l];
      for (int64_t l = 0; l < kLanes; ++l) hit |= key[l] < thr[l];
    } else {
      for (int64_t l = 0; l < kLanes; ++l) key[l] = norms[l] - 2 * dot[l];
      const scalar_t t = thr[0];
      for (int64_t l = 0; l < kLanes; ++l) hit |= key[l] < t;
    }
    return hit != 0;
  }
  for (int64_t l = 0; l < lanes; ++l) {
    key[l] = norms[kColumnSide ? 0 : l] - 2 * dot[l];
    hit |= key[l] < thr[kColumnSide ? l : 0];
  }
  return hit != 0;
}

// The kc smallest (key, index) pairs offered to each of n rows, kept lazily:
// an offer below the row's threshold is appended to a buffer of 4 * kc
// entries; a full buffer is cut back to its kc smallest (nth_element), whose
// largest key becomes the threshold. Thresholds only decrease, so every
// rejected key is >= the final kc-th smallest: the kept set is exactly the kc
// smallest keys up to ties at the kc-th (which callers' tolerance check
// absorbs). Rows are independent: threads may work on different rows.
template <typename scalar_t>
struct RunningSelection {
  using Entry = std::pair<scalar_t, int32_t>;
  int64_t kc, cap;
  std::vector<Entry> buf;
  std::vector<int32_t> count;
  std::vector<scalar_t> thr;

  RunningSelection(int64_t n, int64_t kc_)
      : kc(kc_), cap(4 * kc_), buf(static_cast<size_t>(n * 4 * kc_)), count(n, 0),
        thr(n, std::numeric_limits<scalar_t>::infinity()) {}

  // key < thr[i] is the caller's check.
  void offer(int64_t i, scalar_t key, int64_t j) {
    Entry* b = buf.data() + i * cap;
    b[count[i]++] = Entry(key, static_cast<int32_t>(j));
    if (count[i] == cap) {
      std::nth_element(b, b + kc - 1, b + cap);
      thr[i] = b[kc - 1].first;
      count[i] = static_cast<int32_t>(kc);
    }
  }

  // Writes row i's kc smallest, sorted by (key, index).
  void finish(int64_t i, scalar_t* out_key, int64_t* out_idx) {
    Entry* b = buf.data() + i * cap;
    const int64_t m = count[i];
    TORCH_INTERNAL_ASSERT(m >= kc, "jaccard: fewer candidates than kc were offered");
    std::nth_element(b, b + kc - 1, b + m);
    std::sort(b, b + kc);
    for (int64_t q = 0; q < kc; ++q) {
      out_key[q] = b[q].first;
      out_idx[q] = b[q].second;
    }
  }
};

struct CpuBackend {
  // The kc smallest keys of every row by a streaming max-heap of (key, index):
  // most keys are rejected by one comparison with the heap top, which is
  // several times faster than at::topk for kc << N.
  static std::tuple<at::Tensor, at::Tensor> candidates(const at::Tensor& keys_in, int64_t kc) {
    const at::Tensor keys = keys_in.contiguous();
    const int64_t rows = keys.size(0), n = keys.size(1);
    at::Tensor vals = at::empty({rows, kc}, keys.options());
    at::Tensor idx = at::empty({rows, kc}, keys.options().dtype(at::kLong));
    int64_t* pi = idx.mutable_data_ptr<int64_t>();
    AT_DISPATCH_FLOATING_TYPES(keys.scalar_type(), "jaccard_candidates_cpu", [&] {
      const scalar_t* pk = keys.const_data_ptr<scalar_t>();
      scalar_t* pv = vals.mutable_data_ptr<scalar_t>();
      at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
        std::vector<std::pair<scalar_t, int64_t>> heap;
        heap.reserve(kc);
        for (int64_t r = begin; r < end; ++r) {
          const scalar_t* row = pk + r * n;
          heap.clear();
          for (int64_t j = 0; j < kc; ++j) heap.emplace_back(row[j], j);
          std::make_heap(heap.begin(), heap.end());
          for (int64_t j = kc; j < n; ++j) {
            // (key, j) with j larger than every index in the heap: a tie loses
            if (row[j] < heap.front().first) {
              std::pop_heap(heap.begin(), heap.end());
              heap.back() = {row[j], j};
              std::push_heap(heap.begin(), heap.end());
            }
          }
          std::sort_heap(heap.begin(), heap.end());
          for (int64_t q = 0; q < kc; ++q) {
            pv[r * kc + q] = heap[q].first;
            pi[r * kc + q] = heap[q].second;
          }
        }
      });
    });
    return {vals, idx};
  }

  static constexpr bool kSymmetricKnn = true;

  // The kc smallest keys norms[j] - 2 <x_i, x_j> of every row i of one set,
  // from strips G = X[r0:r1] X[r0:]^T of the upper half of the Gram matrix:
  // a strip serves its own rows (all its columns) and, transposed, the rows
  // of its columns beyond r1, so every product is computed once.
  static std::tuple<at::Tensor, at::Tensor> symmetric_candidates(const at::Tensor& xk,
                                                                 const at::Tensor& norms,
                                                                 int64_t kc, int64_t strip_rows) {
    const int64_t n = xk.size(0);
    at::Tensor vals = at::empty({n, kc}, xk.options());
    at::Tensor idx = at::empty({n, kc}, xk.options().dtype(at::kLong));
    AT_DISPATCH_FLOATING_TYPES(xk.scalar_type(), "jaccard_symmetric_candidates_cpu", [&] {
      RunningSelection<scalar_t> sel(n, kc);
      const scalar_t* pn = norms.const_data_ptr<scalar_t>();
      constexpr int64_t kLanes = 32;
      for (int64_t r0 = 0; r0 < n; r0 += strip_rows) {
        const int64_t r1 = std::min(n, r0 + strip_rows), width = n - r0;
        const at::Tensor g = at::mm(xk.narrow(0, r0, r1 - r0), xk.narrow(0, r0, width).t());
        const scalar_t* pg = g.const_data_ptr<scalar_t>();
        // the strip's own rows: every column from r0 on; a block of keys is
        // screened in one vectorisable pass (most blocks offer nothing)
        at::parallel_for(r0, r1, 1, [&](int64_t begin, int64_t end) {
          scalar_t key[kLanes];
          for (int64_t i = begin; i < end; ++i) {
            const scalar_t* row = pg + (i - r0) * width;
            for (int64_t c0 = 0; c0 < width; c0 += kLanes) {
              const int64_t lanes = std::min(kLanes, width - c0);
              if (!screen_block<scalar_t, kLanes, false>(pn + r0 + c0, row + c0,
                                                         sel.thr.data() + i, lanes, key)) {
                continue;
              }
              for (int64_t l = 0; l < lanes; ++l) {
                if (key[l] < sel.thr[i]) sel.offer(i, key[l], r0 + c0 + l);
              }
            }
          }
        });
        // the rows of columns r1.. (transposed), kLanes columns at a time so
        // that every strip row is read contiguously
        at::parallel_for(0, (n - r1 + kLanes - 1) / kLanes, 1, [&](int64_t begin, int64_t end) {
          scalar_t key[kLanes];
          for (int64_t blk = begin; blk < end; ++blk) {
            const int64_t c0 = r1 + blk * kLanes, lanes = std::min(kLanes, n - c0);
            const scalar_t* thr = sel.thr.data() + c0;
            for (int64_t i = r0; i < r1; ++i) {
              const scalar_t* row = pg + (i - r0) * width + (c0 - r0);
              if (!screen_block<scalar_t, kLanes, true>(pn + i, row, thr, lanes, key)) continue;
              for (int64_t l = 0; l < lanes; ++l) {
                if (key[l] < thr[l]) sel.offer(c0 + l, key[l], i);
              }
            }
          }
        });
      }
      scalar_t* pv = vals.mutable_data_ptr<scalar_t>();
      int64_t* pi = idx.mutable_data_ptr<int64_t>();
      at::parallel_for(0, n, kRowGrain, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) sel.finish(i, pv + i * kc, pi + i * kc);
      });
    });
    return {vals, idx};
  }

  static void rerank(const at::Tensor& xs, const at::Tensor& rows, const at::Tensor& cand,
                     int64_t k1, at::Tensor& rank, int64_t row_offset) {
    const int64_t n_rows = rows.size(0), kc = cand.size(1), dim = xs.size(1);
    const at::Tensor cand_c = cand.contiguous();
    const int64_t* prow = rows.const_data_ptr<int64_t>();
    const int64_t* pc = cand_c.const_data_ptr<int64_t>();
    int64_t* pr = rank.mutable_data_ptr<int64_t>();
    AT_DISPATCH_FLOATING_TYPES(xs.scalar_type(), "jaccard_rerank_cpu", [&] {
      const scalar_t* px = xs.const_data_ptr<scalar_t>();
      at::parallel_for(0, n_rows, 16, [&](int64_t begin, int64_t end) {
        std::vector<double> scratch(k1);
        for (int64_t q = begin; q < end; ++q) {
          rerank_row(px, dim, prow[q], pc + q * kc, kc, k1, pr + (row_offset + prow[q]) * k1,
                     scratch.data());
        }
      });
    });
  }

  static void reciprocal(const at::Tensor& rank, int64_t n, int64_t k1, int64_t k, at::Tensor& out,
                         at::Tensor& count) {
    const int64_t rows = rank.size(0), width = out.size(1);
    const int64_t* pr = rank.const_data_ptr<int64_t>();
    int32_t* po = out.mutable_data_ptr<int32_t>();
    int32_t* pn = count.mutable_data_ptr<int32_t>();
    at::parallel_for(0, rows, kRowGrain, [&](int64_t begin, int64_t end) {
      for (int64_t g = begin; g < end; ++g) {
        const int64_t base = g / n * n;
        pn[g] = jaccard::reciprocal_row(pr + base * k1, k1, g - base, k, po + g * width);
      }
    });
  }

  static at::Tensor expansion_bound(const at::Tensor& rf, const at::Tensor& rfc,
                                    const at::Tensor& rh, const at::Tensor& rhc, int64_t n,
                                    int64_t k1, int64_t hw) {
    const int64_t rows = rf.size(0);
    at::Tensor ub = at::empty({rows}, rf.options().dtype(at::kLong));
    const int32_t *pf = rf.const_data_ptr<int32_t>(), *pfc = rfc.const_data_ptr<int32_t>();
    const int32_t *ph = rh.const_data_ptr<int32_t>(), *phc = rhc.const_data_ptr<int32_t>();
    int64_t* pu = ub.mutable_data_ptr<int64_t>();
    at::parallel_for(0, rows, kRowGrain, [&](int64_t begin, int64_t end) {
      for (int64_t g = begin; g < end; ++g) {
        const int64_t base = g / n * n;
        pu[g] = jaccard::expansion_bound(g - base, pf + base * k1, pfc + base, k1, ph + base * hw,
                                phc + base, hw);
      }
    });
    return ub;
  }

  static void expansion_fill(const at::Tensor& x, const at::Tensor& rf, const at::Tensor& rfc,
                             const at::Tensor& rh, const at::Tensor& rhc, int64_t n, int64_t k1,
                             int64_t hw, const at::Tensor& start, at::Tensor& cols,
                             at::Tensor& vals, at::Tensor& len) {
    const int64_t rows = rf.size(0), dim = x.size(2);
    const int32_t *pf = rf.const_data_ptr<int32_t>(), *pfc = rfc.const_data_ptr<int32_t>();
    const int32_t *ph = rh.const_data_ptr<int32_t>(), *phc = rhc.const_data_ptr<int32_t>();
    const int64_t* ps = start.const_data_ptr<int64_t>();
    int32_t* pc = cols.mutable_data_ptr<int32_t>();
    double* pv = vals.mutable_data_ptr<double>();
    int64_t* pl = len.mutable_data_ptr<int64_t>();
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "jaccard_expansion_cpu", [&] {
      const scalar_t* px = x.const_data_ptr<scalar_t>();
      at::parallel_for(0, rows, kRowGrain, [&](int64_t begin, int64_t end) {
        for (int64_t g = begin; g < end; ++g) {
          const int64_t base = g / n * n;
          pl[g] = jaccard::expansion_fill(px + base * dim, dim, g - base, pf + base * k1, pfc + base, k1,
                                 ph + base * hw, phc + base, hw, pc + ps[g], pv + ps[g]);
        }
      });
    });
  }

  static at::Tensor query_expansion_bound(const at::Tensor& rank, int64_t n, int64_t k1,
                                          int64_t k2, const at::Tensor& len) {
    const int64_t rows = rank.size(0);
    at::Tensor ub = at::empty({rows}, rank.options());
    const int64_t* pr = rank.const_data_ptr<int64_t>();
    const int64_t* pl = len.const_data_ptr<int64_t>();
    int64_t* pu = ub.mutable_data_ptr<int64_t>();
    at::parallel_for(0, rows, kRowGrain, [&](int64_t begin, int64_t end) {
      for (int64_t g = begin; g < end; ++g) {
        const int64_t base = g / n * n;
        pu[g] = jaccard::query_expansion_bound(pr + base * k1, k1, k2, g - base, pl + base);
      }
    });
    return ub;
  }

  static void query_expansion_fill(const at::Tensor& rank, int64_t n, int64_t k1, int64_t k2,
                                   const at::Tensor& start, const at::Tensor& len,
                                   const at::Tensor& cols, const at::Tensor& vals,
                                   const at::Tensor& out_start, at::Tensor& out_cols,
                                   at::Tensor& out_vals, at::Tensor& out_len) {
    const int64_t rows = rank.size(0);
    const int64_t* pr = rank.const_data_ptr<int64_t>();
    const int64_t *ps = start.const_data_ptr<int64_t>(), *pl = len.const_data_ptr<int64_t>();
    const int32_t* pc = cols.const_data_ptr<int32_t>();
    const double* pv = vals.const_data_ptr<double>();
    const int64_t* pos = out_start.const_data_ptr<int64_t>();
    int32_t* poc = out_cols.mutable_data_ptr<int32_t>();
    double* pov = out_vals.mutable_data_ptr<double>();
    int64_t* pol = out_len.mutable_data_ptr<int64_t>();
    at::parallel_for(0, rows, kRowGrain, [&](int64_t begin, int64_t end) {
      std::vector<int64_t> cursor(k2);
      for (int64_t g = begin; g < end; ++g) {
        const int64_t base = g / n * n;
        pol[g] = jaccard::query_expansion_fill(pr + base * k1, k1, k2, g - base, ps + base, pl + base, pc,
                                      pv, cursor.data(), poc + pos[g], pov + pos[g]);
      }
    });
  }

  static void compact(const at::Tensor& start, const at::Tensor& len, const at::Tensor& cols,
                      const at::Tensor& vals, const at::Tensor& ptr, at::Tensor& out_cols,
                      at::Tensor& out_vals) {
    const int64_t rows = len.size(0);
    const int64_t *ps = start.const_data_ptr<int64_t>(), *pl = len.const_data_ptr<int64_t>();
    const int64_t* pp = ptr.const_data_ptr<int64_t>();
    const int32_t* pc = cols.const_data_ptr<int32_t>();
    const double* pv = vals.const_data_ptr<double>();
    int32_t* poc = out_cols.mutable_data_ptr<int32_t>();
    double* pov = out_vals.mutable_data_ptr<double>();
    at::parallel_for(0, rows, kRowGrain * 16, [&](int64_t begin, int64_t end) {
      for (int64_t g = begin; g < end; ++g) {
        std::copy(pc + ps[g], pc + ps[g] + pl[g], poc + pp[g]);
        std::copy(pv + ps[g], pv + ps[g] + pl[g], pov + pp[g]);
      }
    });
  }
};

// V transposed: for every (global) column, the rows holding it and their
// values, rows in increasing order.
struct Csc {
  std::vector<int64_t> ptr;
  std::vector<int32_t> rows;
  std::vector<double> vals;
};

Csc transpose(const Csr& v, int64_t n) {
  const int64_t rows = v.ptr.size(0) - 1;
  const int64_t* pp = v.ptr.const_data_ptr<int64_t>();
  const int32_t* pc = v.cols.const_data_ptr<int32_t>();
  const double* pv = v.vals.const_data_ptr<double>();
  Csc t;
  t.ptr.assign(rows + 1, 0);
  for (int64_t g = 0; g < rows; ++g) {
    const int64_t base = g / n * n;
    for (int64_t e = pp[g]; e < pp[g + 1]; ++e) ++t.ptr[base + pc[e] + 1];
  }
  for (int64_t c = 0; c < rows; ++c) t.ptr[c + 1] += t.ptr[c];
  t.rows.resize(t.ptr[rows]);
  t.vals.resize(t.ptr[rows]);
  std::vector<int64_t> fill(t.ptr.begin(), t.ptr.end() - 1);
  for (int64_t g = 0; g < rows; ++g) {
    const int64_t base = g / n * n;
    for (int64_t e = pp[g]; e < pp[g + 1]; ++e) {
      const int64_t q = fill[base + pc[e]]++;
      t.rows[q] = static_cast<int32_t>(g - base);
      t.vals[q] = pv[e];
    }
  }
  return t;
}

// Sparse accumulator of one thread: s(i, j) for the j that share a column with i.
struct Accumulator {
  std::vector<double> s;
  std::vector<uint8_t> mark;
  std::vector<int32_t> touched;
  explicit Accumulator(int64_t n) : s(n, 0.0), mark(n, 0) {}

  // Min-sums of row g (set base `base`) with every row sharing a column,
  // summed in increasing column order.
  void accumulate(const Csr& v, const Csc& t, int64_t g, int64_t base) {
    const int64_t* pp = v.ptr.const_data_ptr<int64_t>();
    const int32_t* pc = v.cols.const_data_ptr<int32_t>();
    const double* pv = v.vals.const_data_ptr<double>();
    for (int64_t e = pp[g]; e < pp[g + 1]; ++e) {
      const int64_t c = base + pc[e];
      const double vi = pv[e];
      for (int64_t q = t.ptr[c]; q < t.ptr[c + 1]; ++q) {
        const int32_t j = t.rows[q];
        if (!mark[j]) {
          mark[j] = 1;
          touched.push_back(j);
        }
        s[j] += min_of(vi, t.vals[q]);
      }
    }
  }

  void reset() {
    for (const int32_t j : touched) {
      s[j] = 0;
      mark[j] = 0;
    }
    touched.clear();
  }
};

template <typename scalar_t>
void dense_rows(const Csr& v, const Csc& t, int64_t n, scalar_t* out) {
  const int64_t rows = v.ptr.size(0) - 1;
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    Accumulator acc(n);
    for (int64_t g = begin; g < end; ++g) {
      const int64_t base = g / n * n;
      acc.accumulate(v, t, g, base);
      scalar_t* row = out + g * n;
      std::fill(row, row + n, scalar_t(1));  // no shared column: s = 0, distance 1
      for (const int32_t j : acc.touched) row[j] = static_cast<scalar_t>(distance_from_min_sum(acc.s[j]));
      acc.reset();
    }
  });
}

// The m smallest distances of every row, sorted by (distance, index). Rows
// sharing no column with i have distance exactly 1, as may a few that do; all
// of those are taken in index order after the rows with distance < 1.
template <typename scalar_t>
void topk_rows(const Csr& v, const Csc& t, int64_t n, int64_t m, scalar_t* out_d,
               int64_t* out_i) {
  const int64_t rows = v.ptr.size(0) - 1;
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    Accumulator acc(n);
    std::vector<std::pair<double, int32_t>> near;
    for (int64_t g = begin; g < end; ++g) {
      const int64_t base = g / n * n;
      acc.accumulate(v, t, g, base);
      near.clear();
      for (const int32_t j : acc.touched) {
        const double d = distance_from_min_sum(acc.s[j]);
        if (d < 1.0) {
          near.emplace_back(d, j);
          acc.mark[j] = 2;
        }
      }
      const int64_t take = std::min<int64_t>(m, static_cast<int64_t>(near.size()));
      std::partial_sort(near.begin(), near.begin() + take, near.end());
      scalar_t* od = out_d + g * m;
      int64_t* oi = out_i + g * m;
      for (int64_t q = 0; q < take; ++q) {
        od[q] = static_cast<scalar_t>(near[q].first);
        oi[q] = near[q].second;
      }
      int64_t q = take;
      for (int64_t j = 0; q < m && j < n; ++j) {
        if (acc.mark[j] == 2) continue;
        od[q] = scalar_t(1);
        oi[q++] = j;
      }
      acc.reset();
    }
  });
}

at::Tensor jaccard_distance_cpu(const at::Tensor& features, int64_t k1, int64_t k2) {
  const char* op = "jaccard_distance";
  const Dims d = check_inputs(features, k1, k2, op);
  check_device(features, c10::DeviceType::CPU, op, "features");
  const at::Tensor x = as_sets(features, d);
  at::Tensor out = at::empty({d.batch, d.n, d.n}, x.options());
  if (d.batch > 0) {
    const at::Tensor rank = knn_rank<CpuBackend>(x, k1);
    const Csr v = build_v<CpuBackend>(x, rank, k1, k2);
    const Csc t = transpose(v, d.n);
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "jaccard_distance_cpu", [&] {
      dense_rows<scalar_t>(v, t, d.n, out.mutable_data_ptr<scalar_t>());
    });
  }
  if (!d.batched) out = out.squeeze(0);
  return out.to(features.scalar_type());
}

std::tuple<at::Tensor, at::Tensor> jaccard_distance_topk_cpu(const at::Tensor& features,
                                                             int64_t k1, int64_t k2, int64_t m) {
  const char* op = "jaccard_distance_topk";
  const Dims d = check_inputs(features, k1, k2, op);
  check_m(m, d, op);
  check_device(features, c10::DeviceType::CPU, op, "features");
  const at::Tensor x = as_sets(features, d);
  at::Tensor dist = at::empty({d.batch, d.n, m}, x.options());
  at::Tensor idx = at::empty({d.batch, d.n, m}, x.options().dtype(at::kLong));
  if (d.batch > 0) {
    const at::Tensor rank = knn_rank<CpuBackend>(x, k1);
    const Csr v = build_v<CpuBackend>(x, rank, k1, k2);
    const Csc t = transpose(v, d.n);
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "jaccard_distance_topk_cpu", [&] {
      topk_rows<scalar_t>(v, t, d.n, m, dist.mutable_data_ptr<scalar_t>(),
                          idx.mutable_data_ptr<int64_t>());
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

TORCH_LIBRARY_IMPL(stovtal, CPU, m) {
  m.impl("jaccard_distance", &jaccard::jaccard_distance_cpu);
  m.impl("jaccard_distance_topk", &jaccard::jaccard_distance_topk_cpu);
}

}  // namespace stovtal
