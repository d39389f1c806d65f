// The shared SIMD kernels instantiated on the AVX2 emulation of the AVX-512 traits
// (emu512.h). Compiled with the AVX2 flags; call only when the CPU has AVX2.
#include "emu512.h"
#include "sageattn/simd/tile_kernels.h"
#include "vec_math.h"

namespace sageattn {

const TileOps& emu512_tile_ops() {
  static const TileOps ops = simd::TileKernels<simd::Emu512>::table();
  return ops;
}

const TileOps& emu512_bf16_tile_ops() {
  static const TileOps ops = simd::TileKernels<simd::Emu512Bf16>::table();
  return ops;
}

}  // namespace sageattn

// Direct access to the vector math for the unit tests (exp2 accuracy, fp8 rounding).
namespace sageattn {
namespace simd_test {

bool vec_math_avx2(int op, const float* in, float* out, int n) { run_vec<simd::Avx2>(op, in, out, n); return true; }
bool vec_math_emu512(int op, const float* in, float* out, int n) { run_vec<simd::Emu512>(op, in, out, n); return true; }

// n a multiple of 16.
void dpbf16_emu512(const float* acc, const uint32_t* a, const uint32_t* b, float* out, int n) {
  using T = simd::Emu512Bf16;
  for (int i = 0; i + 16 <= n; i += 16) T::store(out + i, T::dot_bf16(T::load(acc + i), T::iload(a + i), T::iload(b + i)));
}

}  // namespace simd_test
}  // namespace sageattn
