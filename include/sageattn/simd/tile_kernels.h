// The SIMD tile operations (see sageattn/tile_ops.h), written once as templates over a
// vector "traits" type T (simd/avx2.h, simd/avx512.h). Only the traits differ between
// ISAs; the loops, packed layouts, exp2, fp8 rounding and register blocking live here.
//
// Include after the traits header, from a translation unit compiled for that ISA.
// Everything is in an unnamed namespace (one private copy per ISA translation unit; see
// simd/avx2.h). The packing routines use 256-bit AVX2 operations for every ISA: they
// run once per tile and are then shared by the AVX-512 path verbatim.
//
// Packed layouts (all offsets in elements from the buffer start, no header, any
// alignment; W = T::W lanes, rows of a K tile are keys, P = ceil(rows / W) panels):
//   Q int8  int32 q4[r * dq4 + g]          = bytes q[r][4g .. 4g+3], dq4 = ceil(d/4),
//           zero-padded; XOR 0x80 (i.e. q + 128 as u8) when T::kQOffset128.
//   Q fp8   float q[r * d + c]             = decoded codes.
//   K int8  int32 k4[(p * dq4 + g) * W + j] = bytes k[p*W + j][4g .. 4g+3] (keys past
//           `rows` and bytes past d are 0), then
//             T::kQOffset128:  int32 comp[p * W + j] = -128 * Σ_c k[p*W + j][c]
//             otherwise:       int32 flag = 1 when any code is -128 (exact fallback)
//           At most 4·(64·(dq4 + 1)) bytes for a 64-key tile: within the 4 bytes per
//           element (+256 bytes) attention.cc gives every packed buffer, as long as its
//           key tile (kTileN) is a multiple of W (16 covers every ISA).
//   K fp8   float kf[(p * d + c) * W + j]   = decoded k[p*W + j][c], 0 for missing keys.
//   V       float v[j * dv + c]             = decode(code) * scale (row-major, like the
//           scalar ops: attention.cc's fp16-PV mode writes this layout itself).
// Every K / V vector load is unit-stride and the broadcast operand is a Q (or P) scalar
// or 4-byte group, so a micro-kernel step is: NR vector loads, MR broadcasts and MR x NR
// multiply-accumulates into registers.
#pragma once
#include <immintrin.h>

#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include "sageattn/quantize.h"
#include "sageattn/tile_ops.h"

