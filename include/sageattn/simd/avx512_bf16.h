// AVX-512 BF16 mapping: the AVX-512 traits plus VDPBF16PS, which runs fp8 P·V and fp8
// Q·Kᵀ on exact codes (every fp8 e4m3 value is a bf16 value).
//
// VDPBF16PS: acc[lane] = fma(a.bf16[2·lane], b.bf16[2·lane],
//                            fma(a.bf16[2·lane+1], b.bf16[2·lane+1], acc[lane])),
// RNE, inputs and outputs flushed from denormals, MXCSR ignored. With fp8 operands every
// product is exact and no sum reaches the denormal range (multiples of 2^-18), so the
// result is an fp32 sum of exact products: it differs from the scalar path only in
// summation order. tests/cpp/emu512.h emulates it for AVX2-only machines and
// tests/cpp checks this instruction against that emulation where it exists.
// Include only from a translation unit compiled with the AVX-512 BF16 flags.
#pragma once
#if !defined(__AVX512BF16__)
#error "sageattn/simd/avx512_bf16.h needs -mavx512bf16"
#endif
#include "sageattn/simd/avx512.h"

namespace sageattn {
namespace simd {
namespace {

struct Avx512Bf16 : Avx512 {
  static constexpr bool kBf16Dot = true;
  // 32 zmm: 8 x 2 accumulators + 2 vectors + 1 broadcast, as for FMA.
  static constexpr int kPvBf16Rows = 8, kPvBf16Vecs = 2;
  static constexpr int kQkBf16Rows = 8, kQkBf16Panels = 2;

  // acc += Σ over the two bf16 halves of each 32-bit lane of a · b.
  static F dot_bf16(F acc, I a, I b) {
    return _mm512_dpbf16_ps(acc, reinterpret_cast<__m512bh>(a), reinterpret_cast<__m512bh>(b));
  }
  // bf16 of each lane (VCVTNEPS2BF16 rounds, which changes nothing for values that are
  // bf16, as every P here is; a NaN stays a NaN).
  static void store_bf16(uint16_t* p, F v) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(v)));
  }
  static void store_bf16_2(uint16_t* p, F first, F second) {  // 2W lanes, one instruction
    _mm512_storeu_si512(p, reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(second, first)));
  }
  static void store_bf16_n(uint16_t* p, F v, int n) {
    _mm512_mask_cvtepi32_storeu_epi16(p, first_n(n), _mm512_srli_epi32(_mm512_castps_si512(v), 16));
  }
};

}  // namespace
}  // namespace simd
}  // namespace sageattn
