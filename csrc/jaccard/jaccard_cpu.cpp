// CPU kernels of jaccard_distance / jaccard_distance_topk: the per-row math
// of jaccard.h run with at::parallel_for, and the min-sums over an inverted
// index (V transposed) with one sparse accumulator per thread.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <string>
#include <type_traits>
#include <cstdint>
#include <limits>
#include <tuple>
#include <utility>
#include <vector>

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#endif

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
// an offer below the row's threshold is appended to a buffer of factor * kc
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

  RunningSelection(int64_t n, int64_t kc_, int64_t factor = 4)
      : kc(kc_), cap(factor * kc_), buf(static_cast<size_t>(n * factor * kc_)), count(n, 0),
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

// ---------------------------------------------------------------------------
// The kNN search: tiles of the upper half of the Gram matrix, each screened
// while in registers or cache; then an exact float64 ranking that computes
// only the distances it needs.
// ---------------------------------------------------------------------------

// Rows (and columns) of one Gram tile: a 256 x 256 float32 tile and its two
// 256 x D panels stay in a core's L2 cache while it is screened.
constexpr int64_t kTile = 256;

// Offers the keys of one Gram tile g (rows i0.., columns j0.., row stride
// ld) to the running selection: key(i, j) = bias[j] - 2 g[i, j] to row i and,
// unless the tile is diagonal (i0 == j0), key(j, i) = bias[i] - 2 g[i, j] to
// row j. Blocks of kLanes columns are screened against the thresholds in one
// vectorisable pass; the rare blocks with a hit are offered key by key.
template <typename scalar_t>
void screen_tile_generic(const scalar_t* g, int64_t ld, int64_t bi, int64_t bj, int64_t i0,
                         int64_t j0, const scalar_t* bias, RunningSelection<scalar_t>& sel) {
  constexpr int64_t kLanes = 16;
  const bool diag = i0 == j0;
  scalar_t* thr = sel.thr.data();
  for (int64_t i = 0; i < bi; ++i) {
    const scalar_t* row = g + i * ld;
    const scalar_t bi_ = bias[i0 + i];
    for (int64_t c0 = 0; c0 < bj; c0 += kLanes) {
      const int64_t lanes = std::min(kLanes, bj - c0);
      scalar_t kr[kLanes], kc[kLanes];
      int hit = 0;
      const scalar_t ti = thr[i0 + i];
      for (int64_t l = 0; l < lanes; ++l) {
        const scalar_t two_g = row[c0 + l] + row[c0 + l];
        kr[l] = bias[j0 + c0 + l] - two_g;
        kc[l] = bi_ - two_g;
        hit |= kr[l] < ti;
        if (!diag) hit |= kc[l] < thr[j0 + c0 + l];
      }
      if (!hit) continue;
      for (int64_t l = 0; l < lanes; ++l) {
        if (kr[l] < thr[i0 + i]) sel.offer(i0 + i, kr[l], j0 + c0 + l);
        if (!diag && kc[l] < thr[j0 + c0 + l]) sel.offer(j0 + c0 + l, kc[l], i0 + i);
      }
    }
  }
}

#if defined(__GNUC__) && defined(__x86_64__)
#define STOVTAL_JACCARD_AVX512 1
// Rows and columns of the AVX-512 micro-kernel's register block: 8 rows x 32
// columns of the Gram tile in 16 zmm accumulators.
constexpr int64_t kMicroRows = 8, kMicroCols = 32;

// Packs rows j0..j0+bj of x ([*, dim] float32) for the micro-kernel: block c
// of 32 rows is stored k-major (out[c][k][0..32) = x[j0 + 32c + 0..32, k]),
// rows beyond bj as zeros.
inline void pack_columns(const float* x, int64_t dim, int64_t j0, int64_t bj, float* out) {
  for (int64_t c0 = 0; c0 < bj; c0 += kMicroCols) {
    float* blk = out + c0 * dim;
    const int64_t w = std::min(kMicroCols, bj - c0);
    for (int64_t l = 0; l < kMicroCols; ++l) {
      const float* src = x + (j0 + c0 + std::min(l, w - 1)) * dim;
      const bool live = l < w;
      for (int64_t k = 0; k < dim; ++k) blk[k * kMicroCols + l] = live ? src[k] : 0.0f;
    }
  }
}

