// Hard NMS by a suppression bitmask computed in bands of rows: the algorithm
// of the CUDA temporal_nms, written once for both backends so that its host
// side (sorting, band planning, the greedy sweep, max_keep) also runs, and is
// tested, on the CPU (the private op stovtal::_temporal_nms_banded).
//
// Candidates are sorted by descending score (ties: lower index). Word (i, cb)
// of the mask holds, in bit c, whether sorted candidate i suppresses sorted
// candidate j = 64 * cb + c > i (same label and IoU > threshold). A full mask
// is N x ceil(N / 64) words (116 GiB at N = 1e6), so it is never stored
// whole: rows are taken in bands of about `band_bytes` of words. Row i only
// needs the words cb >= i / 64, so a band starting at row r0 (a multiple of
// 64) has width ceil(N / 64) - r0 / 64 words per row. Before a band is
// computed, the rows that earlier bands removed are dropped (their rows can
// no longer suppress anything), the band's remaining rows are computed and
// copied to the host, and the greedy sweep over them ORs each kept row into
// the `removed` bits. The sweep stops as soon as max_keep candidates are kept,
// so later bands are never computed. Memory: one band on the device and its
// copy on the host, plus O(N) for the sorted candidates.
#pragma once

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <c10/util/Optional.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "../common/macros.h"
#include "../segment_iou/segment_iou.h"
#include "nms.h"
#include "nms_common.h"

