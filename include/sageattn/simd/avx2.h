// AVX2 (+FMA) mapping of the SIMD "traits" the tile kernels are written against
// (include/sageattn/simd/tile_kernels.h). Only this file and avx512.h hold intrinsics
// that differ between the ISA paths; every loop lives in tile_kernels.h.
//
// Include only from a translation unit compiled with -mavx2 -mfma -mf16c. Everything is
// in an unnamed namespace: each ISA's TU gets its own copies, so the linker can never
// merge an AVX-512-compiled inline function into the AVX2 path (or the scalar core).
#pragma once
#if !defined(__AVX2__) || !defined(__FMA__)
#error "sageattn/simd/avx2.h needs -mavx2 -mfma"
#endif
#include <immintrin.h>

#include <cstdint>

#include "sageattn/simd/x86_pack.h"

namespace sageattn {
namespace simd {
namespace {

// acc + x (VPADDD) in place: GCC 12 gave each accumulator of the int8 micro-kernels a
// register copy per step (8 moves per 8 VPMADDWD), which left the loop bound by
// instruction dispatch rather than by the multiplier; a tied asm operand avoids them.
inline __m256i add_in_place(__m256i acc, __m256i x) {
#if defined(__GNUC__)
  __asm__("vpaddd %1, %0, %0" : "+x"(acc) : "x"(x));
  return acc;
#else
  return _mm256_add_epi32(acc, x);
#endif
}

struct Avx2 {
  static constexpr int W = 8;  // fp32 lanes per vector = keys per packed K panel
  using F = __m256;            // 8 x fp32
  using I = __m256i;           // 8 x int32
  using M = __m256;            // lane mask (all-ones / all-zeros lanes)

  // Register blocking of the micro-kernels (16 ymm registers):
  //   qk int8: MR x NR accumulators + NR K vectors + 1 broadcast (+ VPMADDWD's product)
  //   qk fp8 / pv: MR x NR accumulators + NR vectors + 1 broadcast
  static constexpr int kQkI8Rows = 4, kQkI8Panels = 2;
  static constexpr int kQkF32Rows = 6, kQkF32Panels = 2;
  static constexpr int kPvRows = 6, kPvVecs = 2;
  // int8 P·V (VPMADDWD): fewer accumulators than fp32 P·V, which measured faster here
  // (the madd + add pairs need their temporaries in registers).
  static constexpr int kPvI8Rows = 4, kPvI8Vecs = 2;
  static constexpr int kQkI8PerWord = 2;  // int8 Q·Kᵀ on int16 pairs (Dot below)
  using Pack = X86Pack<W, kQkI8PerWord>;  // simd/x86_pack.h

