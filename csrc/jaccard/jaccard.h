// Per-row math of the k-reciprocal Jaccard distance (SpCL's
// compute_jaccard_distance), shared by the CPU and CUDA kernels.
//
// Every function works on one row of a "set" (one [N, D] feature matrix of a
// possibly batched input). Neighbour and column indices are local to the set
// (0..N-1); the caller passes pointers already offset to the set's base.
// All arithmetic is in double, whatever the feature dtype.
//
// Determinism: squared distances are computed per pair in a fixed order, so
// identical rows give bitwise identical distances and ranking ties go to the
// lower index; sparse rows are kept sorted by column, so the min-sum of a
// pair is accumulated in increasing column order from either side (the
// distance matrix is exactly symmetric).
#pragma once

#include <cmath>
#include <cstdint>

#include "../common/macros.h"

namespace stovtal {
namespace jaccard {

// numpy.around(k1 / 2) (round half to even): k1 = 5 -> 2, 20 -> 10, 3 -> 2, 1 -> 0.
STOVTAL_HOST_DEVICE STOVTAL_INLINE int64_t half_k(int64_t k1) {
  if (k1 % 2 == 0) return k1 / 2;
  const int64_t lo = (k1 - 1) / 2;
  return (lo % 2 == 0) ? lo : lo + 1;
}

template <typename T>
STOVTAL_HOST_DEVICE STOVTAL_INLINE double squared_distance(const T* a, const T* b, int64_t dim) {
  double acc = 0;
  for (int64_t k = 0; k < dim; ++k) {
    const double t = static_cast<double>(a[k]) - static_cast<double>(b[k]);
    acc += t * t;
  }
  return acc;
}

template <typename T>
STOVTAL_HOST_DEVICE STOVTAL_INLINE double dot(const T* a, const T* b, int64_t dim) {
  double acc = 0;
  for (int64_t k = 0; k < dim; ++k) acc += static_cast<double>(a[k]) * static_cast<double>(b[k]);
  return acc;
}

// (d, j) lexicographic order: smaller distance first, ties to the lower index.
STOVTAL_HOST_DEVICE STOVTAL_INLINE bool rank_less(double d1, int64_t j1, double d2, int64_t j2) {
  return d1 < d2 || (d1 == d2 && j1 < j2);
}

// Exact k1 nearest neighbours of row `i` among `kc` candidate rows: sorted by
// (exact squared distance, index). Writes indices to out_idx[0..k1) and their
// distances to out_dist[0..k1) (scratch for the insertion). Needs kc >= k1.
template <typename T>
STOVTAL_HOST_DEVICE void rerank_row(const T* feats, int64_t dim, int64_t i, const int64_t* cand,
                                    int64_t kc, int64_t k1, int64_t* out_idx, double* out_dist) {
  const T* xi = feats + i * dim;
  int64_t count = 0;
  for (int64_t c = 0; c < kc; ++c) {
    const int64_t j = cand[c];
    const double d = squared_distance(xi, feats + j * dim, dim);
    if (count == k1 && !rank_less(d, j, out_dist[k1 - 1], out_idx[k1 - 1])) continue;
    int64_t p = count < k1 ? count++ : k1 - 1;
    while (p > 0 && rank_less(d, j, out_dist[p - 1], out_idx[p - 1])) {
      out_dist[p] = out_dist[p - 1];
      out_idx[p] = out_idx[p - 1];
      --p;
    }
    out_dist[p] = d;
    out_idx[p] = j;
  }
}

// R(i, k): the members j of rank[i, :k+1] (in rank order) with i in
// rank[j, :k+1]; `rank` is [N, k1] so at most k1 columns are looked at.
// Writes them to out and returns how many there are.
STOVTAL_HOST_DEVICE STOVTAL_INLINE int32_t reciprocal_row(const int64_t* rank, int64_t k1, int64_t i,
                                                          int64_t k, int32_t* out) {
  const int64_t cols = k + 1 < k1 ? k + 1 : k1;
  const int64_t* ri = rank + i * k1;
  int32_t n = 0;
  for (int64_t p = 0; p < cols; ++p) {
    const int64_t j = ri[p];
    const int64_t* rj = rank + j * k1;
    for (int64_t q = 0; q < cols; ++q) {
      if (rj[q] == i) {
        out[n++] = static_cast<int32_t>(j);
        break;
      }
    }
  }
  return n;
}

// Whether candidate c's half set h (size nh) expands i's set r (size nr):
// |h ∩ r| > 2/3 |h|, with the same double comparison as the Python original.
STOVTAL_HOST_DEVICE STOVTAL_INLINE bool expands(const int32_t* r, int32_t nr, const int32_t* h,
                                                int32_t nh) {
  int32_t inter = 0;
  for (int32_t a = 0; a < nh; ++a) {
    for (int32_t b = 0; b < nr; ++b) {
      if (h[a] == r[b]) {
        ++inter;
        break;
      }
    }
  }
  return static_cast<double>(inter) > (2.0 / 3.0) * static_cast<double>(nh);
}

// Upper bound of |E(i)| (before deduplication): |R(i)| plus the sizes of the
// half sets that expand it. `rf`/`rfc`: R(., k1) rows of width k1 and counts;
// `rh`/`rhc`: R_half rows of width hw and counts.
STOVTAL_HOST_DEVICE STOVTAL_INLINE int64_t expansion_bound(int64_t i, const int32_t* rf,
                                                           const int32_t* rfc, int64_t k1,
                                                           const int32_t* rh, const int32_t* rhc,
                                                           int64_t hw) {
  const int32_t* r = rf + i * k1;
  const int32_t nr = rfc[i];
  int64_t bound = nr;
  for (int32_t a = 0; a < nr; ++a) {
    const int32_t c = r[a];
    if (expands(r, nr, rh + c * hw, rhc[c])) bound += rhc[c];
  }
  return bound;
}

// Appends x to cols[0..len) unless present; returns the new length.
STOVTAL_HOST_DEVICE STOVTAL_INLINE int64_t append_unique(int32_t* cols, int64_t len, int32_t x) {
  for (int64_t q = 0; q < len; ++q) {
    if (cols[q] == x) return len;
  }
  cols[len] = x;
  return len + 1;
}

// Row i of V: E(i) = R(i, k1) plus every expanding R_half(c), c in R(i, k1),
// deduplicated and sorted by column, with weights softmax(-(2 - 2 <f_i, f_j>)).
// Writes columns/weights to cols/vals (room for expansion_bound entries) and
// returns |E(i)|.
template <typename T>
STOVTAL_HOST_DEVICE int64_t expansion_fill(const T* feats, int64_t dim, int64_t i,
                                           const int32_t* rf, const int32_t* rfc, int64_t k1,
                                           const int32_t* rh, const int32_t* rhc, int64_t hw,
                                           int32_t* cols, double* vals) {
  const int32_t* r = rf + i * k1;
  const int32_t nr = rfc[i];
  int64_t len = 0;
  for (int32_t a = 0; a < nr; ++a) len = append_unique(cols, len, r[a]);
  for (int32_t a = 0; a < nr; ++a) {
    const int32_t c = r[a];
    const int32_t* h = rh + c * hw;
    if (!expands(r, nr, h, rhc[c])) continue;
    for (int32_t b = 0; b < rhc[c]; ++b) len = append_unique(cols, len, h[b]);
  }
  for (int64_t p = 1; p < len; ++p) {  // insertion sort: rows are short
    const int32_t x = cols[p];
    int64_t q = p;
    while (q > 0 && cols[q - 1] > x) {
      cols[q] = cols[q - 1];
      --q;
    }
    cols[q] = x;
  }
  if (len == 0) return 0;
  const T* xi = feats + i * dim;
  double mx = 0;
  for (int64_t q = 0; q < len; ++q) {
    vals[q] = -(2.0 - 2.0 * dot(xi, feats + static_cast<int64_t>(cols[q]) * dim, dim));
    if (q == 0 || vals[q] > mx) mx = vals[q];
  }
  double sum = 0;
  for (int64_t q = 0; q < len; ++q) {
    vals[q] = exp(vals[q] - mx);
    sum += vals[q];
  }
  for (int64_t q = 0; q < len; ++q) vals[q] /= sum;
  return len;
}

// Upper bound of the local-query-expansion row of i: the summed lengths of the
// rows rank[i, :k2].
STOVTAL_HOST_DEVICE STOVTAL_INLINE int64_t query_expansion_bound(const int64_t* rank, int64_t k1,
                                                                 int64_t k2, int64_t i,
                                                                 const int64_t* len) {
  int64_t bound = 0;
  for (int64_t r = 0; r < k2; ++r) bound += len[rank[i * k1 + r]];
  return bound;
}

// Local query expansion: row i of V_qe = mean of the rows rank[i, :k2] of V,
// by a k2-way merge of their sorted columns (summed in rank order, divided by
// k2). `start`/`len` locate V's rows in cols/vals; `cursor` is scratch of k2.
// Writes sorted columns/values to out_cols/out_vals; returns the length.
STOVTAL_HOST_DEVICE STOVTAL_INLINE int64_t query_expansion_fill(
    const int64_t* rank, int64_t k1, int64_t k2, int64_t i, const int64_t* start,
    const int64_t* len, const int32_t* cols, const double* vals, int64_t* cursor,
    int32_t* out_cols, double* out_vals) {
  const int64_t* ri = rank + i * k1;
  for (int64_t r = 0; r < k2; ++r) cursor[r] = 0;
  int64_t n = 0;
  while (true) {
    bool any = false;
    int32_t best = 0;
    for (int64_t r = 0; r < k2; ++r) {
      const int64_t row = ri[r];
      if (cursor[r] < len[row]) {
        const int32_t c = cols[start[row] + cursor[r]];
        if (!any || c < best) best = c;
        any = true;
      }
    }
    if (!any) break;
    double s = 0;
    for (int64_t r = 0; r < k2; ++r) {
      const int64_t row = ri[r];
      if (cursor[r] < len[row] && cols[start[row] + cursor[r]] == best) {
        s += vals[start[row] + cursor[r]];
        ++cursor[r];
      }
    }
    out_cols[n] = best;
    out_vals[n] = s / static_cast<double>(k2);
    ++n;
  }
  return n;
}

// s(a, b) = sum_l min(V[a, l], V[b, l]) over two rows sorted by column,
// accumulated in increasing column order (the same order as the inverted-index
// accumulation of the CPU kernel, so both give bitwise the same sum).
STOVTAL_HOST_DEVICE STOVTAL_INLINE double min_sum_merge(const int32_t* ca, const double* va,
                                                        int64_t na, const int32_t* cb,
                                                        const double* vb, int64_t nb) {
  double s = 0;
  int64_t a = 0, b = 0;
  while (a < na && b < nb) {
    if (ca[a] < cb[b]) {
      ++a;
    } else if (cb[b] < ca[a]) {
      ++b;
    } else {
      s += va[a] < vb[b] ? va[a] : vb[b];
      ++a;
      ++b;
    }
  }
  return s;
}

STOVTAL_HOST_DEVICE STOVTAL_INLINE double min_of(double a, double b) { return a < b ? a : b; }

// Jaccard distance from the min-sum s (rows of V sum to 1, so the max-sum is
// 2 - s), clamped at 0.
STOVTAL_HOST_DEVICE STOVTAL_INLINE double distance_from_min_sum(double s) {
  const double d = 1.0 - s / (2.0 - s);
  return d < 0 ? 0.0 : d;
}

}  // namespace jaccard
}  // namespace stovtal
