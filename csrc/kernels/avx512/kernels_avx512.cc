// Placeholder until the avx512 tile operations land: serves the scalar ones.
#include "sageattn/tile_ops.h"

namespace sageattn {
const TileOps& avx512_tile_ops() { return scalar_tile_ops(); }
}  // namespace sageattn