namespace sageattn {
namespace simd {
namespace {

constexpr float kNegInfF = -std::numeric_limits<float>::infinity();

// ---------------------------------------------------------------------------------
// Scalar helpers. Private copies of sageattn/numeric.h's definitions (same results bit
// for bit; tests/cpp checks all 256 codes) so that no out-of-line copy of a shared
// inline function is ever emitted from an ISA translation unit.
// ---------------------------------------------------------------------------------
inline uint32_t fbits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
inline float ffrom(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }

inline float fp8_decode1(uint8_t code) {
  const uint32_t mag = code & 0x7Fu, sign = static_cast<uint32_t>(code & 0x80u) << 24;
  float f;
  if (mag == 0x7F) f = ffrom(0x7FC00000u);                  // NaN
  else if (mag < 8) f = static_cast<float>(mag) * 0.001953125f;  // subnormal: man * 2^-9
  else f = ffrom((mag << 20) + (120u << 23));               // rebias 7 -> 127
  return ffrom(fbits(f) | sign);
}

// ---------------------------------------------------------------------------------
// 256-bit helpers used by the packing routines of every ISA.
// ---------------------------------------------------------------------------------

// fp8 e4m3fn codes to fp32, exactly as fp8_decode1, through fp16 and F16C: the code's
// 7 magnitude bits shifted left by 7 are an fp16 with the same 3 mantissa bits and the
// exponent rebiased by 8 (7 -> 15), subnormals included (fp16 subnormal m·2^-17 = the fp8
// subnormal m·2^-9 times 2^-8), so fp32 = cvtph(h) · 2^8 exactly; codes 0x7F / 0xFF
// become the fp16 NaN 0x7E00 (-> fp32 0x7FC00000, sign kept). F16C converts fp16
// subnormals exactly whatever MXCSR's DAZ says.
inline __m128i fp8_to_half_bits(__m128i c16) {  // 8 x u16 lanes holding one code each
  const __m128i mag = _mm_and_si128(c16, _mm_set1_epi16(0x7F));
  const __m128i sign = _mm_slli_epi16(_mm_and_si128(c16, _mm_set1_epi16(0x80)), 8);
  const __m128i h = _mm_or_si128(_mm_slli_epi16(mag, 7), sign);
  const __m128i nan = _mm_cmpeq_epi16(mag, _mm_set1_epi16(0x7F));
  return _mm_blendv_epi8(h, _mm_or_si128(sign, _mm_set1_epi16(0x7E00)), nan);
}
inline __m256i fp8_to_half_bits(__m256i c16) {  // 16 x u16 lanes
  const __m256i mag = _mm256_and_si256(c16, _mm256_set1_epi16(0x7F));
  const __m256i sign = _mm256_slli_epi16(_mm256_and_si256(c16, _mm256_set1_epi16(0x80)), 8);
  const __m256i h = _mm256_or_si256(_mm256_slli_epi16(mag, 7), sign);
  const __m256i nan = _mm256_cmpeq_epi16(mag, _mm256_set1_epi16(0x7F));
  return _mm256_blendv_epi8(h, _mm256_or_si256(sign, _mm256_set1_epi16(0x7E00)), nan);
}
// Eight codes (the low 8 bytes of `codes`).
inline __m256 fp8x8_decode(__m128i codes) {
  return _mm256_mul_ps(_mm256_cvtph_ps(fp8_to_half_bits(_mm_cvtepu8_epi16(codes))), _mm256_set1_ps(256.0f));
}
// Sixteen codes: lanes 0-7 in lo, 8-15 in hi.
inline void fp8x16_decode(__m128i codes, __m256& lo, __m256& hi) {
  const __m256i h = fp8_to_half_bits(_mm256_cvtepu8_epi16(codes));
  lo = _mm256_mul_ps(_mm256_cvtph_ps(_mm256_castsi256_si128(h)), _mm256_set1_ps(256.0f));
  hi = _mm256_mul_ps(_mm256_cvtph_ps(_mm256_extracti128_si256(h, 1)), _mm256_set1_ps(256.0f));
}

inline __m128i load8_bytes(const uint8_t* p) {
  int64_t x;
  std::memcpy(&x, p, 8);
  return _mm_cvtsi64_si128(x);
}

// In-register transpose of an 8x8 block of 32-bit elements: r[i][j] -> r[j][i].
inline void transpose8x8(__m256 r[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
  r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
  r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
  r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
  r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

inline int ceil_div(int a, int b) { return (a + b - 1) / b; }

// K and V rows are streamed from a (B, N, H, D) tensor once per query tile, typically
// from L3. Rows of one head sit H·D bytes apart, which maps a whole tile onto a few cache
// sets, so prefetching far ahead gets evicted: the packers prefetch a few rows ahead of
// the row they convert (into L1), and pack_k also asks for the next tile into L2.
inline void prefetch_next_rows(const void* src, int64_t row_stride_bytes, int rows, int row_bytes) {
  const uintptr_t base = reinterpret_cast<uintptr_t>(src) + static_cast<uintptr_t>(rows * row_stride_bytes);
  for (int r = 0; r < rows; ++r) {
    const uintptr_t p = base + static_cast<uintptr_t>(r * row_stride_bytes);
    for (int b = 0; b < row_bytes; b += 64) _mm_prefetch(reinterpret_cast<const char*>(p + b), _MM_HINT_T1);
    _mm_prefetch(reinterpret_cast<const char*>(p + row_bytes - 1), _MM_HINT_T1);
  }
}
inline void prefetch_rows_l1(const void* src, int64_t row_stride_bytes, int first, int count, int row_bytes) {
  for (int r = first; r < first + count; ++r) {
    const uintptr_t p = reinterpret_cast<uintptr_t>(src) + static_cast<uintptr_t>(r * row_stride_bytes);
    for (int b = 0; b < row_bytes; b += 64) _mm_prefetch(reinterpret_cast<const char*>(p + b), _MM_HINT_T0);
  }
}

// ---------------------------------------------------------------------------------
// Packing (layouts in the header comment).
// ---------------------------------------------------------------------------------

template <bool kOffset128>
void pack_q_i8(const int8_t* src, int64_t row_stride, int rows, int d, int32_t* dst) {
  const int dq4 = ceil_div(d, 4);
  const uint8_t flip = kOffset128 ? 0x80 : 0x00;
  for (int r = 0; r < rows; ++r) {
    uint8_t* o = reinterpret_cast<uint8_t*>(dst + static_cast<int64_t>(r) * dq4);
    const int8_t* s = src + r * row_stride;
    for (int c = 0; c < d; ++c) o[c] = static_cast<uint8_t>(s[c]) ^ flip;
    for (int c = d; c < 4 * dq4; ++c) o[c] = flip;  // pads multiply a zero K byte
  }
}

inline void pack_rows_fp8(const uint8_t* src, int64_t row_stride, int rows, int d, float* dst) {
  for (int r = 0; r < rows; ++r) {
    const uint8_t* s = src + r * row_stride;
    float* o = dst + static_cast<int64_t>(r) * d;
    int c = 0;
    for (; c + 16 <= d; c += 16) {
      __m256 lo, hi;
      fp8x16_decode(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + c)), lo, hi);
      _mm256_storeu_ps(o + c, lo);
      _mm256_storeu_ps(o + c + 8, hi);
    }
    for (; c + 8 <= d; c += 8) _mm256_storeu_ps(o + c, fp8x8_decode(load8_bytes(s + c)));
    for (; c < d; ++c) o[c] = fp8_decode1(s[c]);
  }
}

// int8 K panels. kComp: store the -128·Σk corrections (offset-128 Q); otherwise the
// "holds a -128" flag.
template <int W, bool kComp>
void pack_k_i8(const int8_t* src, int64_t row_stride, int rows, int d, int32_t* dst) {
  static_assert(W % 8 == 0, "K panels are built from 8-key blocks");
  prefetch_next_rows(src, row_stride, rows, d);
  const int dq4 = ceil_div(d, 4);
  const int panels = ceil_div(rows, W);
  int32_t* extra = dst + static_cast<int64_t>(panels) * dq4 * W;
  const __m256i m128 = _mm256_set1_epi8(-128);
  const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
  __m256i seen = _mm256_setzero_si256();
  bool seen_scalar = false;
  for (int p = 0; p < panels; ++p) {
    for (int b = 0; b < W / 8; ++b) {
      const int j0 = p * W + b * 8;
      const bool full_keys = j0 + 8 <= rows;
      prefetch_rows_l1(src, row_stride, j0 + 8, 8, d);
      __m256i comp = _mm256_setzero_si256();
      int32_t comp_s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      for (int g0 = 0; g0 < dq4; g0 += 8) {
        int32_t* o = dst + (static_cast<int64_t>(p) * dq4 + g0) * W + b * 8;
        if (full_keys && 4 * (g0 + 8) <= d) {
          __m256 r[8];
          for (int jj = 0; jj < 8; ++jj) {
            const __m256i x = _mm256_loadu_si256(
                reinterpret_cast<const __m256i*>(src + (j0 + jj) * row_stride + 4 * g0));
            seen = _mm256_or_si256(seen, _mm256_cmpeq_epi8(x, m128));
            r[jj] = _mm256_castsi256_ps(x);
          }
          transpose8x8(r);
          for (int c = 0; c < 8; ++c) {
            const __m256i v = _mm256_castps_si256(r[c]);
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + c * W), v);
            if (kComp) comp = _mm256_add_epi32(comp, _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, v), ones16));
          }
        } else {
          const int gn = dq4 - g0 < 8 ? dq4 - g0 : 8;
          for (int c = 0; c < gn; ++c) {
            for (int jj = 0; jj < 8; ++jj) {
              const int j = j0 + jj;
              uint8_t bytes[4] = {0, 0, 0, 0};
              for (int t = 0; t < 4; ++t) {
                const int e = 4 * (g0 + c) + t;
                if (j < rows && e < d) {
                  const int8_t x = src[j * row_stride + e];
                  bytes[t] = static_cast<uint8_t>(x);
                  comp_s[jj] += x;
                  seen_scalar |= x == -128;
                }
              }
              int32_t word;
              std::memcpy(&word, bytes, 4);
              o[c * W + jj] = word;
            }
          }
        }
      }
      if (kComp) {
        const __m256i total = _mm256_add_epi32(comp, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(comp_s)));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(extra + p * W + b * 8),
                            _mm256_mullo_epi32(total, _mm256_set1_epi32(-128)));
      }
    }
  }
  if (!kComp) extra[0] = (seen_scalar || !_mm256_testz_si256(seen, seen)) ? 1 : 0;
}