namespace stovtal {

constexpr int64_t kNmsMaskBits = 64;
// Default band: about 1 GiB of mask words.
constexpr int64_t kNmsBandBytes = int64_t(1) << 30;
// At most this many rows per band (the CUDA grid's y dimension: 65535 blocks
// of 64 rows).
constexpr int64_t kNmsMaxBandRows = int64_t(65535) * kNmsMaskBits;

// Whether kept candidate (s1, e1) suppresses candidate (s2, e2); l* are the
// lengths (segment_length). The IoU is symmetric bit for bit.
template <typename T>
STOVTAL_HOST_DEVICE STOVTAL_INLINE bool nms_pair_suppresses(T s1, T e1, T l1, T s2, T e2, T l2,
                                                            T iou_threshold) {
  return nms_suppresses(segment_iou_with_lengths(s1, e1, l1, s2, e2, l2), iou_threshold);
}

// Rows [row0, row0 + rows) of the mask, `width` words per row starting at
// word col_block0 = row0 / 64.
struct NmsBand {
  int64_t row0;
  int64_t rows;
  int64_t col_block0;
  int64_t width;
};

// The band starting at row0 (a multiple of 64): as many whole 64-row blocks
// as fit in band_bytes (at least one, at most kNmsMaxBandRows rows).
inline NmsBand nms_band(int64_t n, int64_t row0, int64_t band_bytes) {
  const int64_t col_blocks = (n + kNmsMaskBits - 1) / kNmsMaskBits;
  NmsBand b;
  b.row0 = row0;
  b.col_block0 = row0 / kNmsMaskBits;
  b.width = col_blocks - b.col_block0;
  const int64_t row_bytes = b.width * static_cast<int64_t>(sizeof(uint64_t));
  int64_t rows = band_bytes / row_bytes / kNmsMaskBits * kNmsMaskBits;
  rows = std::min(std::max(rows, kNmsMaskBits), kNmsMaxBandRows);
  b.rows = std::min(rows, n - row0);
  return b;
}

// The sorted candidates on the op's device, in the accumulation type
// (float32 for the half types).
struct NmsSorted {
  at::Tensor order;   // int64 [N]: sorted position -> input index
  at::Tensor start;   // [N]
  at::Tensor end;     // [N]
  at::Tensor labels;  // int64 [N], or undefined without labels
};

// Value checks with one host synchronisation: scores without NaN (and finite
// when `finite_scores`), segments finite.
inline void check_nms_values(const at::Tensor& segments, const at::Tensor& scores,
                             bool finite_scores, const char* op) {
  const at::Tensor flags =
      at::stack({scores.isnan().any(), scores.isfinite().logical_not().any(),
                 segments.isfinite().logical_not().any()})
          .cpu();
  const bool* f = flags.const_data_ptr<bool>();
  TORCH_CHECK(!f[0], op, ": scores must not contain NaN");
  TORCH_CHECK(!finite_scores || !f[1], op, ": scores must be finite");
  TORCH_CHECK(!f[2], op, ": segments must be finite");
}

inline NmsSorted nms_sort(const at::Tensor& segments, const at::Tensor& scores,
                          const std::optional<at::Tensor>& labels) {
  NmsSorted c;
  // Descending score, ties by lower index (stable sort).
  c.order = std::get<1>(scores.sort(/*stable=*/true, /*dim=*/0, /*descending=*/true));
  const auto acc_type = at::toOpMathType(segments.scalar_type());
  const at::Tensor sorted = segments.index_select(0, c.order).to(acc_type);
  c.start = sorted.select(1, 0).contiguous();
  c.end = sorted.select(1, 1).contiguous();
  if (labels.has_value()) c.labels = labels->to(at::kLong).index_select(0, c.order).contiguous();
  return c;
}

// The greedy sweep over the bands. `compute(c, rows, band)` returns the mask
// words of the given sorted rows (ascending, all in the band) as a CPU int64
// tensor [rows.size(), band.width]. Returns the kept sorted positions.
template <typename Compute>
std::vector<int64_t> nms_banded_keep(const NmsSorted& c, int64_t max_keep, int64_t band_bytes,
                                     const Compute& compute) {
  const int64_t n = c.order.size(0);
  const int64_t col_blocks = (n + kNmsMaskBits - 1) / kNmsMaskBits;
  std::vector<uint64_t> removed(col_blocks, 0);
  const auto is_removed = [&](int64_t i) {
    return (removed[i / kNmsMaskBits] >> (i % kNmsMaskBits)) & 1u;
  };
  std::vector<int64_t> keep;
  std::vector<int64_t> rows;
  for (int64_t row0 = 0; row0 < n;) {
    const NmsBand band = nms_band(n, row0, band_bytes);
    rows.clear();
    for (int64_t i = row0; i < row0 + band.rows; ++i) {
      if (!is_removed(i)) rows.push_back(i);
    }
    if (!rows.empty()) {
      const at::Tensor words = compute(c, rows, band);
      const auto* pw = reinterpret_cast<const uint64_t*>(words.const_data_ptr<int64_t>());
      for (size_t r = 0; r < rows.size(); ++r) {
        const int64_t i = rows[r];
        if (is_removed(i)) continue;
        keep.push_back(i);
        if (max_keep > 0 && static_cast<int64_t>(keep.size()) >= max_keep) return keep;
        const uint64_t* row = pw + static_cast<int64_t>(r) * band.width;
        for (int64_t w = i / kNmsMaskBits - band.col_block0; w < band.width; ++w) {
          removed[band.col_block0 + w] |= row[w];
        }
      }
    }
    row0 += band.rows;
  }
  return keep;
}

// temporal_nms by banded masks on any device: checks, sort, sweep, and the
// kept input indices in selection order (on the inputs' device).
template <typename Compute>
at::Tensor temporal_nms_banded(const at::Tensor& segments, const at::Tensor& scores,
                               double iou_threshold, const std::optional<at::Tensor>& labels,
                               int64_t max_keep, int64_t band_bytes, const char* op,
                               const Compute& compute) {
  check_nms_inputs(segments, scores, labels, op);
  check_iou_threshold(iou_threshold, op);
  TORCH_CHECK(band_bytes > 0, op, ": band_bytes must be > 0, got ", band_bytes);
  const int64_t n = segments.size(0);
  if (n == 0) return at::empty({0}, segments.options().dtype(at::kLong));
  check_nms_values(segments, scores, /*finite_scores=*/false, op);
  const NmsSorted c = nms_sort(segments, scores, labels);
  const std::vector<int64_t> keep = nms_banded_keep(c, max_keep, band_bytes, compute);
  at::Tensor keep_cpu = at::empty({static_cast<int64_t>(keep.size())}, at::dtype(at::kLong));
  std::copy(keep.begin(), keep.end(), keep_cpu.mutable_data_ptr<int64_t>());
  return c.order.index_select(0, keep_cpu.to(c.order.device()));
}

}  // namespace stovtal
