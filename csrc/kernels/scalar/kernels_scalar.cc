// The scalar reference tile operations: the definition every SIMD path is tested
// against. Plain loops, one accumulation order, no cleverness.
#include <cmath>
#include <cstring>
#include <limits>

#include "sageattn/numeric.h"
#include "sageattn/online_softmax.h"
#include "sageattn/pv_int8.h"
#include "sageattn/tile_ops.h"

namespace sageattn {
namespace {

// Q and K tiles: int8 codes stay int8 (exact int32 dot); fp8 codes become floats.
void pack_rows(const void* src, int64_t row_stride, int rows, int d, QuantDType t, void* dst) {
  if (t == QuantDType::kInt8) {
    const int8_t* s = static_cast<const int8_t*>(src);
    int8_t* o = static_cast<int8_t*>(dst);
    for (int r = 0; r < rows; ++r) std::memcpy(o + static_cast<int64_t>(r) * d, s + r * row_stride, d);
  } else {
    const uint8_t* s = static_cast<const uint8_t*>(src);
    float* o = static_cast<float*>(dst);
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < d; ++c) o[static_cast<int64_t>(r) * d + c] = fp8_e4m3_to_f32(s[r * row_stride + c]);
  }
}

void qk(const void* qp, const void* kp, int mq, int nk, int d, QuantDType t,
        const float* row_scale, const float* col_scale, float* s, int lds) {
  for (int i = 0; i < mq; ++i) {
    for (int j = 0; j < nk; ++j) {
      float dot;
      if (t == QuantDType::kInt8) {
        const int8_t* q = static_cast<const int8_t*>(qp) + static_cast<int64_t>(i) * d;
        const int8_t* k = static_cast<const int8_t*>(kp) + static_cast<int64_t>(j) * d;
        int32_t acc = 0;
        for (int c = 0; c < d; ++c) acc += static_cast<int32_t>(q[c]) * k[c];
        dot = static_cast<float>(acc);
      } else {
        const float* q = static_cast<const float*>(qp) + static_cast<int64_t>(i) * d;
        const float* k = static_cast<const float*>(kp) + static_cast<int64_t>(j) * d;
        float acc = 0.0f;
        for (int c = 0; c < d; ++c) acc += q[c] * k[c];
        dot = acc;
      }
      s[static_cast<int64_t>(i) * lds + j] = dot * row_scale[i] * col_scale[j];
    }
  }
}

// P·V in fp8 (PvMode::kFp8): P = fp8(448·p) as float, V decoded and scaled.
void softmax_fp8(float* s, int lds, int mq, int nk, float* m, float* l, float* alpha, void* p, int ldp,
                 float* /*p_scale*/) {
  online_softmax_rows(s, lds, mq, nk, m, l, alpha, static_cast<float*>(p), ldp,
                      [](float x) { return fp8_e4m3_to_f32(f32_to_fp8_e4m3(kFp8Max * x)); });
}

void pack_v_fp8(const void* src, int64_t row_stride, DType /*v_dtype*/, int rows, int dv,
                const float* channel_scale, const float* row_scale, void* dst) {
  const uint8_t* in = static_cast<const uint8_t*>(src);
  float* out = static_cast<float*>(dst);
  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < dv; ++c) {
      const float scale = channel_scale ? channel_scale[c] : row_scale[r];
      out[static_cast<int64_t>(r) * dv + c] = fp8_e4m3_to_f32(in[r * row_stride + c]) * scale;
    }
  }
}

// fp32 P times fp32 V (V's scale already folded in: v_scale is 1).
void pv_f32(const void* pp, int ldp, const float* /*p_scale*/, const void* vp, int mq, int nk, int dv,
            const float* alpha, float /*v_scale*/, float* o, int ldo) {
  const float* p = static_cast<const float*>(pp);
  const float* v = static_cast<const float*>(vp);
  for (int i = 0; i < mq; ++i) {
    float* orow = o + static_cast<int64_t>(i) * ldo;
    for (int c = 0; c < dv; ++c) orow[c] *= alpha[i];
    for (int j = 0; j < nk; ++j) {
      const float pij = p[static_cast<int64_t>(i) * ldp + j];
      const float* vrow = v + static_cast<int64_t>(j) * dv;
      for (int c = 0; c < dv; ++c) orow[c] += pij * vrow[c];
    }
  }
}

int64_t k_bytes(int rows, int d, QuantDType t) {
  return static_cast<int64_t>(rows) * d * (t == QuantDType::kInt8 ? 1 : 4);
}
int64_t v_bytes_i8(int rows, int dv) { return static_cast<int64_t>(rows) * dv; }  // pack_v_i8_scalar: row-major

}  // namespace

const TileOps& scalar_tile_ops() {
  static const TileOps ops{pack_rows, pack_rows, qk, k_bytes,
                           {/* kFp8  */ PvOps{kFp8Max, false, softmax_fp8, pack_v_fp8, pv_f32, v_bytes_f32},
                            /* kHalf */ PvOps{1.0f, false, softmax_p16, pack_v_half, pv_f32, v_bytes_f32},
                            /* kInt8 */ PvOps{1.0f, true, softmax_u8_scalar, pack_v_i8_scalar, pv_i8_scalar, v_bytes_i8}},
                           {PvOps{}, PvOps{}, PvOps{}}};
  return ops;
}

}  // namespace sageattn