// One Gram tile, fused with its screening: g[i, j] = <x_i, x_j> for rows
// i0..i0+bi and columns j0..j0+bj (packed by pack_columns), 8 x 32 at a time
// in registers (float32 with FMA: the key bound of knn_rank holds for any
// summation order), each block screened and offered as screen_tile_generic
// does before the next is computed. Nothing of the tile is stored.
__attribute__((target("avx512f"))) void gram_screen_avx512(const float* x, int64_t dim,
                                                           const float* packed, int64_t bi,
                                                           int64_t bj, int64_t i0, int64_t j0,
                                                           const float* bias,
                                                           RunningSelection<float>& sel) {
  const bool diag = i0 == j0;
  float* thr = sel.thr.data();
  alignas(64) float kra[16], kca[16];
  for (int64_t r0 = 0; r0 < bi; r0 += kMicroRows) {
    const int64_t rows = std::min(kMicroRows, bi - r0);
    const float* a[kMicroRows];
    for (int64_t r = 0; r < kMicroRows; ++r) a[r] = x + (i0 + r0 + std::min(r, rows - 1)) * dim;
    for (int64_t c0 = 0; c0 < bj; c0 += kMicroCols) {
      const float* bp = packed + c0 * dim;
      __m512 acc[kMicroRows][2];
      for (int64_t r = 0; r < kMicroRows; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
      for (int64_t k = 0; k < dim; ++k) {
        const __m512 b0 = _mm512_loadu_ps(bp + k * kMicroCols);
        const __m512 b1 = _mm512_loadu_ps(bp + k * kMicroCols + 16);
        for (int64_t r = 0; r < kMicroRows; ++r) {
          const __m512 av = _mm512_set1_ps(a[r][k]);
          acc[r][0] = _mm512_fmadd_ps(av, b0, acc[r][0]);
          acc[r][1] = _mm512_fmadd_ps(av, b1, acc[r][1]);
        }
      }
      for (int64_t h = 0; h < 2; ++h) {
        const int64_t cb = c0 + 16 * h;
        if (cb >= bj) break;
        const int64_t lanes = std::min<int64_t>(16, bj - cb);
        const __mmask16 live = lanes == 16 ? __mmask16(0xFFFF) : __mmask16((1u << lanes) - 1);
        const __m512 bias_j = _mm512_maskz_loadu_ps(live, bias + j0 + cb);
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t i = i0 + r0 + r;
          const __m512 two_g = _mm512_add_ps(acc[r][h], acc[r][h]);
          const __m512 kr = _mm512_sub_ps(bias_j, two_g);
          const __mmask16 hr =
              _mm512_mask_cmp_ps_mask(live, kr, _mm512_set1_ps(thr[i]), _CMP_LT_OQ);
          __m512 kc = kr;
          __mmask16 hc = 0;
          if (!diag) {
            kc = _mm512_sub_ps(_mm512_set1_ps(bias[i]), two_g);
            hc = _mm512_mask_cmp_ps_mask(live, kc, _mm512_maskz_loadu_ps(live, thr + j0 + cb),
                                         _CMP_LT_OQ);
          }
          if ((hr | hc) == 0) continue;
          _mm512_store_ps(kra, kr);
          _mm512_store_ps(kca, kc);
          for (int64_t l = 0; l < lanes; ++l) {
            if (kra[l] < thr[i]) sel.offer(i, kra[l], j0 + cb + l);
            if (!diag && kca[l] < thr[j0 + cb + l]) sel.offer(j0 + cb + l, kca[l], i);
          }
        }
      }
    }
  }
}
#endif

// Whether the AVX-512 screen may run: the CPU has it and STOVTAL_JACCARD_SIMD
// is not "0" (tests set it to compare both paths).
inline bool use_avx512() {
#ifdef STOVTAL_JACCARD_AVX512
  const char* env = std::getenv("STOVTAL_JACCARD_SIMD");
  if (env != nullptr && std::string(env) == "0") return false;
  return __builtin_cpu_supports("avx512f");
#else
  return false;
#endif
}

