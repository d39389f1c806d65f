// The inner tile operations of the flash loop: the one place where ISA paths differ.
// attention.cc owns the loop (tiling, masking, threading); each ISA supplies these.
// Packed buffers are opaque to the loop; each holds at most 4 bytes per element.
#pragma once
#include <cstdint>

#include "sageattn/isa.h"
#include "sageattn/quantize.h"

namespace sageattn {

struct TileOps {
  // Copy `rows` code rows (row r at src + r*row_stride elements, `d` elements each) into
  // this ISA's packed Q / K layout. Rows up to round_rows(rows) are zero-filled.
  void (*pack_q)(const void* src, int64_t row_stride, int rows, int d, QuantDType t, void* dst);
  void (*pack_k)(const void* src, int64_t row_stride, int rows, int d, QuantDType t, void* dst);

  // S[i*lds + j] = row_scale[i] * col_scale[j] * Σ_d q[i,d]·k[j,d]; the dot product is
  // exact (int32 for int8, exact fp8 products summed in fp32 for fp8).
  void (*qk)(const void* qp, const void* kp, int mq, int nk, int d, QuantDType t,
             const float* row_scale, const float* col_scale, float* s, int lds);

  // Online-softmax step for one tile in log2 units: m (row max) and l (row sum of the
  // unquantized p) are updated, alpha[i] = exp2(m_old - m_new) returned, and s is
  // overwritten with fp8(448 * exp2(s - m_new)) as float. Rows whose max is still -inf
  // get p = 0 and alpha = 1.
  void (*softmax)(float* s, int lds, int mq, int nk, float* m, float* l, float* alpha);

  // V tile: dst[j*dv + c] = fp8_decode(src[j*row_stride + c]) * scale, where scale is
  // channel_scale[c] (per-channel V) or row_scale[j] (per-token V); one of them is null.
  void (*pack_v)(const uint8_t* src, int64_t row_stride, int rows, int dv,
                 const float* channel_scale, const float* row_scale, float* dst);

  // o[i*ldo + c] = o[i*ldo + c] * alpha[i] + Σ_j p[i*ldp + j] * v[j*dv + c].
  void (*pv)(const float* p, int ldp, const float* v, int mq, int nk, int dv,
             const float* alpha, float* o, int ldo);
};

const TileOps& scalar_tile_ops();
const TileOps& avx2_tile_ops();
const TileOps& avx512_tile_ops();
const TileOps& tile_ops_for(Isa isa);

}  // namespace sageattn