template <int W>
void pack_k_fp8(const uint8_t* src, int64_t row_stride, int rows, int d, float* dst) {
  static_assert(W % 8 == 0, "K panels are built from 8-key blocks");
  prefetch_next_rows(src, row_stride, rows, d);
  const int panels = ceil_div(rows, W);
  for (int p = 0; p < panels; ++p) {
    for (int b = 0; b < W / 8; ++b) {
      const int j0 = p * W + b * 8;
      const bool full_keys = j0 + 8 <= rows;
      prefetch_rows_l1(src, row_stride, j0 + 8, 8, d);
      for (int c0 = 0; c0 < d; c0 += 8) {
        float* o = dst + (static_cast<int64_t>(p) * d + c0) * W + b * 8;
        if (full_keys && c0 + 8 <= d) {
          __m256 r[8];
          for (int jj = 0; jj < 8; ++jj) r[jj] = fp8x8_decode(load8_bytes(src + (j0 + jj) * row_stride + c0));
          transpose8x8(r);
          for (int c = 0; c < 8; ++c) _mm256_storeu_ps(o + c * W, r[c]);
        } else {
          const int cn = d - c0 < 8 ? d - c0 : 8;
          for (int c = 0; c < cn; ++c)
            for (int jj = 0; jj < 8; ++jj)
              o[c * W + jj] = j0 + jj < rows ? fp8_decode1(src[(j0 + jj) * row_stride + c0 + c]) : 0.0f;
        }
      }
    }
  }
}

