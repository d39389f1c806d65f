// The inner tile operations of the flash loop: the one place where ISA paths differ.
// attention.cc owns the loop (tiling, masking, threading); each ISA supplies these.
// Packed buffers are opaque to the loop; each holds at most 4 bytes per element.
#pragma once
#include <cstdint>

#include "sageattn/isa.h"
#include "sageattn/quantize.h"
#include "sageattn/tensor.h"

namespace sageattn {

// How P·V runs (docs/CONTRACT.md §3). The integer values are the FFI's `pv_mode`.
//   kFp8:  P = fp8(448·p), V = fp8 codes with their scale (SageAttention2's default);
//   kHalf: P = fp16(p), V unquantized fp16/bf16 (upstream's "pv_fp16" variants);
//   kInt8: P = u8 codes with one scale per row and key tile, V = int8 codes (opt-in).
enum class PvMode { kFp8 = 0, kHalf = 1, kInt8 = 2 };
constexpr int kPvModeCount = 3;

// One P·V mode's kernels. The loop calls, per key tile: softmax (scores -> P), pack_v
// (V tile -> packed V), pv (O = O·alpha + P·V). P, packed V and their layouts belong
// to the mode; the loop only sizes their buffers (4 bytes per element of the tile).
struct PvOps {
  // P holds p_unit·p: the loop divides each finished row by p_unit·l.
  float p_unit;
  // false: pack_v folds V's scale into the packed V and pv gets v_scale = 1.
  // true:  pack_v packs raw codes (scales are null); V's scale is applied after the dot,
  //        per key tile through pv's v_scale (per-token V) or per output element by the
  //        loop after the last tile (per-channel V).
  bool v_scale_after_dot;

  // Online-softmax step for one tile in log2 units: m (row max) and l (row sum of the
  // unquantized p) are updated, alpha[i] = exp2(m_old - m_new) returned, and P written
  // to p (row i at p + i*ldp elements of the mode's P type), with p_scale[i] the row's P
  // scale where the mode has one (kInt8; others leave p_scale alone). Rows whose max is
  // still -inf get p = 0 and alpha = 1. s is scratch afterwards.
  void (*softmax)(float* s, int lds, int mq, int nk, float* m, float* l, float* alpha, void* p, int ldp,
                  float* p_scale);

  // V tile: rows `rows` x `dv` elements of `v_dtype` at src (row r at src + r*row_stride
  // elements). Scales as in v_scale_after_dot: channel_scale[c] (per-channel V) or
  // row_scale[r] (per-token V), one of them non-null, or both null.
  void (*pack_v)(const void* src, int64_t row_stride, DType v_dtype, int rows, int dv,
                 const float* channel_scale, const float* row_scale, void* dst);

  // o[i*ldo + c] = o[i*ldo + c] * alpha[i] + v_scale * Σ_j P[i, j] * V[j, c]
  // (times p_scale[i] in modes that have one).
  void (*pv)(const void* p, int ldp, const float* p_scale, const void* v, int mq, int nk, int dv,
             const float* alpha, float v_scale, float* o, int ldo);

  // Bytes pack_v writes for `rows` x `dv` (at most 4 per element).
  int64_t (*v_bytes)(int rows, int dv);

  bool built() const { return softmax != nullptr; }
};

struct TileOps {
  // Copy `rows` code rows (row r at src + r*row_stride elements, `d` elements each) into
  // this ISA's packed Q / K layout. Rows up to round_rows(rows) are zero-filled.
  void (*pack_q)(const void* src, int64_t row_stride, int rows, int d, QuantDType t, void* dst);
  void (*pack_k)(const void* src, int64_t row_stride, int rows, int d, QuantDType t, void* dst);

  // S[i*lds + j] = row_scale[i] * col_scale[j] * Σ_d q[i,d]·k[j,d]; the dot product is
  // exact (int32 for int8, exact fp8 products summed in fp32 for fp8).
  void (*qk)(const void* qp, const void* kp, int mq, int nk, int d, QuantDType t,
             const float* row_scale, const float* col_scale, float* s, int lds);

  // Bytes pack_k writes for `rows` keys of `d` codes (at most 4 per element + 256).
  int64_t (*k_bytes)(int rows, int d, QuantDType t);

  // The P·V modes, indexed by PvMode; a mode this ISA does not build has null entries.
  PvOps pv[kPvModeCount];
  // Where pv[mode] applies V's scale after the dot, which needs one V scale per key
  // tile: the same mode with the scale folded into V, for V token groupings whose group
  // changes inside a key tile (none of the recipes; only direct core calls). Null where
  // pv[mode] already folds the scale.
  PvOps pv_folded_scale[kPvModeCount];

  const PvOps& pv_ops(PvMode mode) const { return pv[static_cast<int>(mode)]; }
  const PvOps& pv_ops_folded_scale(PvMode mode) const { return pv_folded_scale[static_cast<int>(mode)]; }
};

const TileOps& scalar_tile_ops();
const TileOps& avx2_tile_ops();
const TileOps& avx512_tile_ops();
const TileOps& avx512_bf16_tile_ops();

// The 16-bit P·V mode's portable pieces (csrc/kernels/scalar/pv_half.cc), shared by
// every ISA's table: P = fp16(p) as float, V decoded to float; pv is the ISA's FMA pv.
void softmax_p16(float* s, int lds, int mq, int nk, float* m, float* l, float* alpha, void* p, int ldp,
                 float* p_scale);
void pack_v_half(const void* src, int64_t row_stride, DType v_dtype, int rows, int dv, const float* channel_scale,
                 const float* row_scale, void* dst);
int64_t v_bytes_f32(int rows, int dv);  // a row-major fp32 V tile

}  // namespace sageattn
