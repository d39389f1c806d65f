// x86 packing of Q / K / V tiles and fp8 decoding (256-bit AVX2 + F16C operations),
// shared by the AVX2 and AVX-512 traits (simd/avx2.h, simd/avx512.h expose them as
// T::Pack). They run once per tile; the AVX-512 path uses them verbatim.
//
// Packed layouts: see simd/tile_kernels.h. Include only from a translation unit built
// with at least -mavx2 -mfma -mf16c; everything is in an unnamed namespace (one private
// copy per ISA translation unit, see simd/avx2.h).
#pragma once
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "sageattn/quantize.h"

namespace sageattn {
namespace simd {
namespace {
namespace x86 {

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

// int8 Q as quads of u8 q + 128 (VPDPBUSD's unsigned operand; pack_k_i8 stores the
// -128·Σk that takes the offset back out).
inline void pack_q_i8(const int8_t* src, int64_t row_stride, int rows, int d, int32_t* dst) {
  const int dq4 = ceil_div(d, 4);
  const uint8_t flip = 0x80;
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

// int8 K panels of code quads, then the -128·Σk correction of each key (offset-128 Q).
template <int W>
void pack_k_i8(const int8_t* src, int64_t row_stride, int rows, int d, int32_t* dst) {
  static_assert(W % 8 == 0, "K panels are built from 8-key blocks");
  prefetch_next_rows(src, row_stride, rows, d);
  const int dq4 = ceil_div(d, 4);
  const int panels = ceil_div(rows, W);
  int32_t* extra = dst + static_cast<int64_t>(panels) * dq4 * W;
  const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
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
            r[jj] = _mm256_castsi256_ps(x);
          }
          transpose8x8(r);
          for (int c = 0; c < 8; ++c) {
            const __m256i v = _mm256_castps_si256(r[c]);
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + c * W), v);
            comp = _mm256_add_epi32(comp, _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, v), ones16));
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
                }
              }
              int32_t word;
              std::memcpy(&word, bytes, 4);
              o[c * W + jj] = word;
            }
          }
        }
      }
      const __m256i total = _mm256_add_epi32(comp, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(comp_s)));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(extra + p * W + b * 8),
                          _mm256_mullo_epi32(total, _mm256_set1_epi32(-128)));
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
// int8 V tile -> the int8 P·V mode's words (layout: simd/pv_int8_kernels.h).
// ---------------------------------------------------------------------------------
template <int K>
void pack_v_i8_words(const int8_t* src, int64_t row_stride, int rows, int dv, int dvp, int32_t* dst) {
  static_assert(K == 2 || K == 4, "a word holds 4 int8 or 2 int16 keys");
  const int steps = ceil_div(rows, K);
  for (int g = 0; g < steps; ++g) {
    const int j0 = g * K;
    const int8_t* r0 = src + j0 * row_stride;
    int32_t* out = dst + static_cast<int64_t>(g) * dvp;
    int c = 0;
    if (j0 + K <= rows) {
      if constexpr (K == 4) {
        // Bytes of 4 keys x 16 columns -> 16 words: interleave bytes (keys 0/1, 2/3),
        // then 16-bit pairs, giving (k0 k1 k2 k3) per column in column order.
        for (; c + 16 <= dv; c += 16) {
          const __m128i a0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(r0 + c));
          const __m128i a1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(r0 + row_stride + c));
          const __m128i a2 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(r0 + 2 * row_stride + c));
          const __m128i a3 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(r0 + 3 * row_stride + c));
          const __m128i t0 = _mm_unpacklo_epi8(a0, a1), t1 = _mm_unpackhi_epi8(a0, a1);
          const __m128i t2 = _mm_unpacklo_epi8(a2, a3), t3 = _mm_unpackhi_epi8(a2, a3);
          __m128i* o = reinterpret_cast<__m128i*>(out + c);
          _mm_storeu_si128(o, _mm_unpacklo_epi16(t0, t2));
          _mm_storeu_si128(o + 1, _mm_unpackhi_epi16(t0, t2));
          _mm_storeu_si128(o + 2, _mm_unpacklo_epi16(t1, t3));
          _mm_storeu_si128(o + 3, _mm_unpackhi_epi16(t1, t3));
        }
      } else {
        // 2 keys x 16 columns, sign-extended to int16 and interleaved per column.
        for (; c + 16 <= dv; c += 16) {
          const __m256i a = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(r0 + c)));
          const __m256i b = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(r0 + row_stride + c)));
          const __m256i lo = _mm256_unpacklo_epi16(a, b);  // columns 0-3 | 8-11
          const __m256i hi = _mm256_unpackhi_epi16(a, b);  // columns 4-7 | 12-15
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + c), _mm256_permute2x128_si256(lo, hi, 0x20));
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + c + 8), _mm256_permute2x128_si256(lo, hi, 0x31));
        }
      }
    }
    for (; c < dvp; ++c) {  // tail columns, the last keys, and the zero padding
      uint32_t word = 0;
      for (int t = 0; t < K; ++t) {
        const int8_t x = (j0 + t < rows && c < dv) ? r0[t * row_stride + c] : 0;
        word |= K == 4 ? static_cast<uint32_t>(static_cast<uint8_t>(x)) << (8 * t)
                       : static_cast<uint32_t>(static_cast<uint16_t>(static_cast<int16_t>(x))) << (16 * t);
      }
      out[c] = static_cast<int32_t>(word);
    }
  }
}

