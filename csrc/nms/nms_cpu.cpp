// CPU kernels of temporal_nms and soft_nms.
//
// Segments are intervals on a line, so a selected segment can only suppress,
// decay or vote with the candidates that overlap it. Both kernels keep the
// candidates of a label in an IntervalIndex (below) and visit, for each
// selection, only the candidates whose start lies in a window around it:
// the work is O(N log N) plus the pairs visited, not O(N x K). They evaluate
// exactly the same IoU, weight and comparison on every pair that can matter
// as a scan over all pairs would, so the selections and scores are the same
// bits. With labels the candidates are grouped by label first (a segment
// only affects its own label) and the groups run in parallel.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <numeric>
#include <queue>
#include <tuple>
#include <utility>
#include <vector>

#include "nms.h"
#include "nms_common.h"
#include "nms_heap.h"
#include "nms_simd.h"
#include "nms_sort.h"

namespace stovtal {
namespace {

// Below this many candidates the label groups run serially (thread start-up
// would cost more than the work).
constexpr int64_t kParallelMinCandidates = 1024;

template <typename F>
void for_each_group(int64_t num_groups, int64_t n, const F& fn) {
  if (num_groups > 1 && n >= kParallelMinCandidates) {
    at::parallel_for(0, num_groups, 1, [&](int64_t begin, int64_t end) {
      for (int64_t g = begin; g < end; ++g) fn(g);
    });
  } else {
    for (int64_t g = 0; g < num_groups; ++g) fn(g);
  }
}

// Candidates of one call in structure-of-arrays form, in processing order
// `order` (a permutation of the input indices), plus group boundaries: group g
// is positions [group_begin[g], group_begin[g + 1]).
template <typename acc_t>
struct Candidates {
  std::vector<int64_t> order;
  std::vector<acc_t> start, end, length, score;
  std::vector<int64_t> group_begin;
};

// Copies inputs to acc_t arrays and checks their values: NaN scores are an
// error (and non-finite ones too when `finite_scores`), and so are non-finite
// coordinates.
template <typename scalar_t, typename acc_t>
void load_values(const at::Tensor& segments, const at::Tensor& scores, bool finite_scores,
                 const char* op, std::vector<acc_t>& start, std::vector<acc_t>& end,
                 std::vector<acc_t>& score) {
  const int64_t n = segments.size(0);
  const scalar_t* ps = segments.const_data_ptr<scalar_t>();
  const scalar_t* pc = scores.const_data_ptr<scalar_t>();
  start.resize(n);
  end.resize(n);
  score.resize(n);
  for (int64_t i = 0; i < n; ++i) {
    start[i] = static_cast<acc_t>(ps[2 * i]);
    end[i] = static_cast<acc_t>(ps[2 * i + 1]);
    score[i] = static_cast<acc_t>(pc[i]);
    TORCH_CHECK(!std::isnan(score[i]), op, ": scores must not contain NaN (index ", i, ")");
    TORCH_CHECK(!finite_scores || std::isfinite(score[i]), op,
                ": scores must be finite (index ", i, " is ", score[i], ")");
    TORCH_CHECK(std::isfinite(start[i]) && std::isfinite(end[i]), op,
                ": segments must be finite (index ", i, " is [", start[i], ", ", end[i], "])");
  }
}

// Lays out the SoA arrays in processing order `order` (a permutation of the
// input indices, grouped by label when `labels` is given); groups are maximal
// runs of equal labels (one group without labels).
template <typename acc_t>
Candidates<acc_t> arrange(const std::vector<acc_t>& start, const std::vector<acc_t>& end,
                          const std::vector<acc_t>& score, const int64_t* labels,
                          std::vector<int64_t> order) {
  const int64_t n = static_cast<int64_t>(start.size());
  Candidates<acc_t> c;
  c.order = std::move(order);
  c.start.resize(n);
  c.end.resize(n);
  c.length.resize(n);
  c.score.resize(n);
  c.group_begin.push_back(0);
  for (int64_t p = 0; p < n; ++p) {
    const int64_t i = c.order[p];
    c.start[p] = start[i];
    c.end[p] = end[i];
    c.length[p] = segment_length(start[i], end[i]);
    c.score[p] = score[i];
    if (labels != nullptr && p > 0 && labels[i] != labels[c.order[p - 1]]) c.group_begin.push_back(p);
  }
  c.group_begin.push_back(n);
  return c;
}

// The input indices 0..n-1 stably sorted by label (unchanged without labels).
std::vector<int64_t> label_order(int64_t n, const int64_t* labels) {
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), int64_t{0});
  if (labels != nullptr) {
    stable_radix_sort(order, [&](int64_t i) { return ascending_key(labels[i]); });
  }
  return order;
}

at::Tensor labels_as_int64(const std::optional<at::Tensor>& labels) {
  if (!labels.has_value()) return at::Tensor();
  return labels->to(at::kLong).contiguous();
}

// ---------------------------------------------------------------- interval index

// Groups of at most this many candidates use the scan forms (at most
// kScanMaxCandidates pairs per candidate, less than building an index costs).
constexpr int64_t kScanMaxCandidates = 128;
// Hard NMS compares candidates with the kept ones until this many are kept.
constexpr int64_t kScanMaxKept = 32;

// Relative margin on length ratios: a float IoU exceeds min(l1, l2) / max(l1, l2)
// by at most a few units of rounding (IoU <= ratio * (1 + 4u) with u <= 2^-24),
// so a pair whose length ratio is below threshold / (1 + kRatioMargin) cannot
// reach an IoU of `threshold`.
constexpr double kRatioMargin = 1e-5;

