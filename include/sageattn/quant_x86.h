// x86 SIMD quantizer kernels (256-bit AVX2 + F16C), written once and compiled into
// every x86 kernel TU that includes this header (csrc/kernels/avx2/quantize_avx2.cc,
// csrc/kernels/avx512/quantize_avx512.cc). Everything here has internal linkage, so each
// TU keeps the copy built with its own target flags.
//
// Bit-exactness with the scalar kernels (quantize_scalar.cc):
//  * bf16 -> f32 is a 16-bit shift, fp16 -> f32 is F16C; both exact. (F16C quiets an
//    fp16 signalling NaN where the scalar decoder keeps it signalling; every value that
//    leaves a kernel has been through an fp32 subtraction/division or the NaN-only
//    encoders, which quiet it identically, so outputs do not differ.)
//  * x - mean and x / scale are the same IEEE fp32 operations, in the same operand order
//    (which also fixes which NaN propagates).
//  * Rounding is the FPU's round-half-even (the default mode, which the library assumes
//    like the scalar code does): int8 rounds with the current mode as std::nearbyint
//    does; fp8 rounds by one fp32 addition (see fp8_codes).
//  * Row amax: lane-wise max is exact and order-free for numbers; a row holding a NaN
//    (whose result depends on which NaN came last) is recomputed by the scalar fold.
//  * Column amax uses the scalar step lane-wise: (|v| > acc || |v| != |v|) ? |v| : acc.
//  * Column sums add fp32->fp64 conversions in row order per column, like the scalar.
#pragma once

#if !defined(__AVX2__) || !defined(__F16C__)
#error "quant_x86.h must be compiled with -mavx2 -mf16c"
#endif

#include <immintrin.h>

#include <cstdint>

#include "sageattn/quant_common.h"
#include "sageattn/quant_ops.h"

namespace sageattn {
namespace quant_x86 {
namespace {

using namespace quant_detail;

// std::nearbyint: current rounding direction, no inexact exception.
constexpr int kRoundMode = _MM_FROUND_CUR_DIRECTION | _MM_FROUND_NO_EXC;

template <bool BF16>
inline __m256 load8(const uint16_t* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  if (BF16) return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  return _mm256_cvtph_ps(h);
}

inline __m256 abs8(__m256 v) {
  return _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF)));
}