// u8 P codes -> u16 (the 2-key words of the 16-bit int8 P·V path); n a multiple of 4.
inline void widen_u8(const uint8_t* src, int n, uint16_t* dst) {
  int j = 0;
  for (; j + 16 <= n; j += 16) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + j),
                        _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + j))));
  }
  for (; j < n; ++j) dst[j] = src[j];
}

// ---------------------------------------------------------------------------------
// bf16 packing for VDPBF16PS (simd/avx512_bf16.h). A bf16 holding an fp8 value is the
// top half of its fp32 bits (exact: fp8 has 3 mantissa bits; NaN stays NaN). Pairs of
// consecutive elements along the dot's axis share one 32-bit word, low half first:
//   Q fp8  uint32 q2[r * dq2 + g]         = (q[r][2g], q[r][2g+1]), dq2 = ceil(d/2)
//   K fp8  uint32 k2[(p * dq2 + g) * W + j] = (k[p*W + j][2g], k[p*W + j][2g+1])
//   V fp8  uint32 v2[t * dv + c]          = (v[2t][c], v[2t+1][c]), raw codes, no scale
// with 0 for missing elements (odd d, keys past `rows`, the odd last V row).
// ---------------------------------------------------------------------------------
inline uint32_t fp8_to_bf16_bits(uint8_t code) { return fbits(fp8_decode1(code)) >> 16; }

// Sixteen codes to sixteen bf16 in order.
inline __m256i fp8x16_to_bf16(__m128i codes) {
  __m256 lo, hi;
  fp8x16_decode(codes, lo, hi);
  const __m256i a = _mm256_srli_epi32(_mm256_castps_si256(lo), 16);
  const __m256i b = _mm256_srli_epi32(_mm256_castps_si256(hi), 16);
  return _mm256_permute4x64_epi64(_mm256_packus_epi32(a, b), 0xD8);  // packus interleaves 128-bit halves
}

// How a code becomes a 16-bit half of a pair word: sixteen codes at once (x16) or one (x1).
struct Fp8AsBf16 {  // exact: every fp8 e4m3 value is a bf16 value (VDPBF16PS)
  static __m256i x16(__m128i codes) { return fp8x16_to_bf16(codes); }
  static uint32_t x1(uint8_t code) { return fp8_to_bf16_bits(code); }
};
struct I8AsI16 {  // sign extension: VPMADDWD's operand, exact for every int8 product
  static __m256i x16(__m128i codes) { return _mm256_cvtepi8_epi16(codes); }
  static uint32_t x1(uint8_t code) { return static_cast<uint16_t>(static_cast<int16_t>(static_cast<int8_t>(code))); }
};

// Q rows of code pairs: word g of row r (at dst + r * ceil(d/2)) holds codes 2g (low half)
// and 2g+1 (high half, 0 past d), each as Half makes it.
template <class Half>
void pack_rows_as_pairs(const uint8_t* src, int64_t row_stride, int rows, int d, uint32_t* dst) {
  const int dq2 = ceil_div(d, 2);
  for (int r = 0; r < rows; ++r) {
    uint16_t* o = reinterpret_cast<uint16_t*>(dst + static_cast<int64_t>(r) * dq2);
    const uint8_t* s = src + r * row_stride;
    int c = 0;
    for (; c + 16 <= d; c += 16)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + c), Half::x16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + c))));
    for (; c < d; ++c) o[c] = static_cast<uint16_t>(Half::x1(s[c]));
    if (d & 1) o[d] = 0;
  }
}

