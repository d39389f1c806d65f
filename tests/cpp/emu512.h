// A test-only stand-in for simd/avx512.h built from pairs of AVX2 registers: the same
// interface, the same 16-lane width, register blocking, offset-128 Q packing and VPDPBUSD
// semantics (u8 x s8, four products per int32 lane, no saturation). Instantiating
// simd/tile_kernels.h with it runs every line of the AVX-512 path except avx512.h's
// one-intrinsic wrappers on a CPU without AVX-512.
#pragma once
#include <cstring>

#include "sageattn/simd/avx2.h"

namespace sageattn {
namespace simd {
namespace {

struct Emu512 {
  static constexpr int W = 16;
  struct F { __m256 lo, hi; };
  struct I { __m256i lo, hi; };
  using M = uint32_t;  // like __mmask16: bit i = lane i

  static constexpr int kQkI8Rows = 8, kQkI8Panels = 2;
  static constexpr int kQkF32Rows = 8, kQkF32Panels = 2;
  static constexpr int kPvRows = 8, kPvVecs = 2;
  static constexpr int kPvI8Rows = 8, kPvI8Vecs = 2;
  static constexpr int kQkI8PerWord = 4;
  using Pack = X86Pack<W, kQkI8PerWord>;
  static constexpr bool kBf16Dot = false;  // VDPBF16PS kernels (simd/avx512_bf16.h)
  static constexpr bool kHasScalef = false;  // exp2v builds 2^n from exponent bits

  using A = Avx2;
  static int lo_n(int n) { return n < 8 ? n : 8; }
  static int hi_n(int n) { return n > 8 ? n - 8 : 0; }
  static __m256 lanes(M m, int half) {  // bit set -> all-ones lane
    const __m256i bits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    const __m256i v = _mm256_set1_epi32(static_cast<int>((m >> (8 * half)) & 0xFFu));
    return _mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_and_si256(v, bits), bits));
  }

  static F zero() { return {A::zero(), A::zero()}; }
  static F set1(float x) { return {A::set1(x), A::set1(x)}; }
  static F bcast(const float* p) { return {A::bcast(p), A::bcast(p)}; }
  static F load(const float* p) { return {A::load(p), A::load(p + 8)}; }
  static void store(float* p, F v) { A::store(p, v.lo); A::store(p + 8, v.hi); }
  static M first_n(int n) { return (1u << n) - 1u; }
  static F load_n(const float* p, int n, float fill) { return {A::load_n(p, lo_n(n), fill), A::load_n(p + 8, hi_n(n), fill)}; }
  static F load_n(const float* p, int n) { return {A::load_n(p, lo_n(n)), A::load_n(p + 8, hi_n(n))}; }
  static void store_n(float* p, F v, int n) {
    if (lo_n(n)) A::store_n(p, v.lo, lo_n(n));
    if (hi_n(n)) A::store_n(p + 8, v.hi, hi_n(n));
  }
  static F add(F a, F b) { return {A::add(a.lo, b.lo), A::add(a.hi, b.hi)}; }
  static F sub(F a, F b) { return {A::sub(a.lo, b.lo), A::sub(a.hi, b.hi)}; }
  static F mul(F a, F b) { return {A::mul(a.lo, b.lo), A::mul(a.hi, b.hi)}; }
  static F fmadd(F a, F b, F c) { return {A::fmadd(a.lo, b.lo, c.lo), A::fmadd(a.hi, b.hi, c.hi)}; }
  static F max(F a, F b) { return {A::max(a.lo, b.lo), A::max(a.hi, b.hi)}; }
  static F min(F a, F b) { return {A::min(a.lo, b.lo), A::min(a.hi, b.hi)}; }
  static F round_nearest(F a) { return {A::round_nearest(a.lo), A::round_nearest(a.hi)}; }
  static M lt(F a, F b) {
    return static_cast<M>(_mm256_movemask_ps(A::lt(a.lo, b.lo))) |
           (static_cast<M>(_mm256_movemask_ps(A::lt(a.hi, b.hi))) << 8);
  }
  static F select(M m, F t, F f) { return {A::select(lanes(m, 0), t.lo, f.lo), A::select(lanes(m, 1), t.hi, f.hi)}; }
  // Lane r = the fold of v[r]'s 16 lanes: its two halves first, then avx2.h's 8 x 8
  // transpose-and-fold for rows 0-7 and 8-15.
  static F rows_sum(const F (&v)[W]) { return fold_rows(v, [](__m256 a, __m256 b) { return _mm256_add_ps(a, b); }); }
  static F rows_max(const F (&v)[W]) { return fold_rows(v, [](__m256 a, __m256 b) { return _mm256_max_ps(a, b); }); }
  template <class Op>
  static F fold_rows(const F (&v)[W], Op op) {
    __m256 lo[8], hi[8];
    for (int r = 0; r < 8; ++r) {
      lo[r] = op(v[r].lo, v[r].hi);
      hi[r] = op(v[8 + r].lo, v[8 + r].hi);
    }
    return {A::reduce_rows(lo, op), A::reduce_rows(hi, op)};
  }
  static float first(F v) { return A::first(v.lo); }

