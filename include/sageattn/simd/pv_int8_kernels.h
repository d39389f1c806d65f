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
// to W; keys past `rows` and columns past dv are 0: ceil(rows / kKeys) · dvp words, which
// v_bytes reports and attention.cc allocates.
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

// The P·V policy of simd/tile_kernels.h's pv_micro for this mode: P as int32 words of
// kKeys codes (one step = one word), V as packed words, exact int32 sums, and
// o = fma(float(sum), w[r], o·alpha) with w[r] = p_scale · v_scale of the row.
// kAlphaOne: every alpha of the row block is 1 (no row's max moved in this key tile, the
// common case once a row has seen its largest scores): o·1 = o, so the multiply is left
// out, with the same bits.
template <class T, bool kAlphaOne>
struct PvInt8 {
  using PElem = int32_t;
  using VElem = int32_t;
  using VVec = typename T::I;
  using Acc = typename T::I;
  static constexpr int MR = T::kPvI8Rows, NR = T::kPvI8Vecs;
  const float* w;  // the row block's weights
  static Acc zero() { return T::izero(); }
  static VVec load_v(const VElem* v) { return T::iload(v); }
  static VVec load_v_n(const VElem* v, int /*n*/) { return T::iload(v); }  // packed V rows are padded to W
  static typename T::I bcast(const PElem* p) { return T::iset1(*p); }
  static Acc mac(Acc acc, typename T::I p, VVec v) { return T::PvI8::dot(acc, p, v); }
  typename T::F update(typename T::F o, typename T::F a, Acc acc, int r) const {
    // exact int32 -> float (|acc| < 2^24)
    return T::fmadd(T::cvt_i2f(acc), T::set1(w[r]), kAlphaOne ? o : T::mul(o, a));
  }
};

// One row block's columns through pv_micro with policy Op.
template <class T, class Op>
inline void pv_i8_rows(const Op& op, int rows, const int32_t* pw, int pstride, const int32_t* v, int dvp, int steps,
                       int dv, const float* alpha, float* orow, int ldo) {
  constexpr int W = T::W, MR = Op::MR, NR = Op::NR;
  const int nv = dv / W, tail = dv % W;
  with_count<MR>(rows, [&](auto mr) {
    constexpr int MRc = decltype(mr)::value;
    for (int c0 = 0; c0 < nv; c0 += NR) {
      with_count<NR>(nv - c0, [&](auto nr) {
        constexpr int NRc = decltype(nr)::value;
        pv_micro<T, Op, MRc, NRc, false>(op, pw, pstride, v + c0 * W, dvp, steps, alpha, orow + c0 * W, ldo, 0);
      });
    }
    if (tail) pv_micro<T, Op, MRc, 1, true>(op, pw, pstride, v + nv * W, dvp, steps, alpha, orow + nv * W, ldo, tail);
  });
}

template <class T>
void pv_i8_tile(const uint8_t* p, int ldp, const float* p_scale, const int32_t* v, int mq, int nk, int dv,
                const float* alpha, float v_scale, float* o, int ldo) {
  constexpr int W = T::W, MR = T::kPvI8Rows, K = T::PvI8::kKeys;
  const int steps = ceil_div(nk, K);
  const int dvp = ceil_div(dv, W) * W;
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
    bool alpha_one = true;
    for (int r = 0; r < rows; ++r) alpha_one = alpha_one && alpha[i0 + r] == 1.0f;
    if (alpha_one) {
      pv_i8_rows<T>(PvInt8<T, true>{w}, rows, pw, pstride, v, dvp, steps, dv, alpha + i0, orow, ldo);
    } else {
      pv_i8_rows<T>(PvInt8<T, false>{w}, rows, pw, pstride, v, dvp, steps, dv, alpha + i0, orow, ldo);
    }
  }
}

// ---------------------------------------------------------------------------------
// Online softmax, P as u8 codes with a per-row tile scale (sageattn/pv_int8.h), W rows at
// a time as in softmax_tile (simd/tile_kernels.h). Codes come straight from the tile's
// row max t: code = RNE(255·exp2(s - t)), so no pass over p is needed to find its max.
// ---------------------------------------------------------------------------------