inline void pack_v_rows(const uint8_t* src, int64_t row_stride, int rows, int dv,
                        const float* channel_scale, const float* row_scale, float* dst) {
  for (int r = 0; r < rows; ++r) {
    prefetch_rows_l1(src, row_stride, r + 8, 1, dv);
    const uint8_t* s = src + r * row_stride;
    float* o = dst + static_cast<int64_t>(r) * dv;
    int c = 0;
    if (channel_scale) {
      for (; c + 16 <= dv; c += 16) {
        __m256 lo, hi;
        fp8x16_decode(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + c)), lo, hi);
        _mm256_storeu_ps(o + c, _mm256_mul_ps(lo, _mm256_loadu_ps(channel_scale + c)));
        _mm256_storeu_ps(o + c + 8, _mm256_mul_ps(hi, _mm256_loadu_ps(channel_scale + c + 8)));
      }
      for (; c + 8 <= dv; c += 8)
        _mm256_storeu_ps(o + c, _mm256_mul_ps(fp8x8_decode(load8_bytes(s + c)), _mm256_loadu_ps(channel_scale + c)));
      for (; c < dv; ++c) o[c] = fp8_decode1(s[c]) * channel_scale[c];
    } else {
      const float rs = row_scale[r];
      const __m256 rsv = _mm256_set1_ps(rs);
      for (; c + 16 <= dv; c += 16) {
        __m256 lo, hi;
        fp8x16_decode(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + c)), lo, hi);
        _mm256_storeu_ps(o + c, _mm256_mul_ps(lo, rsv));
        _mm256_storeu_ps(o + c + 8, _mm256_mul_ps(hi, rsv));
      }
      for (; c + 8 <= dv; c += 8) _mm256_storeu_ps(o + c, _mm256_mul_ps(fp8x8_decode(load8_bytes(s + c)), rsv));
      for (; c < dv; ++c) o[c] = fp8_decode1(s[c]) * rs;
    }
  }
}

// ---------------------------------------------------------------------------------
// Vector math on traits T.
// ---------------------------------------------------------------------------------

// 2^x. x = n + f with n = round(x), f in [-0.5, 0.5]; 2^f from a degree-6 polynomial
// (least-squares/Lawson fit of the relative error, p(0) = 1 exactly), 2^n by exponent
// bits. Max relative error 7.9e-8 (0.94 ulp, float32 Horner evaluation, measured
// over 2M points of [-0.5, 0.5]); tests/cpp/test_tile_ops.cc checks <= 2 ulp against
// std::exp2 over [-150, 63]. Inputs are clamped below at -160: -inf and anything below
// about -150 give +0, denormal results are rounded once (2^(n+64) then 2^-64), NaN
// propagates (max returns its second operand for NaN). Domain: x <= 63 (the
// softmax only asks for x <= 0).
template <class T>
inline typename T::F exp2v(typename T::F x) {
  using F = typename T::F;
  x = T::max(T::set1(-160.0f), x);
  const F n = T::round_nearest(x);
  const F f = T::sub(x, n);  // exact
  F p = T::set1(1.5353356138803065e-04f);
  p = T::fmadd(p, f, T::set1(1.3398875016719103e-03f));
  p = T::fmadd(p, f, T::set1(9.6184378489851950e-03f));
  p = T::fmadd(p, f, T::set1(5.5503323674201965e-02f));
  p = T::fmadd(p, f, T::set1(2.4022647738456726e-01f));
  p = T::fmadd(p, f, T::set1(6.9314718246459960e-01f));
  p = T::fmadd(p, f, T::set1(1.0f));
  const F scale = T::f32(T::template shl<23>(T::iadd(T::cvt_f2i(n), T::iset1(127 + 64))));
  return T::mul(T::mul(p, scale), T::set1(5.42101086242752217e-20f));  // * 2^-64
}