// A K tile's fp8 codes as W-key panels of 32-bit words: word (p, g, j) at
// dst[(p * groups + g) * W + j] holds group g of key p*W + j (0 for keys past `rows` and
// codes past d). The walk is the same for every word format; Word says what a group is:
//   groups(d)        words per key;
//   load8(row, g0)   words g0 .. g0+7 of one key row, as 8 lanes (all in range);
//   full(d, g0)      whether words g0 .. g0+7 lie wholly inside the row's d codes;
//   one(row, g, d)   one word of a key row (the ragged edges).
// Full 8-key x 8-word blocks are decoded a row at a time and transposed (8x8) into
// panel order.
template <int W, class Word>
void pack_k_panels(const uint8_t* src, int64_t row_stride, int rows, int d, uint32_t* dst) {
  static_assert(W % 8 == 0, "K panels are built from 8-key blocks");
  prefetch_next_rows(src, row_stride, rows, d);
  const int groups = Word::groups(d);
  const int panels = ceil_div(rows, W);
  for (int p = 0; p < panels; ++p) {
    for (int b = 0; b < W / 8; ++b) {
      const int j0 = p * W + b * 8;
      const bool full_keys = j0 + 8 <= rows;
      prefetch_rows_l1(src, row_stride, j0 + 8, 8, d);
      for (int g0 = 0; g0 < groups; g0 += 8) {
        uint32_t* o = dst + (static_cast<int64_t>(p) * groups + g0) * W + b * 8;
        if (full_keys && Word::full(d, g0)) {
          __m256 r[8];
          for (int jj = 0; jj < 8; ++jj) r[jj] = Word::load8(src + (j0 + jj) * row_stride, g0);
          transpose8x8(r);
          for (int c = 0; c < 8; ++c) _mm256_storeu_ps(reinterpret_cast<float*>(o + c * W), r[c]);
        } else {
          const int gn = groups - g0 < 8 ? groups - g0 : 8;
          for (int c = 0; c < gn; ++c)
            for (int jj = 0; jj < 8; ++jj)
              o[c * W + jj] = j0 + jj < rows ? Word::one(src + (j0 + jj) * row_stride, g0 + c, d) : 0u;
        }
      }
    }
  }
}

// One decoded fp8 code per word (fp32 bits): the FMA Q·Kᵀ path.
struct Fp8AsF32Word {
  static int groups(int d) { return d; }
  static bool full(int d, int g0) { return g0 + 8 <= d; }
  static __m256 load8(const uint8_t* row, int g0) { return fp8x8_decode(load8_bytes(row + g0)); }
  static uint32_t one(const uint8_t* row, int g, int /*d*/) { return fbits(fp8_decode1(row[g])); }
};

// Two codes per word as 16-bit halves (code 2g low, 2g+1 high, 0 past d): K panels for
// VDPBF16PS (Half = Fp8AsBf16, fp8 Q·Kᵀ) and VPMADDWD (Half = I8AsI16, AVX2's int8 Q·Kᵀ).
template <class Half>
struct CodePairWord {
  static int groups(int d) { return ceil_div(d, 2); }
  static bool full(int d, int g0) { return 2 * (g0 + 8) <= d; }
  static __m256 load8(const uint8_t* row, int g0) {
    return _mm256_castsi256_ps(Half::x16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * g0))));
  }
  static uint32_t one(const uint8_t* row, int g, int d) {
    const int e = 2 * g;
    const uint32_t lo = Half::x1(row[e]);
    const uint32_t hi = e + 1 < d ? Half::x1(row[e + 1]) : 0u;
    return lo | (hi << 16);
  }
};

