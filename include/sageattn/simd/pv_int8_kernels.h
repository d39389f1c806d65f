// The int8 P·V mode's SIMD kernels (PvMode::kInt8; numerics, P layout and the
// exactness argument in sageattn/pv_int8.h), written once over the traits like the rest
// of simd/tile_kernels.h, which includes this file before its TileKernels table. The
// traits supply the register blocking kPvI8Rows x kPvI8Vecs and T::PvI8:
//   kKeys           keys per int32 word of P and of packed V (4: VPDPBUSD, 2: VPMADDWD);
//   dot(acc, p, v)  acc[lane] += Σ_t p[lane][t] · v[lane][t] over one word, exact;
//   store_codes     W int32 lanes holding 0..255 -> W bytes;
// and T::Pack::v_i8<kKeys> / T::Pack::widen_u8 (simd/x86_pack.h).
//
// Packed V: int32 words, word (g, c) at dst[g * dvp + c] holds keys kKeys·g .. +kKeys-1
// of column c (4 int8 bytes, or 2 int16 halves on the 16-bit path); dvp = dv rounded up
// to W; keys past `rows` and columns past dv are 0. At most 64·dvp bytes (kKeys 4) or
// 128·dvp bytes (kKeys 2) for a 64-key tile: attention.cc sizes its V buffer for dvp
// rounded up to 16.
#pragma once
#include <cstdint>
#include <cstring>
#include <limits>

#include "sageattn/pv_int8.h"