// y -> fp8_e4m3_to_f32(f32_to_fp8_e4m3(y)) for y in [0, +inf) or NaN (P = 448·p): the
// same bits as sageattn/numeric.h's encode + decode. fp8 keeps 3 mantissa bits down to
// 2^-6 and steps of 2^-9 below, so the rounding quantum of y is 2^(max(e, -6) - 3) for
// y in [2^e, 2^(e+1)). Adding and subtracting M = 1.5·2^(max(e, -6) + 20) makes the FPU
// round y to that quantum, half to even (y + M lies in M's binade, whose ulp is the
// quantum); saturation at 448 comes first (nothing below 448 rounds above it).
template <class T>
inline typename T::F fp8_round_nonneg(typename T::F y) {
  using F = typename T::F;
  using I = typename T::I;
  y = T::min(T::set1(448.0f), y);  // keeps NaN
  const I e = T::imax(T::iand(T::i32(y), T::iset1(0x7F800000)), T::iset1(121 << 23));  // 2^max(e,-6)
  const F magic = T::f32(T::iadd(e, T::iset1((20 << 23) | 0x400000)));
  return T::sub(T::add(y, magic), magic);
}

// ---------------------------------------------------------------------------------
// Compile-time dispatch of a run-time count 1..N to a template argument.
// ---------------------------------------------------------------------------------
template <int N, class Fn>
inline void with_count(int n, Fn&& fn) {
  if constexpr (N > 1) {
    if (n < N) {
      with_count<N - 1>(n, fn);
      return;
    }
  }
  fn(std::integral_constant<int, N>{});
}

// Stores rows [0, MR) x panels [0, NR) of scores: s = (float(acc) * rs) * cs, as the
// scalar path multiplies. `cols` valid keys from the first panel on.
template <class T, bool kInt, int MR, int NR, class Acc>
inline void store_scores(const Acc (&acc)[MR][NR], const float* rs, const float* cs,
                         int cols, float* s, int lds) {
  using F = typename T::F;
  constexpr int W = T::W;
  for (int n = 0; n < NR; ++n) {
    const int valid = cols - n * W;
    const F cv = valid >= W ? T::load(cs + n * W) : T::load_n(cs + n * W, valid);
    for (int r = 0; r < MR; ++r) {
      F dot;
      if constexpr (kInt) dot = T::cvt_i2f(acc[r][n]);
      else dot = acc[r][n];
      const F v = T::mul(T::mul(dot, T::set1(rs[r])), cv);
      float* out = s + static_cast<int64_t>(r) * lds + n * W;
      if (valid >= W) T::store(out, v);
      else T::store_n(out, v, valid);
    }
  }
}

// MR query rows x NR key panels of int8 scores over all dq4 4-byte groups.
template <class T, class Dot, int MR, int NR>
inline void qk_i8_micro(const int32_t* q, int dq4, const int32_t* k, const int32_t* comp,
                        const float* rs, const float* cs, int cols, float* s, int lds) {
  using I = typename T::I;
  constexpr int W = T::W;
  I acc[MR][NR];
  for (int n = 0; n < NR; ++n) {
    const I init = comp ? T::iload(comp + n * W) : T::izero();
    for (int r = 0; r < MR; ++r) acc[r][n] = init;
  }
  const int64_t kstride = static_cast<int64_t>(dq4) * W;
  for (int g = 0; g < dq4; ++g) {
    I kv[NR];
    for (int n = 0; n < NR; ++n) kv[n] = T::iload(k + n * kstride + g * W);
    for (int r = 0; r < MR; ++r) {
      const typename Dot::Q qq = Dot::prep(q[r * dq4 + g]);
      for (int n = 0; n < NR; ++n) acc[r][n] = Dot::dot(acc[r][n], qq, kv[n]);
    }
  }
  store_scores<T, true, MR, NR>(acc, rs, cs, cols, s, lds);
}

