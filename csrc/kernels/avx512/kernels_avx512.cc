// AVX-512 tile operations: the shared SIMD kernels (simd/tile_kernels.h) on the 16-lane
// mapping of simd/avx512.h (VPDPBUSD for int8 Q·Kᵀ, FMA elsewhere). Built with the
// AVX-512 F/BW/VL/DQ/VNNI flags (CMakeLists.txt); only selected at run time on a
// CPU that has them (isa_table.cc).
// GCC 12's avx512fintrin.h trips -Wmaybe-uninitialized inside its own set1/setzero
// helpers (the `__Y = __Y` idiom of _mm512_undefined_*); nothing in this file is affected.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include "sageattn/simd/avx512.h"
#include "sageattn/simd/tile_kernels.h"

namespace sageattn {

const TileOps& avx512_tile_ops() {
  static const TileOps ops = simd::TileKernels<simd::Avx512>::table();
  return ops;
}

}  // namespace sageattn