inline void pack_v_fp8_bf16(const uint8_t* src, int64_t row_stride, int rows, int dv, uint32_t* dst) {
  const __m256i top = _mm256_set1_epi32(static_cast<int>(0xFFFF0000u));
  for (int t = 0; t < ceil_div(rows, 2); ++t) {
    prefetch_rows_l1(src, row_stride, 2 * t + 8, 2, dv);
    const uint8_t* a = src + 2 * t * row_stride;
    const bool has_b = 2 * t + 1 < rows;
    const uint8_t* b = a + row_stride;
    uint32_t* o = dst + static_cast<int64_t>(t) * dv;
    int c = 0;
    for (; c + 8 <= dv; c += 8) {
      const __m256i x = _mm256_castps_si256(fp8x8_decode(load8_bytes(a + c)));
      const __m256i y = has_b ? _mm256_castps_si256(fp8x8_decode(load8_bytes(b + c))) : _mm256_setzero_si256();
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + c), _mm256_or_si256(_mm256_srli_epi32(x, 16), _mm256_and_si256(y, top)));
    }
    for (; c < dv; ++c) o[c] = fp8_to_bf16_bits(a[c]) | (has_b ? fp8_to_bf16_bits(b[c]) << 16 : 0u);
  }
}


}  // namespace x86

// The packers of one ISA's traits: W keys per K panel; int8 Q·Kᵀ codes kI8PerWord to a
// word: 4 (quads for VPDPBUSD: offset-128 Q, per-key correction after the panels) or 2
// (int16 pairs for VPMADDWD).
template <int W, int kI8PerWord>
struct X86Pack {
  static_assert(kI8PerWord == 2 || kI8PerWord == 4, "int8 Q·Kᵀ words hold 4 codes or 2 int16");
  static void q_i8(const int8_t* src, int64_t row_stride, int rows, int d, int32_t* dst) {
    if constexpr (kI8PerWord == 4) {
      x86::pack_q_i8(src, row_stride, rows, d, dst);
    } else {
      x86::pack_rows_as_pairs<x86::I8AsI16>(reinterpret_cast<const uint8_t*>(src), row_stride, rows, d,
                                            reinterpret_cast<uint32_t*>(dst));
    }
  }
  static void k_i8(const int8_t* src, int64_t row_stride, int rows, int d, int32_t* dst) {
    if constexpr (kI8PerWord == 4) {
      x86::pack_k_i8<W>(src, row_stride, rows, d, dst);
    } else {
      x86::pack_k_panels<W, x86::CodePairWord<x86::I8AsI16>>(reinterpret_cast<const uint8_t*>(src), row_stride,
                                                              rows, d, reinterpret_cast<uint32_t*>(dst));
    }
  }
  static void rows_fp8(const uint8_t* src, int64_t row_stride, int rows, int d, float* dst) {
    x86::pack_rows_fp8(src, row_stride, rows, d, dst);
  }
  static void k_fp8(const uint8_t* src, int64_t row_stride, int rows, int d, float* dst) {
    x86::pack_k_panels<W, x86::Fp8AsF32Word>(src, row_stride, rows, d, reinterpret_cast<uint32_t*>(dst));
  }
  static void v_fp8(const uint8_t* src, int64_t row_stride, int rows, int dv, const float* channel_scale,
                    const float* row_scale, float* dst) {
    x86::pack_v_rows(src, row_stride, rows, dv, channel_scale, row_scale, dst);
  }
  // The int8 P·V mode: V codes as K-key words, and P codes widened for 2-key words.
  template <int K>
  static void v_i8(const int8_t* src, int64_t row_stride, int rows, int dv, int dvp, int32_t* dst) {
    x86::pack_v_i8_words<K>(src, row_stride, rows, dv, dvp, dst);
  }
  static void widen_u8(const uint8_t* src, int n, uint16_t* dst) { x86::widen_u8(src, n, dst); }
  // bf16 pair layouts for VDPBF16PS (above).
  static void q_fp8_bf16(const uint8_t* src, int64_t row_stride, int rows, int d, uint32_t* dst) {
    x86::pack_rows_as_pairs<x86::Fp8AsBf16>(src, row_stride, rows, d, dst);
  }
  static void k_fp8_bf16(const uint8_t* src, int64_t row_stride, int rows, int d, uint32_t* dst) {
    x86::pack_k_panels<W, x86::CodePairWord<x86::Fp8AsBf16>>(src, row_stride, rows, d, dst);
  }
  static void v_fp8_bf16(const uint8_t* src, int64_t row_stride, int rows, int dv, uint32_t* dst) {
    x86::pack_v_fp8_bf16(src, row_stride, rows, dv, dst);
  }
};

}  // namespace
}  // namespace simd
}  // namespace sageattn
