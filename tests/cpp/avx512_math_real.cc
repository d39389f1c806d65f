// The AVX-512 vector math (VREDUCEPS / VSCALEFPS exp2, fp8 rounding) as the kernels run
// it, for the same checks as the AVX2 and emulated paths. Built with the AVX-512 flags;
// runs only when the CPU has them (the emulation does not model these instructions).
#include "sageattn/simd/avx512.h"
#include "sageattn/simd/tile_kernels.h"

namespace sageattn {
namespace simd_test {

// n a multiple of 16; op as in emu512_ops.cc; false (nothing computed) without AVX-512.
bool vec_math_avx512_real(int op, const float* in, float* out, int n) {
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512dq")) return false;
  using T = simd::Avx512;
  for (int i = 0; i + T::W <= n; i += T::W) {
    const T::F x = T::load(in + i);
    T::F y;
    switch (op) {
      case 0: y = simd::exp2v<T>(x); break;
      case 1: y = simd::fp8_round_nonneg<T>(x); break;
      case 2: y = simd::exp2v<T, 448>(x); break;
      default: y = simd::exp2v<T, 255>(x); break;
    }
    T::store(out + i, y);
  }
  return true;
}

}  // namespace simd_test
}  // namespace sageattn
