// CPU kernel of the private op _temporal_nms_banded: the banded-mask hard NMS
// of the CUDA temporal_nms (nms_banded.h) with the mask words computed on the
// host, so that everything but the device kernel is tested without a GPU,
// with bands forced small. temporal_nms itself uses nms_cpu.cpp on the CPU.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <cstdint>
#include <vector>

#include "nms_banded.h"

namespace stovtal {
namespace {

// Words [rows.size(), band.width] of the given sorted rows (as the CUDA kernel
// writes them: words left of a row's own block are 0).
at::Tensor band_words_cpu(const NmsSorted& c, const std::vector<int64_t>& rows,
                          const NmsBand& band, double iou_threshold) {
  const int64_t n = c.order.size(0);
  const int64_t num_rows = static_cast<int64_t>(rows.size());
  at::Tensor words = at::zeros({num_rows, band.width}, at::dtype(at::kLong));
  auto* pw = reinterpret_cast<uint64_t*>(words.mutable_data_ptr<int64_t>());
  const int64_t* pl = c.labels.defined() ? c.labels.const_data_ptr<int64_t>() : nullptr;
  AT_DISPATCH_FLOATING_TYPES(c.start.scalar_type(), "temporal_nms_banded_cpu", [&] {
    const scalar_t* ps = c.start.const_data_ptr<scalar_t>();
    const scalar_t* pe = c.end.const_data_ptr<scalar_t>();
    const scalar_t thr = static_cast<scalar_t>(iou_threshold);
    for (int64_t r = 0; r < num_rows; ++r) {
      const int64_t i = rows[r];
      const scalar_t li = segment_length(ps[i], pe[i]);
      uint64_t* row = pw + r * band.width;
      for (int64_t j = i + 1; j < n; ++j) {
        if (pl != nullptr && pl[j] != pl[i]) continue;
        if (nms_pair_suppresses(ps[i], pe[i], li, ps[j], pe[j], segment_length(ps[j], pe[j]),
                                thr)) {
          row[j / kNmsMaskBits - band.col_block0] |= uint64_t(1) << (j % kNmsMaskBits);
        }
      }
    }
  });
  return words;
}

at::Tensor temporal_nms_banded_cpu(const at::Tensor& segments, const at::Tensor& scores,
                                   double iou_threshold, const std::optional<at::Tensor>& labels,
                                   int64_t max_keep, int64_t band_bytes) {
  const char* op = "_temporal_nms_banded";
  check_device(segments, c10::DeviceType::CPU, op, "segments");
  return temporal_nms_banded(
      segments, scores, iou_threshold, labels, max_keep, band_bytes, op,
      [&](const NmsSorted& c, const std::vector<int64_t>& rows, const NmsBand& band) {
        return band_words_cpu(c, rows, band, iou_threshold);
      });
}

}  // namespace

TORCH_LIBRARY_IMPL(stovtal, CPU, m) {
  m.impl("_temporal_nms_banded", &temporal_nms_banded_cpu);
}

}  // namespace stovtal
