// AVX2 + FMA tile operations: the shared SIMD kernels (simd/tile_kernels.h) on the
// 8-lane mapping of simd/avx2.h. Built with -mavx2 -mfma -mf16c (CMakeLists.txt).
#include "sageattn/simd/avx2.h"
#include "sageattn/simd/tile_kernels.h"

namespace sageattn {

const TileOps& avx2_tile_ops() {
  static const TileOps ops = simd::TileKernels<simd::Avx2>::table();
  return ops;
}

}  // namespace sageattn
