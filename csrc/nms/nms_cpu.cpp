// CPU kernels of temporal_nms and soft_nms.
//
// Both work on structure-of-arrays copies of the candidates in processing
// order, so the inner loops stream through contiguous memory with
// precomputed lengths. With labels the candidates are grouped by label first:
// a segment can only affect segments of its own label, so each group is an
// independent (smaller) problem and groups run in parallel. All buffers are
// allocated once per call, none per candidate.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <queue>
#include <tuple>
#include <vector>

#include "nms.h"
#include "nms_common.h"

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

// Sorts candidate indices with `before` and lays out the SoA arrays in that
// order; groups are maximal runs of equal labels (one group without labels).
template <typename acc_t, typename Before>
Candidates<acc_t> arrange(const std::vector<acc_t>& start, const std::vector<acc_t>& end,
                          const std::vector<acc_t>& score, const int64_t* labels,
                          const Before& before) {
  const int64_t n = static_cast<int64_t>(start.size());
  Candidates<acc_t> c;
  c.order.resize(n);
  std::iota(c.order.begin(), c.order.end(), int64_t{0});
  std::sort(c.order.begin(), c.order.end(), before);
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

at::Tensor labels_as_int64(const std::optional<at::Tensor>& labels) {
  if (!labels.has_value()) return at::Tensor();
  return labels->to(at::kLong).contiguous();
}

// ---------------------------------------------------------------- hard NMS

template <typename scalar_t>
at::Tensor temporal_nms_cpu_typed(const at::Tensor& segments, const at::Tensor& scores,
                                  const int64_t* labels, double iou_threshold_d,
                                  int64_t max_keep) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t n = segments.size(0);
  std::vector<acc_t> start, end, score;
  load_values<scalar_t, acc_t>(segments, scores, /*finite_scores=*/false, "temporal_nms", start,
                               end, score);
  // Within a label: descending score, ties by lower index.
  const auto before = [&](int64_t a, int64_t b) {
    if (labels != nullptr && labels[a] != labels[b]) return labels[a] < labels[b];
    return score_before(score[a], a, score[b], b);
  };
  Candidates<acc_t> c = arrange(start, end, score, labels, before);
  const acc_t thr = static_cast<acc_t>(iou_threshold_d);
  const int64_t num_groups = static_cast<int64_t>(c.group_begin.size()) - 1;

  // Kept segments of group g are stored in [group_begin[g], ...) of these, in
  // selection order; a candidate is compared with the kept ones only.
  std::vector<acc_t> ks(n), ke(n), kl(n);
  std::vector<int64_t> kept_pos(n);
  std::vector<int64_t> kept_count(num_groups, 0);
  for_each_group(num_groups, n, [&](int64_t g) {
    const int64_t g0 = c.group_begin[g];
    const int64_t g1 = c.group_begin[g + 1];
    int64_t nk = 0;
    for (int64_t p = g0; p < g1; ++p) {
      const acc_t s = c.start[p], e = c.end[p], l = c.length[p];
      bool suppressed = false;
      for (int64_t q = g0; q < g0 + nk; ++q) {
        if (nms_suppresses(segment_iou_with_lengths(s, e, l, ks[q], ke[q], kl[q]), thr)) {
          suppressed = true;
          break;
        }
      }
      if (suppressed) continue;
      ks[g0 + nk] = s;
      ke[g0 + nk] = e;
      kl[g0 + nk] = l;
      kept_pos[g0 + nk] = p;
      ++nk;
      // The first max_keep of a group are all that can reach the overall top max_keep.
      if (max_keep > 0 && nk >= max_keep) break;
    }
    kept_count[g] = nk;
  });

  std::vector<int64_t> kept;
  kept.reserve(n);
  for (int64_t g = 0; g < num_groups; ++g) {
    for (int64_t q = 0; q < kept_count[g]; ++q) kept.push_back(c.order[kept_pos[c.group_begin[g] + q]]);
  }
  if (num_groups > 1) {
    std::sort(kept.begin(), kept.end(),
              [&](int64_t a, int64_t b) { return score_before(score[a], a, score[b], b); });
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
  const auto before = [&](int64_t a, int64_t b) {
    if (labels != nullptr && labels[a] != labels[b]) return labels[a] < labels[b];
    return a < b;
  };
  const Candidates<acc_t> c = arrange(start, end, score, labels, before);
  const acc_t thr = static_cast<acc_t>(iou_threshold_d);
  const acc_t sigma = static_cast<acc_t>(sigma_d);
  const acc_t min_score = static_cast<acc_t>(min_score_d);
  const int64_t num_groups = static_cast<int64_t>(c.group_begin.size()) - 1;

  // Working copies (the remaining candidates of group g are compacted in
  // place in its slice) and per-group selections (position in c, score).
  std::vector<acc_t> ws = c.start, we = c.end, wl = c.length, wc = c.score;
  std::vector<int64_t> wp(n);
  std::iota(wp.begin(), wp.end(), int64_t{0});
  std::vector<int64_t> sel_pos(n);
  std::vector<acc_t> sel_score(n);
  std::vector<int64_t> sel_count(num_groups, 0);
  for_each_group(num_groups, n, [&](int64_t g) {
    const int64_t g0 = c.group_begin[g];
    int64_t m = c.group_begin[g + 1] - g0;  // remaining candidates, at [g0, g0 + m)
    acc_t* s = ws.data() + g0;
    acc_t* e = we.data() + g0;
    acc_t* l = wl.data() + g0;
    acc_t* sc = wc.data() + g0;
    int64_t* pos = wp.data() + g0;
    int64_t best = 0;
    for (int64_t r = 1; r < m; ++r) {
      if (sc[r] > sc[best]) best = r;
    }
    int64_t count = 0;
    while (m > 0 && (max_keep <= 0 || count < max_keep)) {
      sel_pos[g0 + count] = pos[best];
      sel_score[g0 + count] = sc[best];
      ++count;
      const acc_t bs = s[best], be = e[best], bl = l[best];
      // Decay, drop below min_score, compact (keeping input order) and find
      // the next maximum, all in one pass.
      int64_t w = 0;
      int64_t next = -1;
      for (int64_t r = 0; r < m; ++r) {
        if (r == best) continue;
        acc_t new_score = sc[r];
        // Disjoint segments (most pairs) have IoU 0 and weight exactly 1.
        if (std::min(be, e[r]) - std::max(bs, s[r]) > acc_t(0)) {
          const acc_t iou = segment_iou_with_lengths(bs, be, bl, s[r], e[r], l[r]);
          new_score *= soft_nms_weight(iou, thr, sigma, method);
        }
        if (new_score < min_score) continue;
        if (w != r) {
          s[w] = s[r];
          e[w] = e[r];
          l[w] = l[r];
          pos[w] = pos[r];
        }
        sc[w] = new_score;
        if (next < 0 || new_score > sc[next]) next = w;
        ++w;
      }
      m = w;
      best = next;
    }
    sel_count[g] = count;
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
  const int64_t grain = vote ? std::max<int64_t>(1, 16384 / std::max<int64_t>(n, 1)) : total + 1;
  at::parallel_for(0, total, grain, [&](int64_t begin, int64_t end_k) {
    for (int64_t k = begin; k < end_k; ++k) {
      const int64_t p = sel_pos[merged[k]];
      acc_t s = c.start[p], e = c.end[p];
      if (vote) {
        // Weighted average of the original segments of the same label that
        // overlap the kept one by IoU >= voting_threshold (weights: scores).
        const int64_t g = num_groups > 1 ? group_of[p] : 0;
        const acc_t l = c.length[p];
        acc_t sum_w = 0, sum_s = 0, sum_e = 0;
        for (int64_t q = c.group_begin[g]; q < c.group_begin[g + 1]; ++q) {
          const acc_t iou = segment_iou_with_lengths(s, e, l, c.start[q], c.end[q], c.length[q]);
          const acc_t wgt = voting_weight(iou, c.score[q], vthr);
          sum_w += wgt;
          sum_s += wgt * c.start[q];
          sum_e += wgt * c.end[q];
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