// The kc smallest keys norms[j] - 2 <x_i, x_j> of every row i of one set
// (sorted by (key, index)), from the kTile x kTile tiles of the upper half of
// the Gram matrix: a diagonal tile serves its own rows, an off-diagonal tile
// (I, J) serves the rows of I and, transposed, those of J. Threads take
// tiles from a shared counter (no barrier: a thread that the OS pauses holds
// up no other) and offer into selections of their own, merged at the end.
template <typename scalar_t>
std::tuple<at::Tensor, at::Tensor> tiled_candidates(const at::Tensor& xk, const at::Tensor& bias,
                                                    int64_t kc) {
  const int64_t n = xk.size(0);
  const int64_t nb = (n + kTile - 1) / kTile, tiles = nb * (nb + 1) / 2;
  TORCH_INTERNAL_ASSERT(xk.is_contiguous());
  const int threads = std::max(1, at::get_num_threads());
  // 2 kc entries per row and thread: the selections' memory stays near that
  // of one selection of 4 kc at two threads
  std::vector<RunningSelection<scalar_t>> sel;
  sel.reserve(threads);
  for (int t = 0; t < threads; ++t) sel.emplace_back(n, kc, 2);
  const scalar_t* pb = bias.const_data_ptr<scalar_t>();
  bool simd = false;
  if constexpr (std::is_same_v<scalar_t, float>) simd = use_avx512();
  // tile t -> (I, J), I <= J, column by column of the upper triangle, so
  // that a thread's consecutive tiles mostly share J (packed once)
  std::vector<int64_t> col_start(nb + 1, 0);
  for (int64_t j = 0; j < nb; ++j) col_start[j + 1] = col_start[j] + (j + 1);
  std::atomic<int64_t> next{0};
  constexpr int64_t kTilesPerGrab = 8;
  const scalar_t* px = xk.const_data_ptr<scalar_t>();
  const int64_t dim = xk.size(1);
  at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
    RunningSelection<scalar_t>& mine = sel[std::min(at::get_thread_num(), threads - 1)];
    at::Tensor tile;
    std::vector<float> packed;
    int64_t packed_j = -1;
    if (simd) {
      packed.resize(kTile * dim);
    } else {
      tile = at::empty({kTile, kTile}, xk.options());
    }
    while (true) {
      const int64_t t0 = next.fetch_add(kTilesPerGrab);
      if (t0 >= tiles) break;
      for (int64_t t = t0; t < std::min(tiles, t0 + kTilesPerGrab); ++t) {
        const int64_t bj_blk =
            std::upper_bound(col_start.begin(), col_start.end(), t) - col_start.begin() - 1;
        const int64_t bi_blk = t - col_start[bj_blk];
        const int64_t i0 = bi_blk * kTile, j0 = bj_blk * kTile;
        const int64_t bi = std::min(kTile, n - i0), bj = std::min(kTile, n - j0);
#ifdef STOVTAL_JACCARD_AVX512
        if constexpr (std::is_same_v<scalar_t, float>) {
          if (simd) {
            if (packed_j != bj_blk) {
              pack_columns(px, dim, j0, bj, packed.data());
              packed_j = bj_blk;
            }
            gram_screen_avx512(px, dim, packed.data(), bi, bj, i0, j0, pb, mine);
            continue;
          }
        }
#endif
        at::Tensor g = tile.narrow(0, 0, bi).narrow(1, 0, bj);
        at::mm_out(g, xk.narrow(0, i0, bi), xk.narrow(0, j0, bj).t());
        screen_tile_generic<scalar_t>(g.const_data_ptr<scalar_t>(), kTile, bi, bj, i0, j0, pb,
                                      mine);
      }
    }
  });
  at::Tensor vals = at::empty({n, kc}, xk.options());
  at::Tensor idx = at::empty({n, kc}, xk.options().dtype(at::kLong));
  scalar_t* pv = vals.mutable_data_ptr<scalar_t>();
  int64_t* pi = idx.mutable_data_ptr<int64_t>();
  at::parallel_for(0, n, kRowGrain, [&](int64_t begin, int64_t end) {
    std::vector<typename RunningSelection<scalar_t>::Entry> all;
    for (int64_t i = begin; i < end; ++i) {
      all.clear();
      for (const auto& s : sel) {
        all.insert(all.end(), s.buf.begin() + i * s.cap, s.buf.begin() + i * s.cap + s.count[i]);
      }
      TORCH_INTERNAL_ASSERT(static_cast<int64_t>(all.size()) >= kc,
                            "jaccard: fewer candidates than kc were offered");
      std::nth_element(all.begin(), all.begin() + kc - 1, all.end());
      std::sort(all.begin(), all.begin() + kc);
      for (int64_t q = 0; q < kc; ++q) {
        pv[i * kc + q] = all[q].first;
        pi[i * kc + q] = all[q].second;
      }
    }
  });
  return {vals, idx};
}