template <class T, int MR, int NR>
inline void qk_f32_micro(const float* q, int d, const float* k, const float* rs, const float* cs,
                         int cols, float* s, int lds) {
  using F = typename T::F;
  constexpr int W = T::W;
  F acc[MR][NR];
  for (int r = 0; r < MR; ++r)
    for (int n = 0; n < NR; ++n) acc[r][n] = T::zero();
  const int64_t kstride = static_cast<int64_t>(d) * W;
  for (int c = 0; c < d; ++c) {
    F kv[NR];
    for (int n = 0; n < NR; ++n) kv[n] = T::load(k + n * kstride + c * W);
    for (int r = 0; r < MR; ++r) {
      const F b = T::bcast(q + static_cast<int64_t>(r) * d + c);
      for (int n = 0; n < NR; ++n) acc[r][n] = T::fmadd(b, kv[n], acc[r][n]);
    }
  }
  store_scores<T, false, MR, NR>(acc, rs, cs, cols, s, lds);
}

template <class T, class Dot>
void qk_i8(const int32_t* q, const int32_t* k, int mq, int nk, int d, const float* row_scale,
           const float* col_scale, float* s, int lds) {
  constexpr int W = T::W, MR = T::kQkI8Rows, NR = T::kQkI8Panels;
  const int dq4 = ceil_div(d, 4);
  const int panels = ceil_div(nk, W);
  const int32_t* comp = T::kQOffset128 ? k + static_cast<int64_t>(panels) * dq4 * W : nullptr;
  for (int p0 = 0; p0 < panels; p0 += NR) {
    with_count<NR>(panels - p0, [&](auto nr) {
      constexpr int NRc = decltype(nr)::value;
      const int32_t* kp = k + static_cast<int64_t>(p0) * dq4 * W;
      const int32_t* cp = comp ? comp + p0 * W : nullptr;
      for (int i0 = 0; i0 < mq; i0 += MR) {
        with_count<MR>(mq - i0, [&](auto mr) {
          constexpr int MRc = decltype(mr)::value;
          qk_i8_micro<T, Dot, MRc, NRc>(q + static_cast<int64_t>(i0) * dq4, dq4, kp, cp, row_scale + i0,
                                        col_scale + p0 * W, nk - p0 * W, s + static_cast<int64_t>(i0) * lds + p0 * W, lds);
        });
      }
    });
  }
}

template <class T>
void qk_f32(const float* q, const float* k, int mq, int nk, int d, const float* row_scale,
            const float* col_scale, float* s, int lds) {
  constexpr int W = T::W, MR = T::kQkF32Rows, NR = T::kQkF32Panels;
  const int panels = ceil_div(nk, W);
  for (int p0 = 0; p0 < panels; p0 += NR) {
    with_count<NR>(panels - p0, [&](auto nr) {
      constexpr int NRc = decltype(nr)::value;
      const float* kp = k + static_cast<int64_t>(p0) * d * W;
      for (int i0 = 0; i0 < mq; i0 += MR) {
        with_count<MR>(mq - i0, [&](auto mr) {
          constexpr int MRc = decltype(mr)::value;
          qk_f32_micro<T, MRc, NRc>(q + static_cast<int64_t>(i0) * d, d, kp, row_scale + i0, col_scale + p0 * W,
                                    nk - p0 * W, s + static_cast<int64_t>(i0) * lds + p0 * W, lds);
        });
      }
    });
  }
}