// The smallest length ratio a pair needs to reach IoU `threshold` (0: any).
// Below 1e-30 no ratio is excluded (it keeps the margin argument clear of
// subnormal IoUs).
inline double min_length_ratio(double threshold) {
  return threshold >= 1e-30 ? threshold / (1.0 + kRatioMargin) : 0.0;
}

// The first element of the ascending array [first, first + count) that is
// not below x (std::lower_bound), by a binary search whose steps are selects
// rather than branches.
template <typename T>
const T* first_not_below(const T* first, int64_t count, T x) {
  if (count <= 0) return first;
  while (count > 1) {
    const int64_t half = count / 2;
    first = first[half] < x ? first + half : first;
    count -= half;
  }
  return first + (*first < x ? 1 : 0);
}

// The biased exponent field of a positive finite float or double: lengths
// with the same field differ by less than a factor 2 (subnormals share 0).
template <typename T>
int32_t exponent_field(T x) {
  radix_key_t<T> bits;
  std::memcpy(&bits, &x, sizeof(bits));
  return static_cast<int32_t>(bits >> (std::is_same_v<T, float> ? 23 : 52));
}

// Classes with fewer slots than this have no start lookup table.
constexpr int64_t kTableMinSlots = 256;

// Candidates of one group whose length is positive and finite, as slots
// sorted by (length class, start): class = binary exponent of the length, so
// lengths within a class differ by less than a factor 2 (all subnormal
// lengths form one class). A query for the
// candidates of class c that overlap [bs, be] reads the slots whose start lies
// in [bs - reach_c, be), reach_c being just above the longest length of the
// class: an overlapping candidate has ke > bs and fl(ke - ks) <= lmax, hence
// ks > bs - reach_c in exact arithmetic, hence ks >= fl(bs - reach_c) as
// rounding is monotone. Zero-length candidates have IoU 0 with everything and
// are not indexed. Slots die (alive = 0) as candidates are selected or removed;
// a class is compacted once its dead slots outnumber the live ones, so a query
// reads O(live slots in its window) and the compactions cost O(N) in all.
template <typename acc_t>
struct IntervalIndex {
  struct Class {
    int64_t begin = 0, count = 0, dead = 0;
    acc_t lmin = 0, lmax = 0, reach = 0;
    // Start lookup table (see window_begin): buckets [table, table + buckets)
    // of `bucket`, at most `capacity` of them; bucket k holds the first slot
    // whose start is >= t0 + k * width.
    int64_t table = 0, capacity = 0, buckets = 0;
    double t0 = 0, width = 0, inv_width = 0;
  };
  std::vector<int64_t> bucket;
  std::vector<acc_t> s, e, l, score;  // per slot
  std::vector<int64_t> pos;           // per slot: position in the group
  std::vector<uint8_t> alive;         // per slot
  std::vector<int64_t> slot_of;       // per live position: its slot, -1 if not indexed
  std::vector<int32_t> class_of;      // per position: its class, -1 if not indexed
  std::vector<Class> classes;

  // `score` may be null (then the score slots are not filled).
  IntervalIndex(const acc_t* start, const acc_t* end, const acc_t* length, const acc_t* sc,
                int64_t n) {
    slot_of.assign(n, -1);
    class_of.assign(n, -1);
    // Positions with positive finite length, sorted by (class, start,
    // position): two stable sorts of the ascending positions.
    std::vector<int64_t> keyed;
    std::vector<int32_t> exponent_of(n);
    keyed.reserve(n);
    for (int64_t p = 0; p < n; ++p) {
      if (length[p] > acc_t(0) && std::isfinite(length[p])) {
        exponent_of[p] = exponent_field(length[p]);
        keyed.push_back(p);
      }
    }
    stable_radix_sort(keyed, [&](int64_t p) { return ascending_key(start[p]); });
    stable_radix_sort(keyed, [&](int64_t p) {
      return static_cast<uint32_t>(exponent_of[p]);
    });
    const int64_t m = static_cast<int64_t>(keyed.size());
    s.resize(m);
    e.resize(m);
    l.resize(m);
    pos.resize(m);
    alive.assign(m, 1);
    if (sc != nullptr) score.resize(m);
    for (int64_t i = 0; i < m; ++i) {
      const int64_t p = keyed[i];
      s[i] = start[p];
      e[i] = end[p];
      l[i] = length[p];
      pos[i] = p;
      if (sc != nullptr) score[i] = sc[p];
      slot_of[p] = i;
      if (i == 0 || exponent_of[p] != exponent_of[keyed[i - 1]]) {
        classes.emplace_back();
        classes.back().begin = i;
        classes.back().lmin = l[i];
        classes.back().lmax = l[i];
      }
      Class& c = classes.back();
      class_of[p] = static_cast<int32_t>(classes.size()) - 1;
      ++c.count;
      c.lmin = std::min(c.lmin, l[i]);
      c.lmax = std::max(c.lmax, l[i]);
    }
    int64_t table_size = 0;
    for (Class& c : classes) {
      c.reach = std::nextafter(c.lmax, std::numeric_limits<acc_t>::infinity());
      c.table = table_size;
      c.capacity = c.count;
      table_size += c.capacity;
    }
    bucket.resize(table_size);
    for (Class& c : classes) build_table(c);
  }