// Exact k1 nearest of row i (rank order: float64 squared distance, then
// index) from its kc candidates sorted by (approximate key, index), for a row
// whose candidates are proven to hold them (key[kc-1] - key[k1-1] > tol).
// Keys more than `sep` apart are in the same order as the float64 distances,
// so the candidates fall into runs separated by such gaps; only runs of two or
// more need the float64 distances, and only up to the k1-th place.
template <typename scalar_t, typename key_t>
void rank_from_runs(const scalar_t* xb, int64_t dim, int64_t i, const key_t* key,
                    const int64_t* cand, int64_t kc, int64_t k1, double sep, int64_t* out,
                    std::vector<std::pair<double, int64_t>>& run) {
  const scalar_t* xi = xb + i * dim;
  int64_t count = 0;
  for (int64_t p = 0; count < k1;) {
    int64_t e = p;
    while (e + 1 < kc &&
           static_cast<double>(key[e + 1]) - static_cast<double>(key[e]) <= sep) {
      ++e;
    }
    if (e == p) {
      out[count++] = cand[p];
    } else {
      run.clear();
      for (int64_t q = p; q <= e; ++q) {
        run.emplace_back(squared_distance(xi, xb + cand[q] * dim, dim), cand[q]);
      }
      std::sort(run.begin(), run.end());
      for (int64_t q = 0; q < static_cast<int64_t>(run.size()) && count < k1; ++q) {
        out[count++] = run[q].second;
      }
    }
    p = e + 1;
  }
}