// ---------------------------------------------------------------------------------
// Online softmax over one tile (log2 units), P = fp8(448·p) as float.
// ---------------------------------------------------------------------------------
// Two passes so that no long dependency chain runs from one row into the next: pass 1
// finds every row's new max and alpha (alpha's exp2 vectorized across rows), pass 2 is
// a flat stream of independent exp2 / round / store steps.
template <class T>
void softmax_tile(float* s, int lds, int mq, int nk, float* m, float* l, float* alpha) {
  using F = typename T::F;
  constexpr int W = T::W;
  for (int i = 0; i < mq; ++i) {
    const float* row = s + static_cast<int64_t>(i) * lds;
    // max(x, acc) keeps acc when x is NaN; the running sum catches NaN instead (only NaN,
    // or +inf beside -inf, makes it NaN), so a NaN score turns the whole row NaN, as the
    // scalar `(x > mx || x != x)` rule does. The sum is of x·2^-10 so that finite scores
    // never overflow it (a tile has far fewer than 2^10 keys): saturated mask scores
    // of both signs (±FLT_MAX) in one row must not read as +inf beside -inf.
    const F shrink = T::set1(0x1p-10f);
    F vmax = T::set1(kNegInfF);
    F vsum = T::zero();
    int j = 0;
    for (; j + W <= nk; j += W) {
      const F x = T::load(row + j);
      vmax = T::max(x, vmax);
      vsum = T::fmadd(x, shrink, vsum);
    }
    if (j < nk) {
      const F x = T::load_n(row + j, nk - j, kNegInfF);
      vmax = T::max(x, vmax);
      vsum = T::fmadd(x, shrink, vsum);
    }
    const float total = T::hsum(vsum);
    const float mx = total != total ? total : T::hmax(vmax);
    const float m_new = (mx != mx || mx > m[i]) ? mx : m[i];
    // A row that has seen no key keeps m = -inf and gets alpha = exp2(0) = 1.
    alpha[i] = m_new == kNegInfF ? 0.0f : m[i] - m_new;
    m[i] = m_new;
  }
  int i = 0;
  for (; i + W <= mq; i += W) T::store(alpha + i, exp2v<T>(T::load(alpha + i)));
  if (i < mq) T::store_n(alpha + i, exp2v<T>(T::load_n(alpha + i, mq - i)), mq - i);

  const F p_unit = T::set1(448.0f);
  for (i = 0; i < mq; ++i) {
    float* row = s + static_cast<int64_t>(i) * lds;
    if (m[i] == kNegInfF) {
      for (int j = 0; j < nk; ++j) row[j] = 0.0f;
      continue;
    }
    if (m[i] != m[i]) {  // poisoned row: exp2v need not propagate NaN, so spell it out
      const float nan = std::numeric_limits<float>::quiet_NaN();
      for (int j = 0; j < nk; ++j) row[j] = nan;
      alpha[i] = nan;
      l[i] = nan;
      continue;
    }
    const F mv = T::set1(m[i]);
    F sum = T::zero();
    int j = 0;
    for (; j + W <= nk; j += W) {
      const F p = exp2v<T>(T::sub(T::load(row + j), mv));
      sum = T::add(sum, p);
      T::store(row + j, fp8_round_nonneg<T>(T::mul(p, p_unit)));
    }
    if (j < nk) {
      const F p = exp2v<T>(T::sub(T::load_n(row + j, nk - j, kNegInfF), mv));  // pad lanes: 0
      sum = T::add(sum, p);
      T::store_n(row + j, fp8_round_nonneg<T>(T::mul(p, p_unit)), nk - j);
    }
    l[i] = l[i] * alpha[i] + T::hsum(sum);
  }
}

// ---------------------------------------------------------------------------------
// O = O·alpha + P·V, MR rows x NR vectors of columns per micro-kernel; kPartial: one
// vector holding the last `tail` (< W) columns.
// ---------------------------------------------------------------------------------
template <class T, int MR, int NR, bool kPartial>
inline void pv_micro(const float* p, int ldp, const float* v, int dv, int nk, const float* alpha, float* o,
                     int ldo, int tail) {
  using F = typename T::F;
  constexpr int W = T::W;
  F acc[MR][NR];
  for (int r = 0; r < MR; ++r)
    for (int n = 0; n < NR; ++n) acc[r][n] = T::zero();
  for (int j = 0; j < nk; ++j) {
    const float* vr = v + static_cast<int64_t>(j) * dv;
    F vv[NR];
    for (int n = 0; n < NR; ++n) vv[n] = kPartial ? T::load_n(vr + n * W, tail) : T::load(vr + n * W);
    for (int r = 0; r < MR; ++r) {
      const F b = T::bcast(p + static_cast<int64_t>(r) * ldp + j);
      for (int n = 0; n < NR; ++n) acc[r][n] = T::fmadd(b, vv[n], acc[r][n]);
    }
  }
  for (int r = 0; r < MR; ++r) {
    const F a = T::set1(alpha[r]);
    float* orow = o + static_cast<int64_t>(r) * ldo;
    for (int n = 0; n < NR; ++n) {
      if (kPartial) {
        T::store_n(orow + n * W, T::fmadd(T::load_n(orow + n * W, tail), a, acc[r][n]), tail);
      } else {
        T::store(orow + n * W, T::fmadd(T::load(orow + n * W), a, acc[r][n]));
      }
    }
  }
}