  // Bucket k's lower bound on starts (the same expression for building and
  // reading the table).
  static double bucket_start(const Class& c, int64_t k) {
    return c.t0 + static_cast<double>(k) * c.width;
  }

  // Splits the starts of class c, [t0, last start], into equal buckets (one
  // per slot) and records each bucket's first slot. Small classes are left
  // to the binary search.
  void build_table(Class& c) {
    c.buckets = 0;
    if (c.count < kTableMinSlots) return;
    c.t0 = static_cast<double>(s[c.begin]);
    const int64_t nb = std::min(c.capacity, c.count);
    c.width = (static_cast<double>(s[c.begin + c.count - 1]) - c.t0) / static_cast<double>(nb);
    if (!(c.width > 0) || !std::isfinite(c.width)) return;  // one start: binary search
    c.inv_width = 1.0 / c.width;
    int64_t i = c.begin;
    const int64_t stop = c.begin + c.count;
    for (int64_t k = 0; k < nb; ++k) {
      const double lower = bucket_start(c, k);
      while (i < stop && static_cast<double>(s[i]) < lower) ++i;
      bucket[c.table + k] = i;
    }
    c.buckets = nb;
  }

  // The lengths whose ratio to `length` is >= `ratio`: [lo, hi] (all when
  // ratio <= 0).
  struct LengthRange {
    bool all;
    double lo, hi;
  };
  static LengthRange length_range(acc_t length, double ratio) {
    const double len = static_cast<double>(length);
    return ratio <= 0 ? LengthRange{true, 0, 0} : LengthRange{false, len * ratio, len / ratio};
  }

  // Whether class c can hold a length in range r.
  static bool compatible(const Class& c, const LengthRange& r) {
    return r.all || (static_cast<double>(c.lmax) >= r.lo && static_cast<double>(c.lmin) <= r.hi);
  }

  // First slot of class c whose start is >= x = fl(bs - reach). With a
  // table: k is the bucket with bucket_start(k) <= x < bucket_start(k + 1)
  // (estimated from (x - t0) / width, then corrected with the exact bucket
  // starts), so every slot before bucket[k] starts below x and bucket[k + 1]
  // starts above it; a binary search between them finishes.
  int64_t window_begin(const Class& c, acc_t bs) const {
    const acc_t x = static_cast<acc_t>(bs - c.reach);
    if (c.buckets == 0) return first_not_below(s.data() + c.begin, c.count, x) - s.data();
    const double xd = static_cast<double>(x);
    if (!(xd > c.t0)) return c.begin;  // every start is >= t0 >= x
    const double estimate = (xd - c.t0) * c.inv_width;
    int64_t k = estimate >= static_cast<double>(c.buckets - 1) ? c.buckets - 1 : static_cast<int64_t>(estimate);
    while (k > 0 && bucket_start(c, k) > xd) --k;
    while (k + 1 < c.buckets && bucket_start(c, k + 1) <= xd) ++k;
    const int64_t lo = bucket[c.table + k];
    const int64_t hi = k + 1 < c.buckets ? bucket[c.table + k + 1] : c.begin + c.count;
    return first_not_below(s.data() + lo, hi - lo, x) - s.data();
  }

  // Slots [first, last) of class c whose start is in [bs - reach, be).
  std::pair<int64_t, int64_t> window(const Class& c, acc_t bs, acc_t be) const {
    const acc_t* a = s.data() + window_begin(c, bs);
    const acc_t* b = first_not_below(a, c.begin + c.count - (a - s.data()), be);
    return {a - s.data(), b - s.data()};
  }

  void kill(int64_t slot, Class& c) {
    alive[slot] = 0;
    ++c.dead;
  }

  // Drops the dead slots of class c (keeping the start order) once they
  // outnumber the live ones.
  void maybe_compact(Class& c) {
    if (c.dead * 2 <= c.count || c.dead < 16) return;
    int64_t w = c.begin;
    for (int64_t i = c.begin; i < c.begin + c.count; ++i) {
      if (!alive[i]) {
        slot_of[pos[i]] = -1;
        continue;
      }
      if (w != i) {
        s[w] = s[i];
        e[w] = e[i];
        l[w] = l[i];
        pos[w] = pos[i];
        alive[w] = 1;
        if (!score.empty()) score[w] = score[i];
        slot_of[pos[w]] = w;
      }
      ++w;
    }
    c.count = w - c.begin;
    c.dead = 0;
    build_table(c);
  }
};

// ---------------------------------------------------------------- hard NMS

// Greedy hard NMS of one group of m candidates in processing order (start,
// end, length arrays): writes the positions of the kept ones to `kept` in
// selection order and returns their number (at most max_keep when > 0).
//
// Scan form: each candidate against every kept one. Used for a negative
// threshold (every pair suppresses, so one segment is kept unless an IoU is
// NaN) and for groups with a length that overflows to inf.
template <typename acc_t>
int64_t hard_nms_group_scan(const acc_t* s, const acc_t* e, const acc_t* l, int64_t m, acc_t thr,
                            int64_t max_keep, int64_t* kept) {
  int64_t nk = 0;
  for (int64_t p = 0; p < m; ++p) {
    bool suppressed = false;
    for (int64_t q = 0; q < nk && !suppressed; ++q) {
      const int64_t k = kept[q];
      suppressed = nms_suppresses(segment_iou_with_lengths(s[p], e[p], l[p], s[k], e[k], l[k]), thr);
    }
    if (suppressed) continue;
    kept[nk++] = p;
    // The first max_keep of a group are all that can reach the overall top max_keep.
    if (max_keep > 0 && nk >= max_keep) break;
  }
  return nk;
}

