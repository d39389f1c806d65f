// Scalar number formats shared by every kernel: fp8 e4m3fn, bf16 and fp16.
// The scalar versions here are the definition; SIMD paths must agree bit for bit.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

namespace sageattn {

inline uint32_t f32_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
inline float bits_f32(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }

// ---- fp8 e4m3fn: 1 sign, 4 exponent (bias 7), 3 mantissa; no inf; 0x7F/0xFF are NaN.
constexpr float kFp8Max = 448.0f;

inline float fp8_e4m3_to_f32(uint8_t code) {
  const uint32_t sign = static_cast<uint32_t>(code & 0x80) << 24;
  const uint32_t exp = (code >> 3) & 0xF;
  const uint32_t man = code & 0x7;
  if (exp == 0xF && man == 0x7) return bits_f32(sign | 0x7FC00000u);
  float mag;
  if (exp == 0) {
    mag = static_cast<float>(man) * 0.001953125f;  // man * 2^-9
  } else {
    mag = bits_f32(((exp + 120u) << 23) | (man << 20));  // rebias 7 -> 127
  }
  return bits_f32(f32_bits(mag) | sign);
}

// Round-half-even, saturating to ±448 (±inf too); NaN stays NaN.
inline uint8_t f32_to_fp8_e4m3(float x) {
  uint32_t u = f32_bits(x);
  const uint8_t sign = static_cast<uint8_t>((u >> 24) & 0x80);
  u &= 0x7FFFFFFFu;
  if (u > 0x7F800000u) return sign | 0x7F;            // NaN
  if (u >= 0x43E00000u) return sign | 0x7E;           // >= 448 (and inf): saturate
  if (u < 0x3C800000u) {                              // below 2^-6: subnormal range
    // Subnormal codes are multiples of 2^-9; the FPU's own RNE does the rounding.
    const float scaled = bits_f32(u) * 512.0f;        // exact (power of two)
    const float r = std::nearbyint(scaled);           // default mode: half-even
    return sign | static_cast<uint8_t>(r);            // r in [0, 8]; 8 == 2^-6 is code 0x08
  }
  // Normal: keep 3 mantissa bits, round half even on the 20 dropped bits.
  const uint32_t lsb = (u >> 20) & 1u;
  u += 0x7FFFFu + lsb;
  const uint32_t exp = (u >> 23) - 120u;              // rebias 127 -> 7
  const uint32_t man = (u >> 20) & 0x7u;
  const uint32_t code = (exp << 3) | man;
  return sign | static_cast<uint8_t>(code > 0x7E ? 0x7E : code);
}

// ---- bf16 / fp16 <-> f32
inline float bf16_to_f32(uint16_t h) { return bits_f32(static_cast<uint32_t>(h) << 16); }

inline uint16_t f32_to_bf16(float f) {
  uint32_t u = f32_bits(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  u += 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

inline float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1F;
  const uint32_t man = h & 0x3FF;
  if (exp == 0x1F) return bits_f32(sign | 0x7F800000u | (man << 13));
  if (exp == 0) {
    const float mag = static_cast<float>(man) * 5.9604644775390625e-8f;  // 2^-24
    return bits_f32(f32_bits(mag) | sign);
  }
  return bits_f32(sign | ((exp + 112u) << 23) | (man << 13));
}

inline uint16_t f32_to_f16(float f) {
  uint32_t u = f32_bits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000);
  u &= 0x7FFFFFFFu;
  if (u > 0x7F800000u) return sign | 0x7E00;                 // NaN
  if (u >= 0x477FF000u) return sign | 0x7C00;                // rounds to >= 65520: inf
  if (u < 0x38800000u) {                                     // below 2^-14: subnormal
    const float r = std::nearbyint(bits_f32(u) * 16777216.0f);  // units of 2^-24, RNE
    return sign | static_cast<uint16_t>(r);
  }
  u += 0xFFFu + ((u >> 13) & 1u);
  return sign | static_cast<uint16_t>(((u >> 13) - (112u << 10)));
}

// Round-half-even to an integer, as torch.round does.
inline float round_half_even(float x) { return std::nearbyint(x); }

}  // namespace sageattn
