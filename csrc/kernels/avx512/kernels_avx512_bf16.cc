// AVX-512 BF16 tile operations: the AVX-512 kernels plus VDPBF16PS for fp8 P·V and fp8
// Q·Kᵀ over exact codes (simd/avx512_bf16.h). Built with the AVX-512 flags plus
// -mavx512bf16 (CMakeLists.txt); only selected on a CPU that has them (isa_table.cc).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // see kernels_avx512.cc
#endif
#include "sageattn/simd/avx512_bf16.h"
#include "sageattn/simd/tile_kernels.h"

namespace sageattn {

const TileOps& avx512_bf16_tile_ops() {
  static const TileOps ops = simd::TileKernels<simd::Avx512Bf16>::table();
  return ops;
}

}  // namespace sageattn
