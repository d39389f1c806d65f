// Scalar quantizer kernels: the definition every SIMD path must match bit for bit.
#include "sageattn/quant_common.h"
#include "sageattn/quant_ops.h"

namespace sageattn {
namespace {

using namespace quant_detail;

void row_amax(const uint16_t* x, int64_t rs, int64_t rows, int64_t d, bool bf16,
              const float* mean, float* amax) {
  for (int64_t r = 0; r < rows; ++r) amax[r] = row_amax_scalar(x + r * rs, d, bf16, mean);
}

template <QuantDType T>
void encode_rows_t(const uint16_t* x, int64_t rs, int64_t rows, int64_t d, bool bf16,
                   const float* mean, const float* row_scale, void* codes, int64_t cs) {
  for (int64_t r = 0; r < rows; ++r) {
    const uint16_t* src = x + r * rs;
    const float scale = row_scale[r];
    for (int64_t i = 0; i < d; ++i) {
      const float v0 = half_to_f32(src[i], bf16);
      const float y = (mean ? v0 - mean[i] : v0) / scale;
      if (T == QuantDType::kInt8) {
        static_cast<int8_t*>(codes)[r * cs + i] = to_int8_code(y);
      } else {
        static_cast<uint8_t*>(codes)[r * cs + i] = to_fp8_code(y);
      }
    }
  }
}

void encode_rows(const uint16_t* x, int64_t rs, int64_t rows, int64_t d, bool bf16,
                 const float* mean, const float* row_scale, QuantDType t, void* codes,
                 int64_t cs) {
  if (t == QuantDType::kInt8) {
    encode_rows_t<QuantDType::kInt8>(x, rs, rows, d, bf16, mean, row_scale, codes, cs);
  } else {
    encode_rows_t<QuantDType::kFP8>(x, rs, rows, d, bf16, mean, row_scale, codes, cs);
  }
}

void col_amax(const uint16_t* x, int64_t rs, int64_t rows, int64_t d, bool bf16, float* amax) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < d; ++i) amax[i] = amax_step(amax[i], half_to_f32(x[r * rs + i], bf16));
  }
}

void col_sum(const uint16_t* x, int64_t rs, int64_t rows, int64_t d, bool bf16, double* sum) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < d; ++i) sum[i] += half_to_f32(x[r * rs + i], bf16);
  }
}

template <QuantDType T>
void encode_cols_t(const uint16_t* x, int64_t rs, int64_t rows, int64_t d, bool bf16,
                   const float* col_scale, void* codes, int64_t cs) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < d; ++i) {
      const float y = half_to_f32(x[r * rs + i], bf16) / col_scale[i];
      if (T == QuantDType::kInt8) {
        static_cast<int8_t*>(codes)[r * cs + i] = to_int8_code(y);
      } else {
        static_cast<uint8_t*>(codes)[r * cs + i] = to_fp8_code(y);
      }
    }
  }
}

void encode_cols(const uint16_t* x, int64_t rs, int64_t rows, int64_t d, bool bf16,
                 const float* col_scale, QuantDType t, void* codes, int64_t cs) {
  if (t == QuantDType::kInt8) {
    encode_cols_t<QuantDType::kInt8>(x, rs, rows, d, bf16, col_scale, codes, cs);
  } else {
    encode_cols_t<QuantDType::kFP8>(x, rs, rows, d, bf16, col_scale, codes, cs);
  }
}

}  // namespace

const QuantOps& scalar_quant_ops() {
  static const QuantOps ops = {row_amax, encode_rows, col_amax, col_sum, encode_cols};
  return ops;
}

}  // namespace sageattn