#ifdef STOVTAL_NMS_AVX512
// Scan form with the comparisons against the kept ones 16 at a time (float32,
// threshold >= 0, finite lengths): the same kept set as hard_nms_group_scan.
inline int64_t hard_nms_group_scan_avx512(const float* s, const float* e, const float* l, int64_t m,
                                          float thr, int64_t max_keep, int64_t* kept) {
  std::vector<float> ks(m), ke(m), kl(m);  // the kept segments, in selection order
  int64_t nk = 0;
  for (int64_t p = 0; p < m; ++p) {
    if (any_suppresses_avx512(ks.data(), ke.data(), kl.data(), nk, s[p], e[p], l[p], thr)) continue;
    ks[nk] = s[p];
    ke[nk] = e[p];
    kl[nk] = l[p];
    kept[nk++] = p;
    if (max_keep > 0 && nk >= max_keep) break;
  }
  return nk;
}
#endif

// Groups of at most this many candidates use the AVX-512 scan form where it
// is available (O(m x kept) comparisons, 16 per step, cheaper than the
// index there).
constexpr int64_t kSimdScanMaxCandidates = 1024;

// Indexed form (threshold >= 0, finite lengths): a kept candidate removes the
// later candidates it suppresses, found through the IntervalIndex among those
// that overlap it and whose length is within the ratio an IoU above the
// threshold needs. A pair that is not visited has IoU 0 or a length ratio
// that keeps its IoU below the threshold, so the kept set is the scan's.
template <typename acc_t>
int64_t hard_nms_group_indexed(const acc_t* s, const acc_t* e, const acc_t* l, int64_t m,
                               acc_t thr, int64_t max_keep, int64_t* kept) {
  // While few are kept, comparing each candidate with the kept ones is the
  // cheaper form (clustered candidates often stop here); the index is built
  // over the candidates not yet visited once kScanMaxKept are kept.
  int64_t nk = 0;
  int64_t p0 = 0;
  for (; p0 < m && nk < kScanMaxKept; ++p0) {
    bool suppressed = false;
    for (int64_t q = 0; q < nk && !suppressed; ++q) {
      const int64_t k = kept[q];
      suppressed = nms_suppresses(segment_iou_with_lengths(s[p0], e[p0], l[p0], s[k], e[k], l[k]), thr);
    }
    if (suppressed) continue;
    kept[nk++] = p0;
    if (max_keep > 0 && nk >= max_keep) return nk;
  }
  if (p0 >= m) return nk;
  IntervalIndex<acc_t> index(s + p0, e + p0, l + p0, nullptr, m - p0);
  const double ratio = min_length_ratio(static_cast<double>(thr));
  std::vector<uint8_t> removed(m - p0, 0);
  // Removes the indexed candidates that the kept one at position k suppresses.
  const auto suppress = [&](int64_t k) {
    const acc_t bs = s[k], be = e[k], bl = l[k];
    if (!(bl > acc_t(0))) return;  // zero length: IoU 0 with everything
    const auto range = index.length_range(bl, ratio);
    for (auto& cls : index.classes) {
      if (!index.compatible(cls, range)) continue;
      const acc_t* ws = index.s.data();
      const acc_t* we = index.e.data();
      const acc_t* wl = index.l.data();
      uint8_t* alive = index.alive.data();
      int64_t killed = 0;
      const int64_t stop = cls.begin + cls.count;
      for (int64_t i = index.window_begin(cls, bs); i < stop && ws[i] < be; ++i) {
        const bool hit =
            alive[i] && nms_suppresses(segment_iou_with_lengths(ws[i], we[i], wl[i], bs, be, bl), thr);
        if (hit) {
          alive[i] = 0;
          removed[index.pos[i]] = 1;
          ++killed;
        }
      }
      cls.dead += killed;
      index.maybe_compact(cls);
    }
  };
  for (int64_t q = 0; q < nk; ++q) suppress(kept[q]);
  for (int64_t p = p0; p < m; ++p) {
    if (removed[p - p0]) continue;
    kept[nk++] = p;
    if (max_keep > 0 && nk >= max_keep) break;
    const int64_t slot = index.slot_of[p - p0];
    if (slot < 0) continue;  // zero length: never indexed, suppresses nothing
    index.kill(slot, index.classes[index.class_of[p - p0]]);
    suppress(p);
  }
  return nk;
}

