// Scalar element operations of the quantizers (docs/CONTRACT.md §2), shared by the driver
// and every ISA's kernels (tails and NaN fallbacks). They have internal linkage on
// purpose: a header compiled into TUs with different target flags must not produce one
// COMDAT copy that the linker may hand to a TU built for a lesser CPU.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "sageattn/numeric.h"

namespace sageattn {
namespace quant_detail {
namespace {

// NaN-propagating max: a NaN anywhere in a group makes its amax (and scale) NaN. The
// result is the largest |v|, or |last NaN| when a NaN was seen.
inline float amax_step(float acc, float v) {
  const float a = std::fabs(v);
  return (a > acc || a != a) ? a : acc;
}

inline float scale_from_amax(float amax, float qmax) {
  const float clamped = (amax < 1e-12f) ? 1e-12f : amax;  // keeps NaN
  return clamped / qmax;
}

inline int8_t to_int8_code(float y) {
  if (!(y == y)) return 0;
  const float r = round_half_even(y);
  return static_cast<int8_t>(std::min(127.0f, std::max(-127.0f, r)));
}

inline uint8_t to_fp8_code(float y) { return f32_to_fp8_e4m3(y); }

inline float half_to_f32(uint16_t h, bool bf16) { return bf16 ? bf16_to_f32(h) : f16_to_f32(h); }

// The defining row fold of row_amax (also the SIMD paths' fallback for rows with a NaN,
// whose result depends on which NaN came last).
inline float row_amax_scalar(const uint16_t* x, int64_t d, bool bf16, const float* mean) {
  float acc = 0.0f;
  for (int64_t i = 0; i < d; ++i) {
    const float v = half_to_f32(x[i], bf16);
    acc = amax_step(acc, mean ? v - mean[i] : v);
  }
  return acc;
}

}  // namespace
}  // namespace quant_detail
}  // namespace sageattn