  static I i32(F v) { return {A::i32(v.lo), A::i32(v.hi)}; }
  static F f32(I v) { return {A::f32(v.lo), A::f32(v.hi)}; }
  static I iset1(int32_t x) { return {A::iset1(x), A::iset1(x)}; }
  static I izero() { return {A::izero(), A::izero()}; }
  static I iload(const void* p) { return {A::iload(p), A::iload(static_cast<const char*>(p) + 32)}; }
  static I iadd(I a, I b) { return {A::iadd(a.lo, b.lo), A::iadd(a.hi, b.hi)}; }
  static I imax(I a, I b) { return {A::imax(a.lo, b.lo), A::imax(a.hi, b.hi)}; }
  static I iand(I a, I b) { return {A::iand(a.lo, b.lo), A::iand(a.hi, b.hi)}; }
  static I ior(I a, I b) { return {A::ior(a.lo, b.lo), A::ior(a.hi, b.hi)}; }
  template <int S> static I shl(I a) { return {A::shl<S>(a.lo), A::shl<S>(a.hi)}; }
  template <int S> static I shr(I a) { return {A::shr<S>(a.lo), A::shr<S>(a.hi)}; }
  static F cvt_i2f(I a) { return {A::cvt_i2f(a.lo), A::cvt_i2f(a.hi)}; }
  static I cvt_f2i(F a) { return {A::cvt_f2i(a.lo), A::cvt_f2i(a.hi)}; }

  // VPDPBUSD: acc += Σ_t u8(a[t]) · s8(b[t]) per int32 lane, exact (no saturation).
  static __m256i dpbusd256(__m256i acc, __m256i a, __m256i b) {
    const __m256i a_even = _mm256_and_si256(a, _mm256_set1_epi16(0x00FF));  // u8 -> i16
    const __m256i a_odd = _mm256_srli_epi16(a, 8);
    const __m256i b_even = _mm256_srai_epi16(_mm256_slli_epi16(b, 8), 8);  // s8 -> i16
    const __m256i b_odd = _mm256_srai_epi16(b, 8);
    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(a_even, b_even));
    return _mm256_add_epi32(acc, _mm256_madd_epi16(a_odd, b_odd));
  }
  struct Dot {
    struct Q { __m256i q; };
    static Q prep(int32_t quad) { return {_mm256_set1_epi32(quad)}; }
    static I dot(I acc, const Q& q, I k) { return {dpbusd256(acc.lo, q.q, k.lo), dpbusd256(acc.hi, q.q, k.hi)}; }
  };
  struct PvI8 {  // avx512.h's: VPDPBUSD on 4-key words
    static constexpr int kKeys = 4;
    static I dot(I acc, I p, I v) { return {dpbusd256(acc.lo, p.lo, v.lo), dpbusd256(acc.hi, p.hi, v.hi)}; }
    static void store_codes(uint8_t* dst, I codes) {
      A::PvI8::store_codes(dst, codes.lo);
      A::PvI8::store_codes(dst + 8, codes.hi);
    }
  };
};

// simd/avx512_bf16.h on the emulation: VDPBF16PS as the instruction defines it, per fp32
// lane: acc = fma(a.hi, b.hi, acc), then acc = fma(a.lo, b.lo, acc) (the odd bf16 of the
// pair first), RNE, every input (a, b and acc) and each step's result flushed from
// denormals to a signed zero. tests/cpp checks it against the real instruction on CPUs
// that have AVX-512 BF16.
struct Emu512Bf16 : Emu512 {
  static constexpr bool kBf16Dot = true;
  static constexpr int kPvBf16Rows = 8, kPvBf16Vecs = 2;
  static constexpr int kQkBf16Rows = 8, kQkBf16Panels = 2;

  static __m256 flush_denormal(__m256 x) {
    const __m256i xi = _mm256_castps_si256(x);
    const __m256i exponent = _mm256_and_si256(xi, _mm256_set1_epi32(0x7F800000));
    const __m256i denormal = _mm256_cmpeq_epi32(exponent, _mm256_setzero_si256());
    const __m256i sign = _mm256_and_si256(xi, _mm256_set1_epi32(static_cast<int>(0x80000000u)));
    return _mm256_castsi256_ps(_mm256_blendv_epi8(xi, sign, denormal));
  }
  static __m256 dpbf16_256(__m256 acc, __m256i a, __m256i b) {
    const __m256i top = _mm256_set1_epi32(static_cast<int>(0xFFFF0000u));
    const __m256 a_hi = flush_denormal(_mm256_castsi256_ps(_mm256_and_si256(a, top)));
    const __m256 b_hi = flush_denormal(_mm256_castsi256_ps(_mm256_and_si256(b, top)));
    const __m256 a_lo = flush_denormal(_mm256_castsi256_ps(_mm256_slli_epi32(a, 16)));
    const __m256 b_lo = flush_denormal(_mm256_castsi256_ps(_mm256_slli_epi32(b, 16)));
    acc = flush_denormal(_mm256_fmadd_ps(a_hi, b_hi, flush_denormal(acc)));
    return flush_denormal(_mm256_fmadd_ps(a_lo, b_lo, acc));
  }
  static F dot_bf16(F acc, I a, I b) { return {dpbf16_256(acc.lo, a.lo, b.lo), dpbf16_256(acc.hi, a.hi, b.hi)}; }

  static void store_bf16(uint16_t* p, F v) {
    const __m256i a = _mm256_srli_epi32(_mm256_castps_si256(v.lo), 16);
    const __m256i b = _mm256_srli_epi32(_mm256_castps_si256(v.hi), 16);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm256_permute4x64_epi64(_mm256_packus_epi32(a, b), 0xD8));
  }
  static void store_bf16_2(uint16_t* p, F first, F second) {
    store_bf16(p, first);
    store_bf16(p + W, second);
  }
  static void store_bf16_n(uint16_t* p, F v, int n) {
    uint16_t tmp[16];
    store_bf16(tmp, v);
    std::memcpy(p, tmp, static_cast<size_t>(n) * 2);
  }
};

}  // namespace
}  // namespace simd
}  // namespace sageattn
