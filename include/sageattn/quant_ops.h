// The row kernels of the quantizers: the one place where their ISA paths differ.
// quantize.cc owns the loops over (b, h, token chunk), the scale groups, threading and
// every stride other than "unit stride along D"; each ISA supplies these kernels.
//
// Every kernel reads `rows` rows of `d` half-precision values (bf16 when `bf16`, else
// fp16): row r starts at x + r * x_row_stride (elements) and its elements are
// contiguous. Results must be bitwise identical on every ISA, NaN payloads included:
// the scalar kernels (csrc/kernels/scalar/quantize_scalar.cc) are the definition.
#pragma once
#include <cstdint>

#include "sageattn/isa.h"
#include "sageattn/quantize.h"

namespace sageattn {

struct QuantOps {
  // amax[r] = the NaN-propagating fold acc = amax_step(acc, x[r, i] - mean[i]) over
  // i = 0..d-1 from acc = 0 (quant_common.h); `mean` (contiguous, d floats) may be null.
  void (*row_amax)(const uint16_t* x, int64_t x_row_stride, int64_t rows, int64_t d, bool bf16,
                   const float* mean, float* amax);

  // codes[r * codes_row_stride + i] = encode_t((x[r, i] - mean[i]) / row_scale[r]), a true
  // fp32 division; encode is int8 RNE saturating (NaN -> 0) or fp8 e4m3fn.
  void (*encode_rows)(const uint16_t* x, int64_t x_row_stride, int64_t rows, int64_t d,
                      bool bf16, const float* mean, const float* row_scale, QuantDType t,
                      void* codes, int64_t codes_row_stride);

  // amax[i] = amax_step(amax[i], x[r, i]) for r = 0..rows-1 in order (accumulates).
  void (*col_amax)(const uint16_t* x, int64_t x_row_stride, int64_t rows, int64_t d, bool bf16,
                   float* amax);

  // sum[i] += double(x[r, i]) for r = 0..rows-1 in order (accumulates; exact order).
  // Finite sums are bitwise defined; which NaN a NaN sum carries is not (compilers
  // commute additions), so callers must canonicalize NaN sums.
  void (*col_sum)(const uint16_t* x, int64_t x_row_stride, int64_t rows, int64_t d, bool bf16,
                  double* sum);

  // codes[r * codes_row_stride + i] = encode_t(x[r, i] / col_scale[i]), encode as in
  // encode_rows (V's per-channel recipe: fp8 by default, int8 for the int8 P·V mode).
  void (*encode_cols)(const uint16_t* x, int64_t x_row_stride, int64_t rows, int64_t d,
                      bool bf16, const float* col_scale, QuantDType t, void* codes,
                      int64_t codes_row_stride);
};

const QuantOps& scalar_quant_ops();
const QuantOps& avx2_quant_ops();
const QuantOps& avx512_quant_ops();

}  // namespace sageattn