template <typename scalar_t>
at::Tensor temporal_nms_cpu_typed(const at::Tensor& segments, const at::Tensor& scores,
                                  const int64_t* labels, double iou_threshold_d,
                                  int64_t max_keep) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t n = segments.size(0);
  std::vector<acc_t> start, end, score;
  load_values<scalar_t, acc_t>(segments, scores, /*finite_scores=*/false, "temporal_nms", start,
                               end, score);
  // By label, then descending score, ties by lower index.
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), int64_t{0});
  stable_radix_sort(order, [&](int64_t i) { return ~ascending_key(score[i]); });
  std::vector<int64_t> by_score;  // the output order, across labels
  if (labels != nullptr) {
    by_score = order;
    stable_radix_sort(order, [&](int64_t i) { return ascending_key(labels[i]); });
  }
  Candidates<acc_t> c = arrange(start, end, score, labels, std::move(order));
  const acc_t thr = static_cast<acc_t>(iou_threshold_d);
  const int64_t num_groups = static_cast<int64_t>(c.group_begin.size()) - 1;

  // Kept segments of group g are stored, as positions in c, in
  // kept_pos[group_begin[g], ...) in selection order.
  std::vector<int64_t> kept_pos(n);
  std::vector<int64_t> kept_count(num_groups, 0);
  const bool simd = std::is_same_v<acc_t, float> && nms_use_avx512();
  for_each_group(num_groups, n, [&](int64_t g) {
    const int64_t g0 = c.group_begin[g];
    const int64_t m = c.group_begin[g + 1] - g0;
    const acc_t* s = c.start.data() + g0;
    const acc_t* e = c.end.data() + g0;
    const acc_t* l = c.length.data() + g0;
    int64_t* kept_local = kept_pos.data() + g0;
    const bool overflow = std::any_of(l, l + m, [](acc_t x) { return !std::isfinite(x); });
    bool done = false;
#ifdef STOVTAL_NMS_AVX512
    if constexpr (std::is_same_v<acc_t, float>) {
      if (simd && thr >= acc_t(0) && !overflow && m <= kSimdScanMaxCandidates) {
        kept_count[g] = hard_nms_group_scan_avx512(s, e, l, m, thr, max_keep, kept_local);
        done = true;
      }
    }
#endif
    if (!done) {
      kept_count[g] = (thr < acc_t(0) || overflow || m <= kScanMaxCandidates)
                          ? hard_nms_group_scan(s, e, l, m, thr, max_keep, kept_local)
                          : hard_nms_group_indexed(s, e, l, m, thr, max_keep, kept_local);
    }
    for (int64_t q = 0; q < kept_count[g]; ++q) kept_local[q] += g0;
  });

  std::vector<int64_t> kept;
  kept.reserve(n);
  if (num_groups == 1) {
    for (int64_t q = 0; q < kept_count[0]; ++q) kept.push_back(c.order[kept_pos[q]]);
  } else {  // the kept ones of every group, in by_score's order
    std::vector<uint8_t> is_kept(n, 0);
    for (int64_t g = 0; g < num_groups; ++g) {
      for (int64_t q = 0; q < kept_count[g]; ++q) is_kept[c.order[kept_pos[c.group_begin[g] + q]]] = 1;
    }
    for (const int64_t i : by_score) {
      if (is_kept[i]) kept.push_back(i);
    }
  }
  int64_t k = static_cast<int64_t>(kept.size());
  if (max_keep > 0) k = std::min(k, max_keep);
  at::Tensor out = at::empty({k}, segments.options().dtype(at::kLong));
  std::copy(kept.begin(), kept.begin() + k, out.mutable_data_ptr<int64_t>());
  return out;
}

at::Tensor temporal_nms_cpu(const at::Tensor& segments_in, const at::Tensor& scores_in,
                            double iou_threshold, const std::optional<at::Tensor>& labels_in,
                            int64_t max_keep) {
  const char* op = "temporal_nms";
  check_nms_inputs(segments_in, scores_in, labels_in, op);
  check_device(segments_in, c10::DeviceType::CPU, op, "segments");
  check_iou_threshold(iou_threshold, op);
  const at::Tensor segments = segments_in.contiguous();
  const at::Tensor scores = scores_in.contiguous();
  const at::Tensor labels = labels_as_int64(labels_in);
  const int64_t* pl = labels.defined() ? labels.const_data_ptr<int64_t>() : nullptr;
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, segments.scalar_type(), "temporal_nms_cpu", [&] {
    out = temporal_nms_cpu_typed<scalar_t>(segments, scores, pl, iou_threshold, max_keep);
  });
  return out;
}

// ---------------------------------------------------------------- soft-NMS

template <typename acc_t>
struct SoftNmsParams {
  acc_t iou_threshold, sigma, min_score;
  int64_t method, max_keep;
};

// Soft-NMS of one group of m candidates in input order (start, end, length,
// original score): writes the positions of the selections and their scores at
// selection time, in selection order, and returns their number.
//
// Scan form: every selection decays and filters all remaining candidates and
// finds the next maximum in one pass over them (compacted in input order, so
// the first maximum is the lowest index). Used for groups with a length that
// overflows to inf, where IoUs can be NaN.
template <typename acc_t>
int64_t soft_nms_group_scan(const acc_t* start, const acc_t* end, const acc_t* length,
                            const acc_t* score, int64_t m, const SoftNmsParams<acc_t>& prm,
                            int64_t* sel_pos, acc_t* sel_score) {
  std::vector<acc_t> s(start, start + m), e(end, end + m), l(length, length + m), sc(score, score + m);
  std::vector<int64_t> pos(m);
  std::iota(pos.begin(), pos.end(), int64_t{0});
  int64_t best = 0;
  for (int64_t r = 1; r < m; ++r) {
    if (sc[r] > sc[best]) best = r;
  }
  int64_t count = 0;
  while (m > 0 && (prm.max_keep <= 0 || count < prm.max_keep)) {
    sel_pos[count] = pos[best];
    sel_score[count] = sc[best];
    ++count;
    const acc_t bs = s[best], be = e[best], bl = l[best];
    int64_t w = 0;
    int64_t next = -1;
    for (int64_t r = 0; r < m; ++r) {
      if (r == best) continue;
      acc_t new_score = sc[r];
      if (std::min(be, e[r]) - std::max(bs, s[r]) > acc_t(0)) {
        const acc_t iou = segment_iou_with_lengths(bs, be, bl, s[r], e[r], l[r]);
        new_score *= soft_nms_weight(iou, prm.iou_threshold, prm.sigma, prm.method);
      }
      if (new_score < prm.min_score) continue;
      s[w] = s[r];
      e[w] = e[r];
      l[w] = l[r];
      pos[w] = pos[r];
      sc[w] = new_score;
      if (next < 0 || new_score > sc[next]) next = w;
      ++w;
    }
    m = w;
    best = next;
  }
  return count;
}

