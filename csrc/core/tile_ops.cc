#include "sageattn/tile_ops.h"

#include "sageattn/error.h"

namespace sageattn {

const TileOps& tile_ops_for(Isa isa) {
  switch (isa) {
#if defined(SAGEATTN_HAVE_X86_KERNELS)
    case Isa::kAvx2: return avx2_tile_ops();
    case Isa::kAvx512: return avx512_tile_ops();
#endif
    default: return scalar_tile_ops();
  }
}

}  // namespace sageattn
