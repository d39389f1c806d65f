// The fused quantized-attention forward on pre-quantized tensors (flash-style tiling
// over key blocks, online softmax, O(N) extra memory, fp32 accumulation).
#pragma once
#include <optional>

#include "sageattn/grouping.h"
#include "sageattn/quantize.h"
#include "sageattn/tensor.h"
#include "sageattn/tile_ops.h"

namespace sageattn {

// V's scale: one per channel (B|1, Hkv|1, Dv) or one per token group (B|1, Hkv|1, G).
// The integer values are the FFI's `v_scale_mode`. (PvMode: sageattn/tile_ops.h.)
enum class VScaleMode { kPerChannel = 0, kPerToken = 1 };

struct AttentionArgs {
  TensorRef q, k, v;                 // codes: (B,Nq,Hq,Dqk), (B,Nk,Hkv,Dqk), (B,Nk,Hkv,Dv)
  TensorRef q_scale, k_scale;        // (B|1, H|1, G) f32
  std::optional<TensorRef> v_scale;  // (B|1, Hkv|1, Dv) per channel, (B|1, Hkv|1, G) per
                                     // token; ignored in PvMode::kHalf (v is then f16/bf16)
  TokenGrouping q_grouping, k_grouping, v_grouping;
  VScaleMode v_scale_mode = VScaleMode::kPerChannel;
  PvMode pv_mode = PvMode::kFp8;
  QuantDType qk_dtype = QuantDType::kInt8;
  std::optional<TensorRef> k_mean;   // (B, Hkv, Dqk) f32: LSE correction for smoothing
  std::optional<TensorRef> mask;     // broadcastable (B, Hq, Nq, Nk): bool keep / f32 additive
  float sm_scale = 1.0f;
  bool causal = false;
  TensorRef out;                     // (B, Nq, Hq, Dv): f16/bf16/f32, or fp8 with out_scale
  std::optional<TensorRef> out_scale;// (B, Nq, Hq, 1) f32, required for fp8 out
  std::optional<TensorRef> lse;      // (B, Hq, Nq) f32
  int num_threads = 1;
  // K/V are packed once per (b, kv head) and shared while they take at most this many
  // bytes, else packed per query tile. Tests lower it to run both ways.
  int64_t shared_kv_max_bytes = int64_t{32} << 20;
};

void attention_forward(const AttentionArgs& args);

// Largest head dimension the kernels are built for.
constexpr int64_t kMaxHeadDim = 256;

}  // namespace sageattn