// Columns are swept in groups of 64: the group's V slab (nk x 64 floats, 16 KiB for a
// 64-key tile) stays in L1 while every row block passes over it, and each row block's
// P rows stay in L1 across the group's micro-kernels.
template <class T>
void pv_tile(const float* p, int ldp, const float* v, int mq, int nk, int dv, const float* alpha, float* o,
             int ldo) {
  constexpr int W = T::W, MR = T::kPvRows, NR = T::kPvVecs;
  constexpr int kGroupVecs = (64 / W / NR) * NR > 0 ? (64 / W / NR) * NR : NR;
  const int nv = dv / W, tail = dv % W;
  for (int g0 = 0; g0 < nv; g0 += kGroupVecs) {
    const int g1 = g0 + kGroupVecs < nv ? g0 + kGroupVecs : nv;
    for (int i0 = 0; i0 < mq; i0 += MR) {
      with_count<MR>(mq - i0, [&](auto mr) {
        constexpr int MRc = decltype(mr)::value;
        for (int c0 = g0; c0 < g1; c0 += NR) {
          with_count<NR>(g1 - c0, [&](auto nr) {
            constexpr int NRc = decltype(nr)::value;
            pv_micro<T, MRc, NRc, false>(p + static_cast<int64_t>(i0) * ldp, ldp, v + c0 * W, dv, nk, alpha + i0,
                                         o + static_cast<int64_t>(i0) * ldo + c0 * W, ldo, 0);
          });
        }
      });
    }
  }
  if (tail) {
    for (int i0 = 0; i0 < mq; i0 += MR) {
      with_count<MR>(mq - i0, [&](auto mr) {
        constexpr int MRc = decltype(mr)::value;
        pv_micro<T, MRc, 1, true>(p + static_cast<int64_t>(i0) * ldp, ldp, v + nv * W, dv, nk, alpha + i0,
                                  o + static_cast<int64_t>(i0) * ldo + nv * W, ldo, tail);
      });
    }
  }
}

// ---------------------------------------------------------------------------------
// The TileOps table for traits T.
// ---------------------------------------------------------------------------------
template <class T>
struct TileKernels {
  static void pack_q(const void* src, int64_t row_stride, int rows, int d, QuantDType t, void* dst) {
    if (t == QuantDType::kInt8) {
      pack_q_i8<T::kQOffset128>(static_cast<const int8_t*>(src), row_stride, rows, d, static_cast<int32_t*>(dst));
    } else {
      pack_rows_fp8(static_cast<const uint8_t*>(src), row_stride, rows, d, static_cast<float*>(dst));
    }
  }
  static void pack_k(const void* src, int64_t row_stride, int rows, int d, QuantDType t, void* dst) {
    if (t == QuantDType::kInt8) {
      pack_k_i8<T::W, T::kQOffset128>(static_cast<const int8_t*>(src), row_stride, rows, d, static_cast<int32_t*>(dst));
    } else {
      pack_k_fp8<T::W>(static_cast<const uint8_t*>(src), row_stride, rows, d, static_cast<float*>(dst));
    }
  }
  static void qk(const void* qp, const void* kp, int mq, int nk, int d, QuantDType t, const float* row_scale,
                 const float* col_scale, float* s, int lds) {
    if (mq <= 0 || nk <= 0) return;
    if (t == QuantDType::kInt8) {
      const int32_t* k = static_cast<const int32_t*>(kp);
      const int32_t* q = static_cast<const int32_t*>(qp);
      if constexpr (T::kHasExactFallback) {
        const int64_t flag_at = static_cast<int64_t>(ceil_div(nk, T::W)) * ceil_div(d, 4) * T::W;
        if (k[flag_at]) {
          qk_i8<T, typename T::DotExact>(q, k, mq, nk, d, row_scale, col_scale, s, lds);
          return;
        }
      }
      qk_i8<T, typename T::DotFast>(q, k, mq, nk, d, row_scale, col_scale, s, lds);
    } else {
      qk_f32<T>(static_cast<const float*>(qp), static_cast<const float*>(kp), mq, nk, d, row_scale, col_scale, s,
                lds);
    }
  }
  static void softmax(float* s, int lds, int mq, int nk, float* m, float* l, float* alpha) {
    softmax_tile<T>(s, lds, mq, nk, m, l, alpha);
  }
  static void pack_v(const uint8_t* src, int64_t row_stride, int rows, int dv, const float* channel_scale,
                     const float* row_scale, float* dst) {
    pack_v_rows(src, row_stride, rows, dv, channel_scale, row_scale, dst);
  }
  static void pv(const float* p, int ldp, const float* v, int mq, int nk, int dv, const float* alpha, float* o,
                 int ldo) {
    if (mq <= 0 || dv <= 0) return;
    pv_tile<T>(p, ldp, v, mq, nk, dv, alpha, o, ldo);
  }
  static TileOps table() { return TileOps{pack_q, pack_k, qk, softmax, pack_v, pv}; }
};

}  // namespace
}  // namespace simd
}  // namespace sageattn
