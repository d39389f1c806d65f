// The 16-bit P·V mode's softmax and V packing (PvMode::kHalf): a rarely used mode, so
// these portable loops serve every ISA's table; pv is each ISA's fp32 FMA kernel.
#include "sageattn/numeric.h"
#include "sageattn/online_softmax.h"
#include "sageattn/tile_ops.h"

namespace sageattn {

void softmax_p16(float* s, int lds, int mq, int nk, float* m, float* l, float* alpha, void* p, int ldp,
                 float* /*p_scale*/) {
  online_softmax_rows(s, lds, mq, nk, m, l, alpha, static_cast<float*>(p), ldp,
                      [](float x) { return f16_to_f32(f32_to_f16(x)); });
}

void pack_v_half(const void* src, int64_t row_stride, DType v_dtype, int rows, int dv, const float* /*channel_scale*/,
                 const float* /*row_scale*/, void* dst) {
  const uint16_t* in = static_cast<const uint16_t*>(src);
  float* out = static_cast<float*>(dst);
  const bool bf16 = v_dtype == DType::kBF16;
  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < dv; ++c) {
      const uint16_t h = in[r * row_stride + c];
      out[static_cast<int64_t>(r) * dv + c] = bf16 ? bf16_to_f32(h) : f16_to_f32(h);
    }
  }
}

int64_t v_bytes_f32(int rows, int dv) { return static_cast<int64_t>(rows) * dv * 4; }

}  // namespace sageattn
