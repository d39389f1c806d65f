// The int8 P·V mode's scalar kernels (PvMode::kInt8): the definition the SIMD paths
// are tested against (sageattn/pv_int8.h states the numerics and the P layout).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "sageattn/numeric.h"
#include "sageattn/online_softmax.h"
#include "sageattn/pv_int8.h"
#include "sageattn/tile_ops.h"

namespace sageattn {

void softmax_u8_scalar(float* s, int lds, int mq, int nk, float* m, float* l, float* alpha, void* p, int ldp,
                       float* p_scale) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  const int padded = round_up4(nk);
  for (int i = 0; i < mq; ++i) {
    float* row = s + static_cast<int64_t>(i) * lds;
    uint8_t* codes = static_cast<uint8_t*>(p) + static_cast<int64_t>(i) * ldp;
    std::memset(codes, 0, padded);
    // The tile's row max t (NaN dropped: a NaN score poisons the row below) and the
    // codes 255·exp2(s - t), from the scores before the softmax step overwrites them.
    float t = kNegInf;
    for (int j = 0; j < nk; ++j) t = row[j] > t ? row[j] : t;
    if (std::isfinite(t)) {
      for (int j = 0; j < nk; ++j) {
        const float y = kInt8PCodeMax * std::exp2(row[j] - t);
        codes[j] = y == y ? static_cast<uint8_t>(round_half_even(std::min(y, kInt8PCodeMax))) : 0;  // NaN: poisoned below
      }
    }
    // m, l and alpha exactly as the other modes; p = exp2(s - m_new) left in the row.
    online_softmax_rows(row, lds, 1, nk, m + i, l + i, alpha + i, row, lds, [](float x) { return x; });
    bool nan_p = m[i] != m[i];
    for (int j = 0; j < nk && !nan_p; ++j) nan_p = row[j] != row[j];
    const float pmax = t == kNegInf ? 0.0f : std::exp2(t - m[i]);
    if (nan_p || pmax != pmax) {
      std::memset(codes, 0, padded);
      p_scale[i] = std::numeric_limits<float>::quiet_NaN();
    } else if (pmax == 0.0f) {  // no key seen yet, or every p of the tile underflowed
      std::memset(codes, 0, padded);
      p_scale[i] = 0.0f;
    } else {
      p_scale[i] = pmax / kInt8PCodeMax;
    }
  }
}

void pack_v_i8_scalar(const void* src, int64_t row_stride, DType /*v_dtype*/, int rows, int dv,
                      const float* /*channel_scale*/, const float* /*row_scale*/, void* dst) {
  const int8_t* in = static_cast<const int8_t*>(src);
  int8_t* out = static_cast<int8_t*>(dst);
  for (int r = 0; r < rows; ++r) std::memcpy(out + static_cast<int64_t>(r) * dv, in + r * row_stride, dv);
}

void pv_i8_scalar(const void* p, int ldp, const float* p_scale, const void* v, int mq, int nk, int dv,
                  const float* alpha, float v_scale, float* o, int ldo) {
  constexpr int kCols = 256;  // columns per int32 accumulator strip
  const uint8_t* codes = static_cast<const uint8_t*>(p);
  const int8_t* vc = static_cast<const int8_t*>(v);
  int32_t acc[kCols];
  for (int i = 0; i < mq; ++i) {
    const uint8_t* prow = codes + static_cast<int64_t>(i) * ldp;
    float* orow = o + static_cast<int64_t>(i) * ldo;
    const float w = p_scale[i] * v_scale;
    for (int c0 = 0; c0 < dv; c0 += kCols) {
      const int cols = std::min(kCols, dv - c0);
      std::fill(acc, acc + cols, 0);
      for (int j = 0; j < nk; ++j) {
        const int32_t pij = prow[j];
        const int8_t* vrow = vc + static_cast<int64_t>(j) * dv + c0;
        for (int c = 0; c < cols; ++c) acc[c] += pij * vrow[c];
      }
      for (int c = 0; c < cols; ++c) orow[c0 + c] = std::fma(static_cast<float>(acc[c]), w, orow[c0 + c] * alpha[i]);
    }
  }
}

}  // namespace sageattn