// initial_rank of every set, as knn_rank<CpuBackend> (same output): tiled
// candidates, ranked from runs of near-equal keys; the rows whose candidates
// are not proven go through rank_from_keys as there.
at::Tensor knn_rank_tiled(const at::Tensor& x, int64_t k1) {
  const int64_t batch = x.size(0), n = x.size(1), dim = x.size(2);
  at::Tensor rank = at::empty({batch * n, k1}, x.options().dtype(at::kLong));
  const int64_t chunk =
      std::min(n, std::max(kMinChunkRows, kKnnBlockElems / std::max<int64_t>(n, 1)));
  const int64_t kc0 = std::min(n, k1 + 8 + k1 / 4);
  for (int64_t b = 0; b < batch; ++b) {
    const at::Tensor xb = x.select(0, b);
    // plain loops rather than ATen ops on [N] tensors: each of those is a
    // parallel region, costly on a busy machine
    at::Tensor norms = at::empty({n}, x.options().dtype(at::kDouble));
    double* pn = norms.mutable_data_ptr<double>();
    AT_DISPATCH_FLOATING_TYPES(xb.scalar_type(), "jaccard_norms", [&] {
      const scalar_t* px = xb.const_data_ptr<scalar_t>();
      at::parallel_for(0, n, 1024, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          double acc = 0;
          for (int64_t k = 0; k < dim; ++k) {
            const double v = static_cast<double>(px[i * dim + k]);
            acc += v * v;
          }
          pn[i] = acc;
        }
      });
    });
    const double nmax = *std::max_element(pn, pn + n);
    TORCH_CHECK(nmax < 1e300, "jaccard: features are too large (squared norms overflow float64)");
    const bool key_double = x.scalar_type() == at::kDouble || !(nmax < 1e30);
    const at::Tensor xk = key_double ? xb.to(at::kDouble) : xb;
    const double eps = key_double ? DBL_EPSILON : FLT_EPSILON;
    // as knn_rank: tol = 2 * bound on |computed key - exact key|
    at::Tensor tol = at::empty({n}, norms.options());
    at::Tensor bias = at::empty({n}, xk.options());
    double* ptol = tol.mutable_data_ptr<double>();
    AT_DISPATCH_FLOATING_TYPES(xk.scalar_type(), "jaccard_bias", [&] {
      scalar_t* pb = bias.mutable_data_ptr<scalar_t>();
      for (int64_t i = 0; i < n; ++i) {
        ptol[i] = (pn[i] + nmax) * (2.0 * (4.0 * static_cast<double>(dim) + 16.0) * eps);
        pb[i] = static_cast<scalar_t>(pn[i]);
      }
    });
    at::Tensor todo;
    int64_t kc = kc0;
    if (kc0 < n) {
      at::Tensor vals, cand;
      AT_DISPATCH_FLOATING_TYPES(xk.scalar_type(), "jaccard_tiled_candidates", [&] {
        std::tie(vals, cand) = tiled_candidates<scalar_t>(xk, bias, kc0);
      });
      // rows whose candidates are proven to hold their k1 nearest
      // (rerank_proven's test) are ranked here; the others are redone below
      std::vector<uint8_t> ok(n, 0);
      const int64_t* pc = cand.const_data_ptr<int64_t>();
      int64_t* pr = rank.mutable_data_ptr<int64_t>() + b * n * k1;
      AT_DISPATCH_FLOATING_TYPES(xb.scalar_type(), "jaccard_rank_from_runs", [&] {
        const scalar_t* px = xb.const_data_ptr<scalar_t>();
        AT_DISPATCH_FLOATING_TYPES(vals.scalar_type(), "jaccard_rank_from_runs_keys", [&] {
          using key_t = scalar_t;
          const key_t* pv = vals.const_data_ptr<key_t>();
          at::parallel_for(0, n, kRowGrain, [&](int64_t begin, int64_t end) {
            std::vector<std::pair<double, int64_t>> run;
            for (int64_t i = begin; i < end; ++i) {
              const key_t* key = pv + i * kc0;
              const double gap =
                  static_cast<double>(key[kc0 - 1]) - static_cast<double>(key[k1 - 1]);
              if (!(gap > ptol[i])) continue;
              ok[i] = 1;
              // keys err by at most tol / 2 each, and float64 distances by
              // less than half this slack: keys more than tol + slack apart
              // order the float64 distances the same way
              const double slack =
                  8.0 * (static_cast<double>(dim) + 4.0) * DBL_EPSILON * (pn[i] + nmax);
              rank_from_runs(px, dim, i, key, pc + i * kc0, kc0, k1, ptol[i] + slack,
                             pr + i * k1, run);
            }
          });
        });
      });
      std::vector<int64_t> rest;
      for (int64_t i = 0; i < n; ++i) {
        if (!ok[i]) rest.push_back(i);
      }
      todo = at::empty({static_cast<int64_t>(rest.size())}, x.options().dtype(at::kLong));
      std::copy(rest.begin(), rest.end(), todo.mutable_data_ptr<int64_t>());
      kc = 2 * kc0;
    } else {
      todo = at::arange(n, x.options().dtype(at::kLong));
    }
    for (int64_t r0 = 0; r0 < todo.size(0); r0 += chunk) {
      const at::Tensor rows = todo.narrow(0, r0, std::min(chunk, todo.size(0) - r0));
      at::Tensor keys = at::addmm(bias.unsqueeze(0), xk.index_select(0, rows), xk.t(), 1, -2);
      rank_from_keys<CpuBackend>(xb, rows, keys, kc, k1, tol, rank, b * n);
    }
  }
  return rank;
}

// STOVTAL_JACCARD_KNN=strips selects the previous search (strips of the Gram
// matrix, float64 re-ranking of every candidate): the benchmarks' baseline
// and the tests' second opinion. Both give the same ranking.
inline at::Tensor knn_rank_cpu(const at::Tensor& x, int64_t k1) {
  const char* env = std::getenv("STOVTAL_JACCARD_KNN");
  if (env != nullptr && std::string(env) == "strips") return knn_rank<CpuBackend>(x, k1);
  return knn_rank_tiled(x, k1);
}

at::Tensor jaccard_distance_cpu(const at::Tensor& features, int64_t k1, int64_t k2) {
  const char* op = "jaccard_distance";
  const Dims d = check_inputs(features, k1, k2, op);
  check_device(features, c10::DeviceType::CPU, op, "features");
  const at::Tensor x = as_sets(features, d);
  at::Tensor out = at::empty({d.batch, d.n, d.n}, x.options());
  if (d.batch > 0) {
    const at::Tensor rank = knn_rank_cpu(x, k1);
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
    const at::Tensor rank = knn_rank_cpu(x, k1);
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