  // ---- float
  static F zero() { return _mm256_setzero_ps(); }
  static F set1(float x) { return _mm256_set1_ps(x); }
  static F bcast(const float* p) { return _mm256_broadcast_ss(p); }
  static F load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, F v) { _mm256_storeu_ps(p, v); }
  static M first_n(int n) {  // lanes [0, n) set, 0 <= n <= W
    const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(n), iota));
  }
  // Lanes >= n read as `fill` and their memory is not touched.
  static F load_n(const float* p, int n, float fill) {
    const M m = first_n(n);
    return _mm256_blendv_ps(_mm256_set1_ps(fill), _mm256_maskload_ps(p, _mm256_castps_si256(m)), m);
  }
  static F load_n(const float* p, int n) { return _mm256_maskload_ps(p, _mm256_castps_si256(first_n(n))); }
  static void store_n(float* p, F v, int n) { _mm256_maskstore_ps(p, _mm256_castps_si256(first_n(n)), v); }
  static F add(F a, F b) { return _mm256_add_ps(a, b); }
  static F sub(F a, F b) { return _mm256_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm256_mul_ps(a, b); }
  static F fmadd(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }  // a*b + c, one rounding
  // max/min return the second operand when either is NaN (x86 semantics, kept by both ISAs).
  static F max(F a, F b) { return _mm256_max_ps(a, b); }
  static F min(F a, F b) { return _mm256_min_ps(a, b); }
  static F round_nearest(F a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static M lt(F a, F b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
  static F select(M m, F if_true, F if_false) { return _mm256_blendv_ps(if_false, if_true, m); }
  // Lane r of the result = the sum (max) over the 8 lanes of v[r]: an 8 x 8 transpose
  // folded into the reduction (21 instructions where 8 horizontal reductions take 48).
  static F rows_sum(const F (&v)[W]) { return reduce_rows(v, [](F a, F b) { return _mm256_add_ps(a, b); }); }
  static F rows_max(const F (&v)[W]) { return reduce_rows(v, [](F a, F b) { return _mm256_max_ps(a, b); }); }
  template <class Op>
  static F reduce_rows(const F (&v)[W], Op op) {
    // Folds 128-bit halves, then pairs and single floats; the result's lane L would hold
    // input 2(L % 4) + L / 4, so the inputs enter in the inverse order.
    static constexpr int kOrder[8] = {0, 4, 1, 5, 2, 6, 3, 7};
    F u[4];
    for (int r = 0; r < 4; ++r) {
      const F a = v[kOrder[2 * r]], b = v[kOrder[2 * r + 1]];
      u[r] = op(_mm256_permute2f128_ps(a, b, 0x20), _mm256_permute2f128_ps(a, b, 0x31));
    }
    F x[2];
    for (int r = 0; r < 2; ++r) x[r] = op(_mm256_unpacklo_ps(u[2 * r], u[2 * r + 1]), _mm256_unpackhi_ps(u[2 * r], u[2 * r + 1]));
    const __m256d a = _mm256_castps_pd(x[0]), b = _mm256_castps_pd(x[1]);
    return op(_mm256_castpd_ps(_mm256_unpacklo_pd(a, b)), _mm256_castpd_ps(_mm256_unpackhi_pd(a, b)));
  }

  static float first(F v) { return _mm256_cvtss_f32(v); }

  // ---- int32 lanes and bit casts
  static I i32(F v) { return _mm256_castps_si256(v); }
  static F f32(I v) { return _mm256_castsi256_ps(v); }
  static I iset1(int32_t x) { return _mm256_set1_epi32(x); }
  static I izero() { return _mm256_setzero_si256(); }
  static I iload(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }
  static I iadd(I a, I b) { return _mm256_add_epi32(a, b); }
  static I imax(I a, I b) { return _mm256_max_epi32(a, b); }
  static I iand(I a, I b) { return _mm256_and_si256(a, b); }
  static I ior(I a, I b) { return _mm256_or_si256(a, b); }
  template <int S> static I shl(I a) { return _mm256_slli_epi32(a, S); }
  template <int S> static I shr(I a) { return _mm256_srli_epi32(a, S); }  // logical
  static F cvt_i2f(I a) { return _mm256_cvtepi32_ps(a); }                 // round-half-even
  static I cvt_f2i(F a) { return _mm256_cvtps_epi32(a); }                 // for integral a

  // ---- int8 Q·Kᵀ on int16 pairs (pack_q / pack_k widen the codes): acc[lane] +=
  // q[0]·k[lane][0] + q[1]·k[lane][1] by VPMADDWD, exact for every int8 code (-128
  // included). The VPMADDUBSW idiom this replaced needed the sign of q moved onto k (two
  // more operations per product vector, and a slower exact path for tiles holding -128)
  // and a VPMADDWD by ones after it anyway: on Zen 4 it ran at 66 GMAC/s per core,
  // int16 pairs at 89 (tests/cpp/bench_tile_ops, one 128x128 tile, D = 128).
  struct Dot {
    struct Q { I q; };
    static Q prep(int32_t pair) { return {_mm256_set1_epi32(pair)}; }
    static I dot(I acc, const Q& q, I k) { return add_in_place(acc, _mm256_madd_epi16(q.q, k)); }
  };
  static constexpr bool kBf16Dot = false;  // VDPBF16PS kernels (simd/avx512_bf16.h)
  static constexpr bool kHasScalef = false;  // exp2v builds 2^n from exponent bits

  // ---- int8 P·V (sageattn/pv_int8.h, simd/pv_int8_kernels.h). VPMADDUBSW (u8 x s8) is
  // not exact here: it adds two products into a saturating int16 and 2·255·127 > 32767.
  // So words hold 2 keys widened to int16 (P zero-extended, V sign-extended) and
  // VPMADDWD adds each pair of products into int32: |p·v| <= 255·128, so a pair is at
  // most 65280 in magnitude, exact. That is as many multiplies per instruction (16) as
  // the VPMADDUBSW + VPMADDWD pair gives.
  struct PvI8 {
    static constexpr int kKeys = 2;
    static I dot(I acc, I p, I v) { return add_in_place(acc, _mm256_madd_epi16(p, v)); }
    static void store_codes(uint8_t* dst, I codes) {  // 8 lanes in [0, 255] -> 8 bytes
      const __m128i w = _mm_packus_epi32(_mm256_castsi256_si128(codes), _mm256_extracti128_si256(codes, 1));
      _mm_storel_epi64(reinterpret_cast<__m128i*>(dst), _mm_packus_epi16(w, w));
    }
  };
};

}  // namespace
}  // namespace simd
}  // namespace sageattn