namespace sageattn {
namespace simd {
namespace {

inline int32_t load_word(const uint8_t* p) {
  int32_t w;
  std::memcpy(&w, p, 4);
  return w;
}

// ---------------------------------------------------------------------------------
// O = O·alpha + (P·V)·w over MR rows x NR column vectors; kPartial: one vector holding
// the last `tail` (< W) columns. pw: row r's words at pw + r*pstride.
// ---------------------------------------------------------------------------------
template <class T, int MR, int NR, bool kPartial>
inline void pv_i8_micro(const int32_t* pw, int pstride, int steps, const int32_t* v, int dvp, const float* w,
                        const float* alpha, float* o, int ldo, int tail) {
  using F = typename T::F;
  using I = typename T::I;
  constexpr int W = T::W;
  I acc[MR][NR];
  for (int r = 0; r < MR; ++r)
    for (int n = 0; n < NR; ++n) acc[r][n] = T::izero();
  for (int g = 0; g < steps; ++g) {
    I vv[NR];
    for (int n = 0; n < NR; ++n) vv[n] = T::iload(v + static_cast<int64_t>(g) * dvp + n * W);
    for (int r = 0; r < MR; ++r) {
      const I pb = T::iset1(pw[r * pstride + g]);
      for (int n = 0; n < NR; ++n) acc[r][n] = T::PvI8::dot(acc[r][n], pb, vv[n]);
    }
  }
  for (int r = 0; r < MR; ++r) {
    const F wr = T::set1(w[r]);
    const F a = T::set1(alpha[r]);
    float* orow = o + static_cast<int64_t>(r) * ldo;
    for (int n = 0; n < NR; ++n) {
      const F t = T::mul(T::cvt_i2f(acc[r][n]), wr);  // exact int32 -> float (|acc| < 2^24)
      if (kPartial) {
        T::store_n(orow + n * W, T::fmadd(T::load_n(orow + n * W, tail), a, t), tail);
      } else {
        T::store(orow + n * W, T::fmadd(T::load(orow + n * W), a, t));
      }
    }
  }
}

template <class T>
void pv_i8_tile(const uint8_t* p, int ldp, const float* p_scale, const int32_t* v, int mq, int nk, int dv,
                const float* alpha, float v_scale, float* o, int ldo) {
  constexpr int W = T::W, MR = T::kPvI8Rows, NR = T::kPvI8Vecs, K = T::PvI8::kKeys;
  const int steps = ceil_div(nk, K);
  const int dvp = ceil_div(dv, W) * W;
  const int nv = dv / W, tail = dv % W;
  const int padded = round_up4(nk);
  // A row block's P as int32 words: the codes themselves (kKeys 4), or widened to u16
  // first (kKeys 2). Copied out of P's byte buffer, so no word is read through a cast.
  constexpr int kWordsPerRow = kInt8PvMaxKeys / K;
  int32_t words[MR * kWordsPerRow];
  uint16_t wide[K == 2 ? kInt8PvMaxKeys : 1];
  float w[MR];
  for (int i0 = 0; i0 < mq; i0 += MR) {
    const int rows = mq - i0 < MR ? mq - i0 : MR;
    for (int r = 0; r < rows; ++r) {
      const uint8_t* src = p + static_cast<int64_t>(i0 + r) * ldp;
      int32_t* dst = words + r * kWordsPerRow;
      if constexpr (K == 2) {
        T::Pack::widen_u8(src, padded, wide);
        std::memcpy(dst, wide, static_cast<size_t>(steps) * 4);
      } else {
        for (int g = 0; g < steps; ++g) dst[g] = load_word(src + 4 * g);
      }
    }
    const int32_t* pw = words;
    const int pstride = kWordsPerRow;
    for (int r = 0; r < rows; ++r) w[r] = p_scale[i0 + r] * v_scale;
    float* orow = o + static_cast<int64_t>(i0) * ldo;
    with_count<MR>(rows, [&](auto mr) {
      constexpr int MRc = decltype(mr)::value;
      for (int c0 = 0; c0 < nv; c0 += NR) {
        with_count<NR>(nv - c0, [&](auto nr) {
          constexpr int NRc = decltype(nr)::value;
          pv_i8_micro<T, MRc, NRc, false>(pw, pstride, steps, v + c0 * W, dvp, w, alpha + i0, orow + c0 * W, ldo, 0);
        });
      }
      if (tail) pv_i8_micro<T, MRc, 1, true>(pw, pstride, steps, v + nv * W, dvp, w, alpha + i0, orow + nv * W, ldo, tail);
    });
  }
}

// ---------------------------------------------------------------------------------
// Online softmax, P as u8 codes with a per-row tile scale (sageattn/pv_int8.h).
// ---------------------------------------------------------------------------------
template <class T>
void softmax_u8_tile(float* s, int lds, int mq, int nk, float* m, float* l, float* alpha, uint8_t* p, int ldp,
                     float* p_scale) {
  using F = typename T::F;
  using I = typename T::I;
  constexpr int W = T::W;
  softmax_new_max_and_alpha<T>(s, lds, mq, nk, m, alpha);
  const int padded = round_up4(nk);
  const F cap = T::set1(kInt8PCodeMax);
  for (int i = 0; i < mq; ++i) {
    float* row = s + static_cast<int64_t>(i) * lds;
    uint8_t* codes = p + static_cast<int64_t>(i) * ldp;
    if (m[i] == kNegInfF) {
      std::memset(codes, 0, padded);
      p_scale[i] = 0.0f;
      continue;
    }
    if (m[i] != m[i]) {  // poisoned row: exp2v need not propagate NaN, so spell it out
      const float nan = std::numeric_limits<float>::quiet_NaN();
      std::memset(codes, 0, padded);
      p_scale[i] = nan;
      alpha[i] = nan;
      l[i] = nan;
      continue;
    }
    // p = exp2(s - m) back into s; the tile sum (for l, and to catch NaN: max() drops
    // it) and the tile max (the code scale).
    const F mv = T::set1(m[i]);
    F sum = T::zero(), vmax = T::zero();
    int j = 0;
    for (; j + W <= nk; j += W) {
      const F e = exp2v<T>(T::sub(T::load(row + j), mv));
      sum = T::add(sum, e);
      vmax = T::max(e, vmax);
      T::store(row + j, e);
    }
    if (j < nk) {
      const F e = exp2v<T>(T::sub(T::load_n(row + j, nk - j, kNegInfF), mv));  // pad lanes: 0
      sum = T::add(sum, e);
      vmax = T::max(e, vmax);
      T::store_n(row + j, e, nk - j);
    }
    const float tile_sum = T::hsum(sum);
    l[i] = l[i] * alpha[i] + tile_sum;
    const float pmax = T::hmax(vmax);
    if (tile_sum != tile_sum || pmax == 0.0f) {
      std::memset(codes, 0, padded);
      p_scale[i] = tile_sum != tile_sum ? std::numeric_limits<float>::quiet_NaN() : 0.0f;
      continue;
    }
    const F inv = T::set1(kInt8PCodeMax / pmax);
    p_scale[i] = pmax / kInt8PCodeMax;
    for (j = 0; j + W <= nk; j += W) T::PvI8::store_codes(codes + j, T::cvt_f2i(T::min(T::mul(T::load(row + j), inv), cap)));
    if (j < padded) {
      uint8_t last[W];
      const I c = T::cvt_f2i(T::min(T::mul(T::load_n(row + j, nk - j), inv), cap));  // pad lanes: 0
      T::PvI8::store_codes(last, c);
      std::memcpy(codes + j, last, padded - j);
    }
  }
}

}  // namespace
}  // namespace simd
}  // namespace sageattn