// Horizontal max of NaN-free lanes (exact: max is order-free on numbers).
inline float hmax8(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

// Lane-wise amax_step: (a > acc || a != a) ? a : acc with a = |v|.
inline __m256 amax_step8(__m256 acc, __m256 v) {
  const __m256 a = abs8(v);
  const __m256 take = _mm256_or_ps(_mm256_cmp_ps(a, acc, _CMP_GT_OQ), _mm256_cmp_ps(a, a, _CMP_UNORD_Q));
  return _mm256_blendv_ps(acc, a, take);
}

// to_int8_code as int32 lanes: clamp(RNE(y), -127, 127), except that NaN lanes come out
// as INT32_MIN (max/min return their second operand for NaN, and the conversion gives
// the "integer indefinite"), which the byte narrowing saturates to -128 and
// fix_int8_nan() turns into 0. No valid code is -128, so the marker is unambiguous.
inline __m256i int8_codes(__m256 y) {
  const __m256 r = _mm256_round_ps(y, kRoundMode);
  const __m256 c = _mm256_min_ps(_mm256_set1_ps(127.0f), _mm256_max_ps(_mm256_set1_ps(-127.0f), r));
  return _mm256_cvtps_epi32(c);
}

template <typename V>
inline V fix_int8_nan(V b);
template <>
inline __m256i fix_int8_nan(__m256i b) {
  return _mm256_andnot_si256(_mm256_cmpeq_epi8(b, _mm256_set1_epi8(-128)), b);
}
template <>
inline __m128i fix_int8_nan(__m128i b) {
  return _mm_andnot_si128(_mm_cmpeq_epi8(b, _mm_set1_epi8(-128)), b);
}

// f32_to_fp8_e4m3 (numeric.h), lane-wise, as int32 lanes in [0, 255].
// One path for the normal and the subnormal range: with E = max(exponent(|y|), -6),
// adding C = 2^(E + 20) puts the fp8 grid step 2^(E - 3) at the ulp of the sum, so the
// FPU's round-half-even leaves m = bits(|y| + C) - bits(C), the magnitude in grid
// steps (m in [8, 16] for normals, [0, 8] for subnormals; an even m is an even code).
// The code is then (E + 6) * 8 + m; a carry to m = 16 moves on to the next exponent.
// |y| >= 448 (inf included) is clamped to 448 first (code 0x7E); NaN gives 0x7F.
inline __m256i fp8_codes(__m256 y) {
  const __m256i u = _mm256_castps_si256(y);
  const __m256i sign = _mm256_and_si256(_mm256_srli_epi32(u, 24), _mm256_set1_epi32(0x80));
  const __m256i a = _mm256_and_si256(u, _mm256_set1_epi32(0x7FFFFFFF));
  const __m256i is_nan = _mm256_cmpgt_epi32(a, _mm256_set1_epi32(0x7F800000));
  const __m256i ac = _mm256_min_epi32(a, _mm256_set1_epi32(0x43E00000));  // 448
  const __m256i eb = _mm256_max_epi32(_mm256_and_si256(ac, _mm256_set1_epi32(0x7F800000)),
                                      _mm256_set1_epi32(0x3C800000));  // 2^max(E, -6)
  const __m256i c = _mm256_add_epi32(eb, _mm256_set1_epi32(20 << 23));
  const __m256 sum = _mm256_add_ps(_mm256_castsi256_ps(ac), _mm256_castsi256_ps(c));
  const __m256i m = _mm256_sub_epi32(_mm256_castps_si256(sum), c);
  // (E + 6) * 8 = (eb >> 20) - (121 << 3).
  __m256i code = _mm256_add_epi32(_mm256_sub_epi32(_mm256_srli_epi32(eb, 20), _mm256_set1_epi32(968)), m);
  code = _mm256_blendv_epi8(code, _mm256_set1_epi32(0x7F), is_nan);
  return _mm256_or_si256(code, sign);
}

// Narrow int32 lanes to bytes: fp8 lanes are in [0, 255]; int8 lanes in [-127, 127] or
// the NaN marker (see int8_codes).
template <bool SIGNED>
inline void store8(uint8_t* dst, __m256i v) {
  const __m128i lo = _mm256_castsi256_si128(v), hi = _mm256_extracti128_si256(v, 1);
  const __m128i w = SIGNED ? _mm_packs_epi32(lo, hi) : _mm_packus_epi32(lo, hi);
  const __m128i b = SIGNED ? fix_int8_nan(_mm_packs_epi16(w, w)) : _mm_packus_epi16(w, w);
  _mm_storel_epi64(reinterpret_cast<__m128i*>(dst), b);
}

template <bool SIGNED>
inline void store32(uint8_t* dst, __m256i v0, __m256i v1, __m256i v2, __m256i v3) {
  const __m256i w01 = SIGNED ? _mm256_packs_epi32(v0, v1) : _mm256_packus_epi32(v0, v1);
  const __m256i w23 = SIGNED ? _mm256_packs_epi32(v2, v3) : _mm256_packus_epi32(v2, v3);
  const __m256i b = SIGNED ? fix_int8_nan(_mm256_packs_epi16(w01, w23)) : _mm256_packus_epi16(w01, w23);
  // b holds 4-byte groups v0[0:4] v1[0:4] v2[0:4] v3[0:4] v0[4:8] v1[4:8] v2[4:8] v3[4:8].
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), _mm256_permutevar8x32_epi32(b, order));
}

// ---------------------------------------------------------------------------------
// row_amax

template <bool BF16, bool MEAN>
void row_amax_t(const uint16_t* x, int64_t rs, int64_t rows, int64_t d, const float* mean,
                float* amax) {
  for (int64_t r = 0; r < rows; ++r) {
    const uint16_t* p = x + r * rs;
    __m256 m0 = _mm256_setzero_ps(), m1 = _mm256_setzero_ps(), bad = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= d; i += 16) {
      __m256 v0 = load8<BF16>(p + i), v1 = load8<BF16>(p + i + 8);
      if (MEAN) {
        v0 = _mm256_sub_ps(v0, _mm256_loadu_ps(mean + i));
        v1 = _mm256_sub_ps(v1, _mm256_loadu_ps(mean + i + 8));
      }
      v0 = abs8(v0);
      v1 = abs8(v1);
      m0 = _mm256_max_ps(m0, v0);
      m1 = _mm256_max_ps(m1, v1);
      bad = _mm256_or_ps(bad, _mm256_cmp_ps(v0, v1, _CMP_UNORD_Q));
    }
    for (; i + 8 <= d; i += 8) {
      __m256 v = load8<BF16>(p + i);
      if (MEAN) v = _mm256_sub_ps(v, _mm256_loadu_ps(mean + i));
      v = abs8(v);
      m0 = _mm256_max_ps(m0, v);
      bad = _mm256_or_ps(bad, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    }
    float acc = hmax8(_mm256_max_ps(m0, m1));
    for (; i < d; ++i) {
      const float v = half_to_f32(p[i], BF16);
      acc = amax_step(acc, MEAN ? v - mean[i] : v);
    }
    if (_mm256_movemask_ps(bad) != 0 || acc != acc) {
      acc = row_amax_scalar(p, d, BF16, MEAN ? mean : nullptr);
    }
    amax[r] = acc;
  }
}