// 255·exp2(row - t) for one row: codes stored (zero-padded to a multiple of 4), the
// unrounded values summed into the result. Every value is <= 255 (row <= t).
template <class T>
inline typename T::F softmax_u8_row(const float* row, int nk, float t, uint8_t* codes) {
  using F = typename T::F;
  constexpr int W = T::W;
  const F tv = T::set1(t);
  F sum = T::zero();
  int j = 0;
  for (; j + W <= nk; j += W) {
    const F y = exp2v<T, 255>(T::sub(T::load(row + j), tv));
    sum = T::add(sum, y);
    T::PvI8::store_codes(codes + j, T::cvt_f2i(y));
  }
  const int padded = round_up4(nk);
  if (j < padded) {
    const F y = exp2v<T, 255>(T::sub(T::load_n(row + j, nk - j, kNegInfF), tv));  // pad lanes: 0
    sum = T::add(sum, y);
    uint8_t last[W];
    T::PvI8::store_codes(last, T::cvt_f2i(y));
    std::memcpy(codes + j, last, padded - j);
  }
  return sum;
}

template <class T>
void softmax_u8_tile(float* s, int lds, int mq, int nk, float* m, float* l, float* alpha, uint8_t* p, int ldp,
                     float* p_scale) {
  using F = typename T::F;
  constexpr int W = T::W;
  const int padded = round_up4(nk);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (int i0 = 0; i0 < mq; i0 += W) {
    const int rows = mq - i0 < W ? mq - i0 : W;
    const float* sb = s + static_cast<int64_t>(i0) * lds;
    const SoftmaxBlock<T> blk = softmax_block_max<T>(sb, lds, rows, nk, m + i0, alpha + i0);
    // pmax = exp2(t - m), the largest p of the row in this tile, for the whole block.
    float pmax[W];
    T::store(pmax, exp2v<T>(T::sub(T::load(blk.tile_max), blk.m_new)));
    F sums[W];
    for (int r = 0; r < W; ++r) {
      const int i = i0 + r;
      sums[r] = T::zero();
      if (r >= rows || blk.tile_max[r] == kNegInfF || m[i] != m[i]) continue;  // no key, or poisoned
      sums[r] = softmax_u8_row<T>(sb + static_cast<int64_t>(r) * lds, nk, blk.tile_max[r], p + static_cast<int64_t>(i) * ldp);
    }
    float tile_sum[W];
    T::store(tile_sum, T::rows_sum(sums));
    for (int r = 0; r < rows; ++r) {
      const int i = i0 + r;
      uint8_t* codes = p + static_cast<int64_t>(i) * ldp;
      bool poisoned = m[i] != m[i];
      if (!poisoned && blk.tile_max[r] == kNegInfF) poisoned = row_has_nan(sb + static_cast<int64_t>(r) * lds, nk);
      if (!poisoned && tile_sum[r] != tile_sum[r]) {  // a NaN score (m finite), or m = +inf
        std::memset(codes, 0, padded);
        p_scale[i] = nan;
        l[i] = nan;
        if (std::isfinite(m[i])) poison_row(i, m, l, alpha);
        continue;
      }
      if (poisoned) {
        std::memset(codes, 0, padded);
        p_scale[i] = nan;
        poison_row(i, m, l, alpha);
      } else if (blk.tile_max[r] == kNegInfF || pmax[r] == 0.0f) {  // no key, or every p underflows
        std::memset(codes, 0, padded);
        p_scale[i] = 0.0f;
        l[i] = l[i] * alpha[i];
      } else {
        p_scale[i] = pmax[r] / kInt8PCodeMax;
        l[i] = l[i] * alpha[i] + pmax[r] * (tile_sum[r] / kInt8PCodeMax);
      }
    }
  }
}

}  // namespace
}  // namespace simd
}  // namespace sageattn
