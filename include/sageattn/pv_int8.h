// The int8 P·V mode (PvMode::kInt8, docs/DESIGN.md "P·V modes"): what every ISA's
// kernels share. P is u8 codes with one scale per row and key tile, V is int8 codes,
// their dot product is an exact int32 sum, and both scales are applied after it.
//
// P layout (the same on every ISA, so that any ISA's pv can be fed any P): row i of the
// tile at p + i*ldp bytes, code j at byte j, zero bytes from nk up to round_up(nk, 4);
// ldp is a multiple of 4. p_scale[i] = max_j p_ij / 255 over the tile's keys.
//
// Per row i of a key tile (s_ij the scores in log2 units, t_i = max_j s_ij the tile's
// own row max, m_i the running max, so p_ij = exp2(s_ij - m_i) and max_j p_ij = pmax):
//   code_ij   = RNE(min(255 * exp2(s_ij - t_i), 255))   (= RNE(p_ij / pmax * 255))
//   pmax      = exp2(t_i - m_i)                  (<= 1; 0 when every p_ij underflows)
//   p_scale_i = pmax / 255                       (one fp32 division)
//   dot_ic    = Σ_j code_ij · v_jc               (int32, exact)
//   o_ic      = fma(float(dot_ic), p_scale_i · v_scale, o_ic · alpha_i)
// A row with no visible key in the tile, or whose pmax underflows to 0, gets codes 0 and
// p_scale 0; a row holding NaN gets codes 0 and p_scale NaN (so its output is NaN, as in
// the other modes).
//
// Exactness: |code·v| <= 255·128 = 32640 for every int8 v (-128 included), so a sum of
// up to kInt8PvMaxKeys = 512 products stays below 2^24: the int32 sum is exact and so is
// its conversion to float. Every ISA then does the same fp32 operations in the same
// order, so pv is bitwise identical across ISAs for the same P and V.
#pragma once
#include <cstdint>

#include "sageattn/tensor.h"

namespace sageattn {

constexpr int kInt8PvMaxKeys = 512;  // keys per pv call (attention.cc passes 64)
constexpr float kInt8PCodeMax = 255.0f;

namespace {  // internal linkage: this header is compiled under several ISAs' flags
constexpr int round_up4(int n) { return (n + 3) & ~3; }
}  // namespace

// The scalar PvOps of the mode (csrc/kernels/scalar/pv_int8.cc); signatures as PvOps.
// pack_v copies V row-major (dst[j*dv + c]) and ignores the scales (they are applied
// after the dot).
void softmax_u8_scalar(float* s, int lds, int mq, int nk, float* m, float* l, float* alpha, void* p, int ldp,
                       float* p_scale);
void pack_v_i8_scalar(const void* src, int64_t row_stride, DType v_dtype, int rows, int dv,
                      const float* channel_scale, const float* row_scale, void* dst);
void pv_i8_scalar(const void* p, int ldp, const float* p_scale, const void* v, int mq, int nk, int dv,
                  const float* alpha, float v_scale, float* o, int ldo);

}  // namespace sageattn