void row_amax(const uint16_t* x, int64_t rs, int64_t rows, int64_t d, bool bf16, const float* mean,
              float* amax) {
  if (bf16) {
    mean ? row_amax_t<true, true>(x, rs, rows, d, mean, amax)
         : row_amax_t<true, false>(x, rs, rows, d, mean, amax);
  } else {
    mean ? row_amax_t<false, true>(x, rs, rows, d, mean, amax)
         : row_amax_t<false, false>(x, rs, rows, d, mean, amax);
  }
}

// ---------------------------------------------------------------------------------
// encode_rows

template <bool BF16, bool MEAN, bool INT8>
void encode_rows_t(const uint16_t* x, int64_t rs, int64_t rows, int64_t d, const float* mean,
                   const float* row_scale, uint8_t* codes, int64_t cs) {
  for (int64_t r = 0; r < rows; ++r) {
    const uint16_t* p = x + r * rs;
    uint8_t* out = codes + r * cs;
    const float scale = row_scale[r];
    const __m256 s = _mm256_set1_ps(scale);
    auto code8 = [&](int64_t i) {
      __m256 v = load8<BF16>(p + i);
      if (MEAN) v = _mm256_sub_ps(v, _mm256_loadu_ps(mean + i));
      const __m256 y = _mm256_div_ps(v, s);
      return INT8 ? int8_codes(y) : fp8_codes(y);
    };
    int64_t i = 0;
    for (; i + 32 <= d; i += 32) store32<INT8>(out + i, code8(i), code8(i + 8), code8(i + 16), code8(i + 24));
    for (; i + 8 <= d; i += 8) store8<INT8>(out + i, code8(i));
    for (; i < d; ++i) {
      const float v = half_to_f32(p[i], BF16);
      const float y = (MEAN ? v - mean[i] : v) / scale;
      out[i] = INT8 ? static_cast<uint8_t>(to_int8_code(y)) : to_fp8_code(y);
    }
  }
}

template <bool BF16, bool MEAN>
void encode_rows_m(const uint16_t* x, int64_t rs, int64_t rows, int64_t d, const float* mean,
                   const float* row_scale, QuantDType t, uint8_t* codes, int64_t cs) {
  if (t == QuantDType::kInt8) {
    encode_rows_t<BF16, MEAN, true>(x, rs, rows, d, mean, row_scale, codes, cs);
  } else {
    encode_rows_t<BF16, MEAN, false>(x, rs, rows, d, mean, row_scale, codes, cs);
  }
}

void encode_rows(const uint16_t* x, int64_t rs, int64_t rows, int64_t d, bool bf16,
                 const float* mean, const float* row_scale, QuantDType t, void* codes,
                 int64_t cs) {
  uint8_t* c = static_cast<uint8_t*>(codes);
  if (bf16) {
    mean ? encode_rows_m<true, true>(x, rs, rows, d, mean, row_scale, t, c, cs)
         : encode_rows_m<true, false>(x, rs, rows, d, mean, row_scale, t, c, cs);
  } else {
    mean ? encode_rows_m<false, true>(x, rs, rows, d, mean, row_scale, t, c, cs)
         : encode_rows_m<false, false>(x, rs, rows, d, mean, row_scale, t, c, cs);
  }
}

// ---------------------------------------------------------------------------------
// Column passes walk blocks of rows so that a block stays in L1 across column strips.
constexpr int64_t kColRowBlock = 64;

template <bool BF16>
void col_amax_t(const uint16_t* x, int64_t rs, int64_t rows, int64_t d, float* amax) {
  for (int64_t r0 = 0; r0 < rows; r0 += kColRowBlock) {
    const int64_t r1 = r0 + kColRowBlock < rows ? r0 + kColRowBlock : rows;
    int64_t i = 0;
    for (; i + 32 <= d; i += 32) {
      __m256 a0 = _mm256_loadu_ps(amax + i), a1 = _mm256_loadu_ps(amax + i + 8);
      __m256 a2 = _mm256_loadu_ps(amax + i + 16), a3 = _mm256_loadu_ps(amax + i + 24);
      for (int64_t r = r0; r < r1; ++r) {
        const uint16_t* p = x + r * rs + i;
        a0 = amax_step8(a0, load8<BF16>(p));
        a1 = amax_step8(a1, load8<BF16>(p + 8));
        a2 = amax_step8(a2, load8<BF16>(p + 16));
        a3 = amax_step8(a3, load8<BF16>(p + 24));
      }
      _mm256_storeu_ps(amax + i, a0);
      _mm256_storeu_ps(amax + i + 8, a1);
      _mm256_storeu_ps(amax + i + 16, a2);
      _mm256_storeu_ps(amax + i + 24, a3);
    }
    for (; i + 8 <= d; i += 8) {
      __m256 a0 = _mm256_loadu_ps(amax + i);
      for (int64_t r = r0; r < r1; ++r) a0 = amax_step8(a0, load8<BF16>(x + r * rs + i));
      _mm256_storeu_ps(amax + i, a0);
    }
    for (; i < d; ++i) {
      float a0 = amax[i];
      for (int64_t r = r0; r < r1; ++r) a0 = amax_step(a0, half_to_f32(x[r * rs + i], BF16));
      amax[i] = a0;
    }
  }
}

