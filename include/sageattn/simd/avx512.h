// AVX-512 (F/BW/VL/DQ + VNNI) mapping of the SIMD traits of simd/tile_kernels.h.
//
// Kept deliberately thin: every loop lives in tile_kernels.h and runs on AVX2 machines
// through simd/avx2.h, and tests/cpp runs the same templates on an AVX2 emulation of this
// exact interface with this file's widths and blocking (tests/cpp/emu512.h). What only
// an AVX-512 CPU executes is the one-intrinsic functions below. Notes for review:
//   - masks are __mmask16 bit sets; select(m, t, f) = mask_blend(m, f, t) (blend takes
//     its second vector where the bit is set);
//   - vmaxps/vminps zmm return the second operand when either is NaN, like ymm;
//   - the int8 dot is VPDPBUSD: u8 (first vector) x s8 (second), 4 products summed into
//     each int32 lane without saturation. Q is packed as q + 128 (code quads) and
//     pack_k stores -128·Σk per key, which seeds the accumulators: exact for every int8.
//   - VDPBF16PS is not used here: P·V runs on FMA (V carries its scale, so it is not bf16-exact)
//     and fp8 Q·K on FMA over decoded codes (bit-exact with the scalar order).
// Include only from a translation unit compiled with the AVX-512 flags (CMakeLists.txt).
#pragma once
#if !defined(__AVX512F__) || !defined(__AVX512BW__) || !defined(__AVX512VNNI__) || !defined(__FMA__)
#error "sageattn/simd/avx512.h needs -mavx512f -mavx512bw -mavx512vnni -mfma"
#endif
#include <immintrin.h>

#include <cstdint>

#include "sageattn/simd/x86_pack.h"

namespace sageattn {
namespace simd {
namespace {

// acc + VPDPBUSD(u, s) in place. GCC 12 compiles the intrinsic in the micro-kernels'
// loops with two register copies per instruction and spills the accumulators (16 dots
// came with 48 moves and stack traffic); a tied asm operand keeps each accumulator in its
// register (register operands only: offered a memory operand, GCC spilled V to the
// stack to use it).
inline __m512i dpbusd_in_place(__m512i acc, __m512i u, __m512i s) {
#if defined(__GNUC__)
  __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(u), "v"(s));
  return acc;
#else
  return _mm512_dpbusd_epi32(acc, u, s);
#endif
}

struct Avx512 {
  static constexpr int W = 16;
  using F = __m512;
  using I = __m512i;
  using M = __mmask16;

  // 32 zmm registers: 8 x 2 accumulators + 2 K/V vectors + 1 broadcast. 8 rows divide
  // the 64-row (and 128-row) query tiles; 2 panels x 16 keys = 32 keys, 2 x 16 = 32 columns.
  static constexpr int kQkI8Rows = 8, kQkI8Panels = 2;
  static constexpr int kQkF32Rows = 8, kQkF32Panels = 2;
  static constexpr int kPvRows = 8, kPvVecs = 2;
  static constexpr int kPvI8Rows = 8, kPvI8Vecs = 2;  // int8 P·V (VPDPBUSD)
  static constexpr int kQkI8PerWord = 4;  // int8 Q·Kᵀ on code quads (VPDPBUSD)
  using Pack = X86Pack<W, kQkI8PerWord>;  // simd/x86_pack.h: 256-bit packers, shared
  static constexpr bool kBf16Dot = false;  // VDPBF16PS kernels (simd/avx512_bf16.h)

