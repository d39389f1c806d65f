// The AVX-512 vector math (VREDUCEPS / VSCALEFPS exp2, fp8 rounding) as the kernels run
// it, for the same checks as the AVX2 and emulated paths. Built with the AVX-512 flags;
// runs only when the CPU has them (the emulation does not model these instructions).
#include "sageattn/simd/avx512.h"
#include "sageattn/simd/tile_kernels.h"
#include "vec_math.h"

namespace sageattn {
namespace simd_test {

// n a multiple of 16; op as in vec_math.h; false (nothing computed) without the AVX-512
// subsets this file is compiled for.
bool vec_math_avx512_real(int op, const float* in, float* out, int n) {
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw") ||
      !__builtin_cpu_supports("avx512vl") || !__builtin_cpu_supports("avx512dq") ||
      !__builtin_cpu_supports("avx512vnni")) {
    return false;
  }
  run_vec<simd::Avx512>(op, in, out, n);
  return true;
}

}  // namespace simd_test
}  // namespace sageattn