// Indexed form (finite lengths), the same selections and scores bit for bit:
// - the next selection comes from a lazy max-heap of (score, position)
//   entries ordered as score_before (ties: lower position = lower index). An
//   entry holds an upper bound of its candidate's current score: a decay
//   that lowers a score leaves the entry as it is, and a popped entry whose
//   score is stale is pushed again with the current one (a decay that raises
//   a score, i.e. a negative score times a weight < 1, pushes at once). The
//   first valid entry popped is therefore the scan's maximum.
// - a selection decays the live candidates that overlap it (a disjoint one
//   has weight exactly 1), found through the IntervalIndex; the linear
//   method also skips the classes whose length ratio keeps the IoU below its
//   threshold (weight 1 there too). Each decayed score is the scan's product
//   score * soft_nms_weight(iou) with the same IoU.
// - min_score: after the first selection every other candidate below it is
//   dropped, as the scan's first pass does; later only decayed scores change
//   and each is checked when it decays.
template <typename acc_t>
int64_t soft_nms_group_indexed(const acc_t* start, const acc_t* end, const acc_t* length,
                               const acc_t* score, int64_t m, const SoftNmsParams<acc_t>& prm,
                               int64_t* sel_pos, acc_t* sel_score) {
  IntervalIndex<acc_t> index(start, end, length, score, m);
  const double ratio =
      prm.method == kSoftNmsLinear ? min_length_ratio(static_cast<double>(prm.iou_threshold)) : 0.0;
  std::vector<uint8_t> live(m, 1);
  // Current score of a live candidate (zero-length ones keep their original).
  const auto current = [&](int64_t p) {
    const int64_t slot = index.slot_of[p];
    return slot >= 0 ? index.score[slot] : score[p];
  };
  using Heap = ScoreHeap<acc_t>;
  TORCH_CHECK(static_cast<uint64_t>(m) < Heap::kPosMask, "soft_nms: too many candidates of one label (",
              m, ")");
  std::vector<typename Heap::Key> keys(m);
  for (int64_t p = 0; p < m; ++p) keys[p] = Heap::pack(score[p], p);
  Heap heap(std::move(keys));
  const auto drop = [&](int64_t p) {
    live[p] = 0;
    const int64_t slot = index.slot_of[p];
    if (slot >= 0) index.kill(slot, index.classes[index.class_of[p]]);
  };

  // Hits of one selection (at most one per slot): slot, IoU, weight.
  const int64_t slots = static_cast<int64_t>(index.s.size());
  std::vector<int32_t> hit_slot(slots);
  std::vector<acc_t> hit_iou(slots), hit_weight(slots);
  // The AVX-512 loops (float32; slot indices in int32) give the scalar bits.
  bool simd = false;
  if constexpr (std::is_same_v<acc_t, float>) {
    simd = slots < std::numeric_limits<int32_t>::max() && nms_use_avx512();
  }
  int64_t count = 0;
  while (prm.max_keep <= 0 || count < prm.max_keep) {
    int64_t best = -1;
    while (!heap.empty()) {
      const auto top = heap.top();
      const int64_t p = Heap::pos_of(top);
      if (!live[p]) {
        heap.pop();
        continue;
      }
      const auto now = ascending_key(current(p));
      const auto queued = Heap::score_key(top);
      if (now == queued) {  // the same score (-0 and +0 share a key, as they compare equal)
        best = p;
        heap.pop();
        break;
      }
      if (now < queued) {
        heap.replace_top(Heap::pack(current(p), p));  // stale: queue it with its current score
      } else {
        heap.pop();  // a higher entry of it is queued
      }
    }
    if (best < 0) break;
    sel_pos[count] = best;
    sel_score[count] = current(best);
    ++count;
    const int64_t best_slot = index.slot_of[best];
    drop(best);
    if (best_slot >= 0) {
      const acc_t bs = start[best], be = end[best], bl = length[best];
      // Three passes so that the weights (the costly part) are computed in a
      // loop of independent iterations: the overlapping live slots of every
      // class and their IoUs, their weights, then the decay.
      int64_t hits = 0;
      const auto range = index.length_range(bl, ratio);
      for (const auto& cls : index.classes) {
        if (!index.compatible(cls, range)) continue;
        const int64_t first = index.window_begin(cls, bs);
        const int64_t stop = cls.begin + cls.count;
#ifdef STOVTAL_NMS_AVX512
        if constexpr (std::is_same_v<acc_t, float>) {
          if (simd) {
            hits += overlapping_slots_avx512(index.s.data(), index.e.data(), index.l.data(),
                                             index.alive.data(), first, stop, bs, be, bl,
                                             hit_slot.data() + hits, hit_iou.data() + hits);
            continue;
          }
        }
#endif
        for (int64_t i = first; i < stop && index.s[i] < be; ++i) {
          if (!index.alive[i]) continue;
          const acc_t rs = index.s[i], re = index.e[i];
          if (!(std::min(be, re) - std::max(bs, rs) > acc_t(0))) continue;
          hit_slot[hits] = static_cast<int32_t>(i);
          hit_iou[hits] = segment_iou_with_lengths(bs, be, bl, rs, re, index.l[i]);
          ++hits;
        }
      }
      if (prm.method == kSoftNmsGaussian) {
        const acc_t sigma = prm.sigma;
        const acc_t* iou = hit_iou.data();
        acc_t* weight = hit_weight.data();
#ifdef STOVTAL_NMS_AVX512
        if constexpr (std::is_same_v<acc_t, float>) {
          if (simd) gaussian_weights_avx512(iou, hits, sigma, weight);
        }
#endif
        for (int64_t h = 0; h < hits && !simd; ++h) {
          // = soft_nms_weight (a hit has inter > 0, so iou > 0 unless it underflows)
          weight[h] = iou[h] > acc_t(0) ? gaussian_weight(iou[h], sigma) : acc_t(1);
        }
      } else {
        for (int64_t h = 0; h < hits; ++h) {
          hit_weight[h] = soft_nms_weight(hit_iou[h], prm.iou_threshold, prm.sigma, prm.method);
        }
      }
      bool any_drop = false;
      for (int64_t h = 0; h < hits; ++h) {
        const int64_t i = hit_slot[h];
        const acc_t old_score = index.score[i];
        const acc_t new_score = old_score * hit_weight[h];
        if (new_score < prm.min_score) {
          const int64_t p = index.pos[i];
          live[p] = 0;
          index.kill(i, index.classes[index.class_of[p]]);
          any_drop = true;
          continue;
        }
        index.score[i] = new_score;
        if (new_score > old_score) heap.push(Heap::pack(new_score, index.pos[i]));
      }
      if (any_drop) {
        for (auto& cls : index.classes) index.maybe_compact(cls);
      } else {
        index.maybe_compact(index.classes[index.class_of[best]]);
      }
    }
    if (count == 1) {
      for (int64_t p = 0; p < m; ++p) {
        if (live[p] && current(p) < prm.min_score) drop(p);
      }
      for (auto& cls : index.classes) index.maybe_compact(cls);
    }
  }
  return count;
}