  // ---- float
  static F zero() { return _mm512_setzero_ps(); }
  static F set1(float x) { return _mm512_set1_ps(x); }
  static F bcast(const float* p) { return _mm512_set1_ps(*p); }
  static F load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, F v) { _mm512_storeu_ps(p, v); }
  static M first_n(int n) { return static_cast<M>((1u << n) - 1u); }  // 0 <= n <= 16
  static F load_n(const float* p, int n, float fill) { return _mm512_mask_loadu_ps(_mm512_set1_ps(fill), first_n(n), p); }
  static F load_n(const float* p, int n) { return _mm512_maskz_loadu_ps(first_n(n), p); }
  static void store_n(float* p, F v, int n) { _mm512_mask_storeu_ps(p, first_n(n), v); }
  static F add(F a, F b) { return _mm512_add_ps(a, b); }
  static F sub(F a, F b) { return _mm512_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm512_mul_ps(a, b); }
  static F fmadd(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
  static F max(F a, F b) { return _mm512_max_ps(a, b); }
  static F min(F a, F b) { return _mm512_min_ps(a, b); }
  static F round_nearest(F a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static M lt(F a, F b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
  static F select(M m, F if_true, F if_false) { return _mm512_mask_blend_ps(m, if_false, if_true); }
  static float first(F v) { return _mm512_cvtss_f32(v); }
  // Lane r of the result = the sum (max) over the 16 lanes of v[r]: a 16 x 16 transpose
  // folded into the reduction, 45 instructions where 16 horizontal reductions take 128.
  static F rows_sum(const F (&v)[W]) { return reduce_rows(v, [](F a, F b) { return _mm512_add_ps(a, b); }); }
  static F rows_max(const F (&v)[W]) { return reduce_rows(v, [](F a, F b) { return _mm512_max_ps(a, b); }); }
  template <class Op>
  static F reduce_rows(const F (&v)[W], Op op) {
    // Each step halves the vectors and folds one level (256-bit halves, 128-bit lanes,
    // then pairs and single floats of each 128-bit lane). The result's lane 4j + k would
    // hold input 4k + j, so the inputs enter in that (4 x 4 transposed) order.
    static constexpr int kOrder[16] = {0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15};
    F u[8];
    for (int r = 0; r < 8; ++r) {
      const F a = v[kOrder[2 * r]], b = v[kOrder[2 * r + 1]];
      u[r] = op(_mm512_shuffle_f32x4(a, b, 0x44), _mm512_shuffle_f32x4(a, b, 0xEE));
    }
    F w[4];
    for (int r = 0; r < 4; ++r) {
      const F a = u[2 * r], b = u[2 * r + 1];
      w[r] = op(_mm512_shuffle_f32x4(a, b, 0x88), _mm512_shuffle_f32x4(a, b, 0xDD));
    }
    F x[2];
    for (int r = 0; r < 2; ++r) x[r] = op(_mm512_unpacklo_ps(w[2 * r], w[2 * r + 1]), _mm512_unpackhi_ps(w[2 * r], w[2 * r + 1]));
    const __m512d a = _mm512_castps_pd(x[0]), b = _mm512_castps_pd(x[1]);
    return op(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)), _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
  }
  // VSCALEFPS: a·2^floor(b), rounded once (denormal results included, MXCSR's RNE).
  static constexpr bool kHasScalef = true;
  static F scalef(F a, F b) { return _mm512_scalef_ps(a, b); }
  // a - round_nearest(a) (VREDUCEPS), exact; +-inf give 0, so exp2's -inf needs no clamp.
  static F frac_nearest(F a) { return _mm512_reduce_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }

  // ---- int32 lanes and bit casts
  static I i32(F v) { return _mm512_castps_si512(v); }
  static F f32(I v) { return _mm512_castsi512_ps(v); }
  static I iset1(int32_t x) { return _mm512_set1_epi32(x); }
  static I izero() { return _mm512_setzero_si512(); }
  static I iload(const void* p) { return _mm512_loadu_si512(p); }
  static I iadd(I a, I b) { return _mm512_add_epi32(a, b); }
  static I imax(I a, I b) { return _mm512_max_epi32(a, b); }
  static I iand(I a, I b) { return _mm512_and_si512(a, b); }
  static I ior(I a, I b) { return _mm512_or_si512(a, b); }
  template <int S> static I shl(I a) { return _mm512_slli_epi32(a, S); }
  template <int S> static I shr(I a) { return _mm512_srli_epi32(a, S); }
  static F cvt_i2f(I a) { return _mm512_cvtepi32_ps(a); }
  static I cvt_f2i(F a) { return _mm512_cvtps_epi32(a); }

  // ---- int8 dot: acc[lane] += Σ_t u8(q[t] + 128) · k[lane][t] (VPDPBUSD); the -128·Σk
  // seed from pack_k makes it Σ q·k exactly.
  struct Dot {
    struct Q { I q; };
    static Q prep(int32_t quad) { return {_mm512_set1_epi32(quad)}; }
    static I dot(I acc, const Q& q, I k) { return dpbusd_in_place(acc, q.q, k); }
  };

  // ---- int8 P·V (sageattn/pv_int8.h): VPDPBUSD takes u8 P codes and s8 V codes as they
  // are, 4 keys per int32 word, exact (no saturation, no offset).
  struct PvI8 {
    static constexpr int kKeys = 4;
    static I dot(I acc, I p, I v) { return dpbusd_in_place(acc, p, v); }
    static void store_codes(uint8_t* dst, I codes) {  // 16 lanes in [0, 255] -> 16 bytes
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), _mm512_cvtepi32_epi8(codes));
    }
  };
};

}  // namespace
}  // namespace simd
}  // namespace sageattn
