// Quantizers. Inputs are (B, N, H, D) in bf16/fp16 with any strides; codes are written
// through the caller's strides; scales are float32 dequantization multipliers.
#pragma once
#include <optional>

#include "sageattn/grouping.h"
#include "sageattn/tensor.h"

namespace sageattn {

enum class QuantDType { kInt8, kFP8 };

inline float quant_max(QuantDType t) { return t == QuantDType::kInt8 ? 127.0f : 448.0f; }

struct TokenQuantizeArgs {
  TensorRef x;                   // (B, N, H, D) f16/bf16
  TensorRef codes;               // (B, N, H, D) i8 or fp8
  TensorRef scale;               // (B, H, G) f32; per-tensor: (1, 1, 1)
  TokenGrouping grouping;
  bool per_tensor = false;       // one scale over every batch and head
  QuantDType qdtype = QuantDType::kInt8;
  std::optional<TensorRef> mean; // (B, H, D) f32, subtracted before quantizing (K smoothing)
  int num_threads = 1;
};

// Quantize along tokens: one scale per token group per (b, h) (or per tensor).
void quantize_tokens(const TokenQuantizeArgs& args);

// Per-channel mean over N, summed in float64, rounded once to float32: (B, H, D).
void channel_mean(const TensorRef& x, const TensorRef& mean_out, int num_threads);

struct ChannelQuantizeArgs {
  TensorRef x;      // (B, N, H, D) f16/bf16
  TensorRef codes;  // (B, N, H, D) fp8 (or u8 storage), or i8 when qdtype is kInt8
  TensorRef scale;  // (B, H, D) f32: one scale per channel over all N
  QuantDType qdtype = QuantDType::kFP8;  // kInt8: V of the int8 P·V mode
  int num_threads = 1;
};

// Per-channel quantization (V's default recipe): fp8, or int8 for the int8 P·V mode.
void quantize_channels(const ChannelQuantizeArgs& args);

}  // namespace sageattn
