// AVX-512 forms of inner loops of the CPU NMS kernels (float32 candidates),
// chosen at run time on CPUs that have AVX-512 F/BW/VL:
// - hard NMS of small groups: one candidate against the kept ones,
// - soft-NMS: the overlapping live slots of one class window and their IoUs,
// - soft-NMS: the gaussian weights of a batch of IoUs.
// Each lane performs the same IEEE operations, in the same order, as the
// scalar code in nms.h / segment_iou.h (min/max with the same operand order,
// separate multiplies and adds: fp-contract is off in these functions, so no
// fused multiply-add is formed), so the results are the same bits.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "nms.h"

#if defined(__GNUC__) && defined(__x86_64__)
#define STOVTAL_NMS_AVX512 1
#include <immintrin.h>
#define STOVTAL_NMS_AVX512_FN \
  __attribute__((target("avx512f,avx512bw,avx512vl"), optimize("fp-contract=off")))
#endif

namespace stovtal {

// Whether the AVX-512 loops may run: the CPU has AVX-512 F/BW/VL and
// STOVTAL_NMS_SIMD is not "0" (tests set it to compare both forms).
inline bool nms_use_avx512() {
#ifdef STOVTAL_NMS_AVX512
  const char* env = std::getenv("STOVTAL_NMS_SIMD");
  if (env != nullptr && std::strcmp(env, "0") == 0) return false;
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl");
#else
  return false;
#endif
}

#ifdef STOVTAL_NMS_AVX512

// GCC 12's intrinsics headers pass an uninitialised "undefined" vector as the
// unused source of unmasked AVX-512 operations, which -Wmaybe-uninitialized
// reports once they are inlined here.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

// Slots i in [first, stop) (ascending starts s[i]) with s[i] < be, alive[i]
// and min(be, e[i]) - max(bs, s[i]) > 0, in ascending order: their indices
// go to slot_out and their IoUs segment_iou_with_lengths(bs, be, bl, s[i],
// e[i], l[i]) to iou_out (room for stop - first entries). Returns their
// number. Slot indices must fit in int32.
STOVTAL_NMS_AVX512_FN inline int64_t overlapping_slots_avx512(
    const float* s, const float* e, const float* l, const uint8_t* alive, int64_t first,
    int64_t stop, float bs, float be, float bl, int32_t* slot_out, float* iou_out) {
  const __m512 vbs = _mm512_set1_ps(bs), vbe = _mm512_set1_ps(be), vbl = _mm512_set1_ps(bl);
  const __m512 zero = _mm512_setzero_ps();
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  int64_t count = 0;
  for (int64_t i = first; i < stop; i += 16) {
    const int64_t left = stop - i;
    const __mmask16 valid = left >= 16 ? __mmask16(0xffff) : __mmask16((1u << left) - 1);
    const __m512 vs = _mm512_maskz_loadu_ps(valid, s + i);
    const __mmask16 before_end = _mm512_mask_cmp_ps_mask(valid, vs, vbe, _CMP_LT_OQ);
    const __m128i live = _mm_maskz_loadu_epi8(valid, alive + i);
    const __mmask16 candidate = before_end & _mm_test_epi8_mask(live, live);
    if (candidate) {
      const __m512 ve = _mm512_maskz_loadu_ps(valid, e + i);
      const __m512 vl = _mm512_maskz_loadu_ps(valid, l + i);
      // segment_iou_with_lengths(bs, be, bl, s, e, l): hi = be < e ? be : e,
      // lo = bs > s ? bs : s (the operand order of vminps / vmaxps).
      const __m512 inter = _mm512_sub_ps(_mm512_min_ps(vbe, ve), _mm512_max_ps(vbs, vs));
      const __mmask16 hit = _mm512_mask_cmp_ps_mask(candidate, inter, zero, _CMP_GT_OQ);
      if (hit) {
        const __m512 uni = _mm512_sub_ps(_mm512_add_ps(vbl, vl), inter);
        const __m512 ratio = _mm512_div_ps(inter, uni);
        const __mmask16 positive = _mm512_cmp_ps_mask(uni, zero, _CMP_GT_OQ);
        const __m512 iou = _mm512_mask_blend_ps(positive, zero, ratio);
        const __m512i idx = _mm512_add_epi32(lane, _mm512_set1_epi32(static_cast<int32_t>(i)));
        _mm512_mask_compressstoreu_epi32(slot_out + count, hit, idx);
        _mm512_mask_compressstoreu_ps(iou_out + count, hit, iou);
        count += __builtin_popcount(static_cast<unsigned>(hit));
      }
    }
    if (before_end != valid) break;  // starts ascend: the rest of the class starts at or after be
  }
  return count;
}

// Whether one of the n segments (ks, ke, kl: starts, ends, lengths) has
// segment_iou_with_lengths(s, e, l, ks[q], ke[q], kl[q]) > thr, for finite
// coordinates and thr >= 0 (where the scalar relu's -0 and this max's +0 give
// the same decision).
STOVTAL_NMS_AVX512_FN inline bool any_suppresses_avx512(const float* ks, const float* ke,
                                                        const float* kl, int64_t n, float s,
                                                        float e, float l, float thr) {
  const __m512 vs = _mm512_set1_ps(s), ve = _mm512_set1_ps(e), vl = _mm512_set1_ps(l);
  const __m512 vthr = _mm512_set1_ps(thr), zero = _mm512_setzero_ps();
  for (int64_t q = 0; q < n; q += 16) {
    const int64_t left = n - q;
    const __mmask16 valid = left >= 16 ? __mmask16(0xffff) : __mmask16((1u << left) - 1);
    const __m512 qs = _mm512_maskz_loadu_ps(valid, ks + q);
    const __m512 qe = _mm512_maskz_loadu_ps(valid, ke + q);
    const __m512 ql = _mm512_maskz_loadu_ps(valid, kl + q);
    // hi = e < qe ? e : qe, lo = s > qs ? s : qs, inter = max(hi - lo, 0)
    const __m512 inter =
        _mm512_max_ps(_mm512_sub_ps(_mm512_min_ps(ve, qe), _mm512_max_ps(vs, qs)), zero);
    const __m512 uni = _mm512_sub_ps(_mm512_add_ps(vl, ql), inter);
    const __m512 ratio = _mm512_div_ps(inter, uni);
    const __mmask16 positive = _mm512_mask_cmp_ps_mask(valid, uni, zero, _CMP_GT_OQ);
    if (_mm512_mask_cmp_ps_mask(positive, ratio, vthr, _CMP_GT_OQ)) return true;
  }
  return false;
}

// 2^k for normal exponents k (pow2_rn of nms.h, lane by lane).
STOVTAL_NMS_AVX512_FN inline __m512d pow2_avx512(__m512i k) {
  return _mm512_castsi512_pd(_mm512_slli_epi64(_mm512_add_epi64(k, _mm512_set1_epi64(1023)), 52));
}

// weight[h] = iou[h] > 0 ? gaussian_weight(iou[h], sigma) : 1 for h < n
// (the scalar formula of nms.h, lane by lane: exp_rn_core in double).
STOVTAL_NMS_AVX512_FN inline void gaussian_weights_avx512(const float* iou, int64_t n, float sigma,
                                                         float* weight) {
  constexpr double kInvLn2 = 1.4426950408889634;
  constexpr double kLn2Hi = 6.93147180369123816490e-01;
  constexpr double kLn2Lo = 1.90821492927058770002e-10;
  constexpr double kRound = 6755399441055744.0;
  constexpr double kInvFact[14] = {1.0,           1.0,           1.0 / 2,        1.0 / 6,
                                   1.0 / 24,      1.0 / 120,     1.0 / 720,      1.0 / 5040,
                                   1.0 / 40320,   1.0 / 362880,  1.0 / 3628800,  1.0 / 39916800,
                                   1.0 / 479001600, 1.0 / 6227020800};
  int64_t round_bits;
  std::memcpy(&round_bits, &kRound, sizeof(round_bits));
  const __m512d vsigma = _mm512_set1_pd(static_cast<double>(sigma));
  const __m512d floor_x = _mm512_set1_pd(-745.2);
  const __m512i sign = _mm512_set1_epi64(INT64_MIN);
  const __m256 zero_f = _mm256_setzero_ps(), one_f = _mm256_set1_ps(1.0f);
  for (int64_t h = 0; h < n; h += 8) {
    const int64_t left = n - h;
    const __mmask8 valid = left >= 8 ? __mmask8(0xff) : __mmask8((1u << left) - 1);
    const __m256 f = _mm256_maskz_loadu_ps(valid, iou + h);
    const __m512d v = _mm512_cvtps_pd(f);
    // x = -(v * v) / sigma
    const __m512d sq = _mm512_mul_pd(v, v);
    const __m512d neg = _mm512_castsi512_pd(_mm512_xor_si512(_mm512_castpd_si512(sq), sign));
    const __m512d x0 = _mm512_div_pd(neg, vsigma);
    const __mmask8 underflow = _mm512_cmp_pd_mask(x0, floor_x, _CMP_LT_OQ);
    const __m512d x = _mm512_mask_blend_pd(underflow, x0, floor_x);
    // exp_rn_core(x)
    const __m512d t = _mm512_add_pd(_mm512_mul_pd(x, _mm512_set1_pd(kInvLn2)), _mm512_set1_pd(kRound));
    const __m512d nn = _mm512_sub_pd(t, _mm512_set1_pd(kRound));
    const __m512d r = _mm512_sub_pd(_mm512_sub_pd(x, _mm512_mul_pd(nn, _mm512_set1_pd(kLn2Hi))),
                                    _mm512_mul_pd(nn, _mm512_set1_pd(kLn2Lo)));
    __m512d p = _mm512_set1_pd(kInvFact[13]);
    for (int k = 12; k >= 0; --k) p = _mm512_add_pd(_mm512_mul_pd(p, r), _mm512_set1_pd(kInvFact[k]));
    const __m512i ni = _mm512_sub_epi64(_mm512_castpd_si512(t), _mm512_set1_epi64(round_bits));
    const __m512i a = _mm512_sub_epi64(
        _mm512_srli_epi64(_mm512_add_epi64(ni, _mm512_set1_epi64(2048)), 1), _mm512_set1_epi64(1024));
    const __m512d w = _mm512_mul_pd(_mm512_mul_pd(p, pow2_avx512(a)), pow2_avx512(_mm512_sub_epi64(ni, a)));
    const __m512d w0 = _mm512_mask_blend_pd(underflow, w, _mm512_setzero_pd());
    const __m256 wf = _mm512_cvtpd_ps(w0);
    const __mmask8 positive = _mm256_cmp_ps_mask(f, zero_f, _CMP_GT_OQ);
    _mm256_mask_storeu_ps(weight + h, valid, _mm256_mask_blend_ps(positive, one_f, wf));
  }
}

#pragma GCC diagnostic pop

#endif  // STOVTAL_NMS_AVX512

}  // namespace stovtal