template <typename scalar_t>
std::tuple<at::Tensor, at::Tensor, at::Tensor> soft_nms_cpu_typed(
    const at::Tensor& segments, const at::Tensor& scores, const int64_t* labels,
    double iou_threshold_d, double sigma_d, double min_score_d, int64_t method, int64_t max_keep,
    std::optional<double> voting_threshold) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t n = segments.size(0);
  std::vector<acc_t> start, end, score;
  load_values<scalar_t, acc_t>(segments, scores, /*finite_scores=*/true, "soft_nms", start, end,
                               score);
  // Group by label, input order within a group: the running max-score search
  // then breaks ties towards the lower index by keeping the first maximum.
  const Candidates<acc_t> c = arrange(start, end, score, labels, label_order(n, labels));
  const acc_t thr = static_cast<acc_t>(iou_threshold_d);
  const acc_t sigma = static_cast<acc_t>(sigma_d);
  const acc_t min_score = static_cast<acc_t>(min_score_d);
  const int64_t num_groups = static_cast<int64_t>(c.group_begin.size()) - 1;

  // Per-group selections: position in c and score at selection time, group g
  // in [group_begin[g], ...).
  std::vector<int64_t> sel_pos(n);
  std::vector<acc_t> sel_score(n);
  std::vector<int64_t> sel_count(num_groups, 0);
  const SoftNmsParams<acc_t> params{thr, sigma, min_score, method, max_keep};
  for_each_group(num_groups, n, [&](int64_t g) {
    const int64_t g0 = c.group_begin[g];
    const int64_t m = c.group_begin[g + 1] - g0;
    const acc_t* l = c.length.data() + g0;
    const bool overflow = std::any_of(l, l + m, [](acc_t x) { return !std::isfinite(x); });
    const auto run = (overflow || m <= kScanMaxCandidates) ? soft_nms_group_scan<acc_t>
                                                            : soft_nms_group_indexed<acc_t>;
    sel_count[g] = run(c.start.data() + g0, c.end.data() + g0, l, c.score.data() + g0, m, params,
                       sel_pos.data() + g0, sel_score.data() + g0);
    for (int64_t q = 0; q < sel_count[g]; ++q) sel_pos[g0 + q] += g0;
  });

  // Merge the groups' selection sequences into the global selection order:
  // repeatedly the head with the highest score (ties: lower input index).
  int64_t total = 0;
  for (int64_t g = 0; g < num_groups; ++g) total += sel_count[g];
  if (max_keep > 0) total = std::min(total, max_keep);
  std::vector<int64_t> group_of(num_groups > 1 ? n : 0);  // position in c -> its group
  for (int64_t g = 0; num_groups > 1 && g < num_groups; ++g) {
    std::fill(group_of.begin() + c.group_begin[g], group_of.begin() + c.group_begin[g + 1], g);
  }
  std::vector<int64_t> merged(total);  // slots of the sel_* arrays
  if (num_groups == 1) {
    std::iota(merged.begin(), merged.end(), int64_t{0});
  } else {
    const auto later = [&](int64_t a, int64_t b) {  // heap of sel_* slots; top = first
      return score_before(sel_score[b], c.order[sel_pos[b]], sel_score[a], c.order[sel_pos[a]]);
    };
    std::priority_queue<int64_t, std::vector<int64_t>, decltype(later)> heads(later);
    std::vector<int64_t> next_in_group(num_groups);
    for (int64_t g = 0; g < num_groups; ++g) {
      next_in_group[g] = 1;
      if (sel_count[g] > 0) heads.push(c.group_begin[g]);
    }
    for (int64_t k = 0; k < total; ++k) {
      const int64_t slot = heads.top();
      heads.pop();
      merged[k] = slot;
      const int64_t g = group_of[slot];
      if (next_in_group[g] < sel_count[g]) heads.push(c.group_begin[g] + next_in_group[g]++);
    }
  }

  at::Tensor out_segments = at::empty({total, 2}, segments.options());
  at::Tensor out_scores = at::empty({total}, scores.options());
  at::Tensor out_indices = at::empty({total}, segments.options().dtype(at::kLong));
  scalar_t* po_seg = out_segments.mutable_data_ptr<scalar_t>();
  scalar_t* po_sc = out_scores.mutable_data_ptr<scalar_t>();
  int64_t* po_idx = out_indices.mutable_data_ptr<int64_t>();
  const bool vote = voting_threshold.has_value();
  const acc_t vthr = static_cast<acc_t>(vote ? *voting_threshold : 1.0);
  // Voting reads the original candidates of each group through an index of
  // its own (built once per group that has a selection).
  std::vector<std::unique_ptr<IntervalIndex<acc_t>>> vote_index(vote ? num_groups : 0);
  if (vote) {
    for_each_group(num_groups, n, [&](int64_t g) {
      if (sel_count[g] == 0) return;
      const int64_t g0 = c.group_begin[g];
      vote_index[g] = std::make_unique<IntervalIndex<acc_t>>(
          c.start.data() + g0, c.end.data() + g0, c.length.data() + g0, nullptr,
          c.group_begin[g + 1] - g0);
    });
  }
  const double vratio = min_length_ratio(static_cast<double>(vthr));
  const int64_t grain = vote ? 16 : total + 1;
  at::parallel_for(0, total, grain, [&](int64_t begin, int64_t end_k) {
    std::vector<std::pair<int64_t, acc_t>> voters;  // (position in the group, weight)
    for (int64_t k = begin; k < end_k; ++k) {
      const int64_t p = sel_pos[merged[k]];
      acc_t s = c.start[p], e = c.end[p];
      const acc_t l = c.length[p];
      if (vote && l > acc_t(0) && std::isfinite(l)) {
        // Weighted average of the original segments of the same label that
        // overlap the kept one by IoU >= voting_threshold (weights: score x
        // IoU), summed in input order. Only indexed candidates (positive,
        // finite length) can have a positive IoU with a finite-length one.
        const int64_t g = num_groups > 1 ? group_of[p] : 0;
        const int64_t g0 = c.group_begin[g];
        const IntervalIndex<acc_t>& index = *vote_index[g];
        voters.clear();
        const auto range = index.length_range(l, vratio);
        for (const auto& cls : index.classes) {
          if (!index.compatible(cls, range)) continue;
          const auto [first, last] = index.window(cls, s, e);
          for (int64_t i = first; i < last; ++i) {
            const acc_t iou = segment_iou_with_lengths(s, e, l, index.s[i], index.e[i], index.l[i]);
            const acc_t wgt = voting_weight(iou, c.score[g0 + index.pos[i]], vthr);
            if (wgt != acc_t(0)) voters.emplace_back(index.pos[i], wgt);
          }
        }
        std::sort(voters.begin(), voters.end(),
                  [](const auto& a, const auto& b) { return a.first < b.first; });
        acc_t sum_w = 0, sum_s = 0, sum_e = 0;
        for (const auto& [q, wgt] : voters) {
          sum_w += wgt;
          sum_s += wgt * c.start[g0 + q];
          sum_e += wgt * c.end[g0 + q];
        }
        if (sum_w > acc_t(0)) {
          s = sum_s / sum_w;
          e = sum_e / sum_w;
        }
      }
      po_seg[2 * k] = static_cast<scalar_t>(s);
      po_seg[2 * k + 1] = static_cast<scalar_t>(e);
      po_sc[k] = static_cast<scalar_t>(sel_score[merged[k]]);
      po_idx[k] = c.order[p];
    }
  });
  return {out_segments, out_scores, out_indices};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> soft_nms_cpu(
    const at::Tensor& segments_in, const at::Tensor& scores_in, double iou_threshold,
    double sigma, double min_score, int64_t method, const std::optional<at::Tensor>& labels_in,
    int64_t max_keep, std::optional<double> voting_threshold) {
  const char* op = "soft_nms";
  check_nms_inputs(segments_in, scores_in, labels_in, op);
  check_device(segments_in, c10::DeviceType::CPU, op, "segments");
  check_soft_nms_params(iou_threshold, sigma, min_score, method, voting_threshold);
  const at::Tensor segments = segments_in.contiguous();
  const at::Tensor scores = scores_in.contiguous();
  const at::Tensor labels = labels_as_int64(labels_in);
  const int64_t* pl = labels.defined() ? labels.const_data_ptr<int64_t>() : nullptr;
  std::tuple<at::Tensor, at::Tensor, at::Tensor> out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, segments.scalar_type(), "soft_nms_cpu", [&] {
    out = soft_nms_cpu_typed<scalar_t>(segments, scores, pl, iou_threshold, sigma, min_score,
                                       method, max_keep, voting_threshold);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(stovtal, CPU, m) {
  m.impl("temporal_nms", &temporal_nms_cpu);
  m.impl("soft_nms", &soft_nms_cpu);
}

}  // namespace stovtal