void col_amax(const uint16_t* x, int64_t rs, int64_t rows, int64_t d, bool bf16, float* amax) {
  bf16 ? col_amax_t<true>(x, rs, rows, d, amax) : col_amax_t<false>(x, rs, rows, d, amax);
}

template <bool BF16>
void col_sum_t(const uint16_t* x, int64_t rs, int64_t rows, int64_t d, double* sum) {
  for (int64_t r0 = 0; r0 < rows; r0 += kColRowBlock) {
    const int64_t r1 = r0 + kColRowBlock < rows ? r0 + kColRowBlock : rows;
    int64_t i = 0;
    for (; i + 32 <= d; i += 32) {
      __m256d s[8];
      for (int k = 0; k < 8; ++k) s[k] = _mm256_loadu_pd(sum + i + 4 * k);
      for (int64_t r = r0; r < r1; ++r) {
        const uint16_t* p = x + r * rs + i;
        for (int k = 0; k < 4; ++k) {
          const __m256 v = load8<BF16>(p + 8 * k);
          s[2 * k] = _mm256_add_pd(s[2 * k], _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
          s[2 * k + 1] = _mm256_add_pd(s[2 * k + 1], _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
        }
      }
      for (int k = 0; k < 8; ++k) _mm256_storeu_pd(sum + i + 4 * k, s[k]);
    }
    for (; i + 8 <= d; i += 8) {
      __m256d s0 = _mm256_loadu_pd(sum + i), s1 = _mm256_loadu_pd(sum + i + 4);
      for (int64_t r = r0; r < r1; ++r) {
        const __m256 v = load8<BF16>(x + r * rs + i);
        s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
        s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
      }
      _mm256_storeu_pd(sum + i, s0);
      _mm256_storeu_pd(sum + i + 4, s1);
    }
    for (; i < d; ++i) {
      double s0 = sum[i];
      for (int64_t r = r0; r < r1; ++r) s0 += half_to_f32(x[r * rs + i], BF16);
      sum[i] = s0;
    }
  }
}

void col_sum(const uint16_t* x, int64_t rs, int64_t rows, int64_t d, bool bf16, double* sum) {
  bf16 ? col_sum_t<true>(x, rs, rows, d, sum) : col_sum_t<false>(x, rs, rows, d, sum);
}

template <bool BF16, bool INT8>
void encode_cols_t(const uint16_t* x, int64_t rs, int64_t rows, int64_t d,
                   const float* col_scale, uint8_t* codes, int64_t cs) {
  for (int64_t r = 0; r < rows; ++r) {
    const uint16_t* p = x + r * rs;
    uint8_t* out = codes + r * cs;
    auto code8 = [&](int64_t i) {
      const __m256 y = _mm256_div_ps(load8<BF16>(p + i), _mm256_loadu_ps(col_scale + i));
      return INT8 ? int8_codes(y) : fp8_codes(y);
    };
    int64_t i = 0;
    for (; i + 32 <= d; i += 32) store32<INT8>(out + i, code8(i), code8(i + 8), code8(i + 16), code8(i + 24));
    for (; i + 8 <= d; i += 8) store8<INT8>(out + i, code8(i));
    for (; i < d; ++i) {
      const float y = half_to_f32(p[i], BF16) / col_scale[i];
      out[i] = INT8 ? static_cast<uint8_t>(to_int8_code(y)) : to_fp8_code(y);
    }
  }
}

void encode_cols(const uint16_t* x, int64_t rs, int64_t rows, int64_t d, bool bf16,
                 const float* col_scale, QuantDType t, void* codes, int64_t cs) {
  uint8_t* c = static_cast<uint8_t*>(codes);
  if (t == QuantDType::kInt8) {
    bf16 ? encode_cols_t<true, true>(x, rs, rows, d, col_scale, c, cs)
         : encode_cols_t<false, true>(x, rs, rows, d, col_scale, c, cs);
  } else {
    bf16 ? encode_cols_t<true, false>(x, rs, rows, d, col_scale, c, cs)
         : encode_cols_t<false, false>(x, rs, rows, d, col_scale, c, cs);
  }
}

inline QuantOps make_quant_ops() {
  return QuantOps{row_amax, encode_rows, col_amax, col_sum, encode_cols};
}

}  // namespace
}  // namespace quant_x86
}  // namespace sageattn
