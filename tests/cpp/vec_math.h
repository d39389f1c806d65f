// The kernels' vector math run over an array, for tests/cpp/test_tile_ops.cc: one body,
// instantiated per ISA by the translation unit compiled for it (emu512_ops.cc for AVX2
// and its AVX-512 emulation, avx512_math_real.cc for the real instructions).
// Include after the traits header and simd/tile_kernels.h.
#pragma once

namespace sageattn {
namespace simd_test {
namespace {

// op: 0 exp2, 1 fp8 rounding, 2 448·exp2, 3 255·exp2 (the 8-bit P modes' scaled exp2).
// n a multiple of T::W.
template <class T>
void run_vec(int op, const float* in, float* out, int n) {
  for (int i = 0; i + T::W <= n; i += T::W) {
    const typename T::F x = T::load(in + i);
    typename T::F y;
    switch (op) {
      case 0: y = simd::exp2v<T>(x); break;
      case 1: y = simd::fp8_round_nonneg<T>(x); break;
      case 2: y = simd::exp2v<T, 448>(x); break;
      default: y = simd::exp2v<T, 255>(x); break;
    }
    T::store(out + i, y);
  }
}

}  // namespace
}  // namespace simd_test
}  // namespace sageattn
