// The SIMD tile operations (see sageattn/tile_ops.h), written once as templates over a
// vector "traits" type T (simd/avx2.h, simd/avx512.h). Only the traits differ between
// ISAs; the loops, packed layouts, exp2, fp8 rounding and register blocking live here.
//
// Include after the traits header, from a translation unit compiled for that ISA.
// Everything is in an unnamed namespace (one private copy per ISA translation unit; see
// simd/avx2.h). This file is ISA-neutral: no intrinsics. The packers and fp8 decoders
// are the traits' (T::Pack; the x86 ones live in simd/x86_pack.h).
//
// Packed layouts (all offsets in elements from the buffer start, no header, any
// alignment; W = T::W lanes, rows of a K tile are keys, P = ceil(rows / W) panels):
//   int8 Q·Kᵀ comes in two word forms, T::kQkI8PerWord codes per int32 word:
//   4 (VPDPBUSD: AVX-512 and its emulation), dq4 = ceil(d/4):
//     Q int8  int32 q4[r * dq4 + g]           = bytes q[r][4g .. 4g+3] XOR 0x80 (q + 128
//             as u8), padding 0x80
//     K int8  int32 k4[(p * dq4 + g) * W + j] = bytes k[p*W + j][4g .. 4g+3] (keys past
//             `rows` and bytes past d are 0), then int32 comp[p * W + j] =
//             -128 * Σ_c k[p*W + j][c]: 4·P·W·(dq4 + 1) bytes
//   2 (VPMADDWD: AVX2), dq2 = ceil(d/2):
//     Q int8  int32 q2[r * dq2 + g]           = int16 q[r][2g], q[r][2g+1], padding 0
//     K int8  int32 k2[(p * dq2 + g) * W + j] = int16 k[p*W + j][2g], [2g+1], 0 past
//             `rows` and d: 4·P·W·dq2 bytes
//   k_bytes reports the K size, and attention.cc allocates a key tile from it.
//   Q fp8   float q[r * d + c]             = decoded codes.
//   K fp8   float kf[(p * d + c) * W + j]   = decoded k[p*W + j][c], 0 for missing keys.
//   V       float v[j * dv + c]             = decode(code) * scale (row-major, like the
//           scalar ops; the 16-bit P·V mode's portable pack_v_half writes it too).
//   P       float p[i * ldp + j]             = fp8(448·p) (PvMode::kFp8) or fp16(p).
// Every K / V vector load is unit-stride and the broadcast operand is a Q (or P) scalar
// or 4-byte group, so a micro-kernel step is: NR vector loads, MR broadcasts and MR x NR
// multiply-accumulates into registers.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include "sageattn/quantize.h"
#include "sageattn/tile_ops.h"

namespace sageattn {
namespace simd {
namespace {

constexpr float kNegInfF = -std::numeric_limits<float>::infinity();

inline int ceil_div(int a, int b) { return (a + b - 1) / b; }

// ---------------------------------------------------------------------------------
// Vector math on traits T.
// ---------------------------------------------------------------------------------

// kScale·2^x. x = n + f with n = round(x), f in [-0.5, 0.5]; 2^f from a degree-6
// polynomial (least-squares/Lawson fit of the relative error, p(0) = 1 exactly), 2^n by
// VSCALEFPS or exponent bits. kScale (1, or the P unit 448 / 255 of the 8-bit P modes)
// is folded into the coefficients, so kScale·p(0) = kScale exactly and the softmax
// spends no multiply on it. Max relative error 7.9e-8 (0.94 ulp, float32 Horner
// evaluation, measured over 2M points of [-0.5, 0.5]); tests/cpp/test_tile_ops.cc checks
// <= 2 ulp against std::exp2 over [-150, 63]. -inf and anything below about -150 give +0,
// denormal results are rounded once, NaN propagates. Domain: x <= 63, and x <= 0 for
// kScale > 1 (the softmax only asks for x <= 0).
constexpr double kExp2Coef[7] = {1.0,
                                 6.9314718246459960e-01,
                                 2.4022647738456726e-01,
                                 5.5503323674201965e-02,
                                 9.6184378489851950e-03,
                                 1.3398875016719103e-03,
                                 1.5353356138803065e-04};

template <int kScale>
constexpr float exp2_coef(int i) { return static_cast<float>(static_cast<float>(kExp2Coef[i]) * static_cast<double>(kScale)); }

template <class T, int kScale = 1>
inline typename T::F exp2v(typename T::F x) {
  using F = typename T::F;
  F n, f;
  if constexpr (T::kHasScalef) {
    n = T::round_nearest(x);
    f = T::frac_nearest(x);  // x - n exactly, and 0 for -inf: no clamp needed
  } else {
    x = T::max(T::set1(-160.0f), x);  // max returns its second operand for NaN: kept
    n = T::round_nearest(x);
    f = T::sub(x, n);  // exact
  }
  F p = T::set1(exp2_coef<kScale>(6));
  p = T::fmadd(p, f, T::set1(exp2_coef<kScale>(5)));
  p = T::fmadd(p, f, T::set1(exp2_coef<kScale>(4)));
  p = T::fmadd(p, f, T::set1(exp2_coef<kScale>(3)));
  p = T::fmadd(p, f, T::set1(exp2_coef<kScale>(2)));
  p = T::fmadd(p, f, T::set1(exp2_coef<kScale>(1)));
  p = T::fmadd(p, f, T::set1(exp2_coef<kScale>(0)));
  if constexpr (T::kHasScalef) {
    return T::scalef(p, n);  // p·2^n rounded once, -inf -> 0
  } else {  // p·2^(n+64), then ·2^-64: one rounding, denormal results included
    const F scale = T::f32(T::template shl<23>(T::iadd(T::cvt_f2i(n), T::iset1(127 + 64))));
    return T::mul(T::mul(p, scale), T::set1(5.42101086242752217e-20f));
  }
}

// y -> fp8_e4m3_to_f32(f32_to_fp8_e4m3(y)) for y in [0, +inf) or NaN (P = 448·p): the
// same bits as sageattn/numeric.h's encode + decode. fp8 keeps 3 mantissa bits down to
// 2^-6 and steps of 2^-9 below, so the rounding quantum of y is 2^(max(e, -6) - 3) for
// y in [2^e, 2^(e+1)). Adding and subtracting M = 1.5·2^(max(e, -6) + 20) makes the FPU
// round y to that quantum, half to even (y + M lies in M's binade, whose ulp is the
// quantum); saturation at 448 comes first (nothing below 448 rounds above it).
// kSaturate = false: only for y <= 448 (the softmax's P, 448·exp2(x) for x <= 0).
template <class T, bool kSaturate = true>
inline typename T::F fp8_round_nonneg(typename T::F y) {
  using F = typename T::F;
  using I = typename T::I;
  if constexpr (kSaturate) y = T::min(T::set1(448.0f), y);  // keeps NaN
  const I e = T::imax(T::iand(T::i32(y), T::iset1(0x7F800000)), T::iset1(121 << 23));  // 2^max(e,-6)
  const F magic = T::f32(T::iadd(e, T::iset1((20 << 23) | 0x400000)));
  return T::sub(T::add(y, magic), magic);
}

// ---------------------------------------------------------------------------------
// Compile-time dispatch of a run-time count 1..N to a template argument.
// ---------------------------------------------------------------------------------
template <int N, class Fn>
inline void with_count(int n, Fn&& fn) {
  if constexpr (N > 1) {
    if (n < N) {
      with_count<N - 1>(n, fn);
      return;
    }
  }
  fn(std::integral_constant<int, N>{});
}

// Stores rows [0, MR) x panels [0, NR) of scores: s = (float(acc) * rs) * cs, as the
// scalar path multiplies. `cols` valid keys from the first panel on.
template <class T, bool kInt, int MR, int NR, class Acc>
inline void store_scores(const Acc (&acc)[MR][NR], const float* rs, const float* cs,
                         int cols, float* s, int lds) {
  using F = typename T::F;
  constexpr int W = T::W;
  for (int n = 0; n < NR; ++n) {
    const int valid = cols - n * W;
    const F cv = valid >= W ? T::load(cs + n * W) : T::load_n(cs + n * W, valid);
    for (int r = 0; r < MR; ++r) {
      F dot;
      if constexpr (kInt) dot = T::cvt_i2f(acc[r][n]);
      else dot = acc[r][n];
      const F v = T::mul(T::mul(dot, T::set1(rs[r])), cv);
      float* out = s + static_cast<int64_t>(r) * lds + n * W;
      if (valid >= W) T::store(out, v);
      else T::store_n(out, v, valid);
    }
  }
}

// ---------------------------------------------------------------------------------
// Q·Kᵀ: one micro-kernel and one tile loop for every operand form. An operand policy
// names the packed element (Elem), the K vector and accumulator types, the accumulator
// seed, the Q broadcast, the multiply-accumulate and the register blocking MR x NR;
// `groups` counts the Elems of one packed Q row (and of one key in a K panel).
// ---------------------------------------------------------------------------------
template <class T, class Dot>
struct QkInt8 {  // int32 words of T::kQkI8PerWord codes; Dot: the ISA's exact int8 dot
  using Elem = int32_t;
  using KVec = typename T::I;
  using Acc = typename T::I;
  static constexpr bool kInt = true;
  static constexpr int MR = T::kQkI8Rows, NR = T::kQkI8Panels;
  static Acc seed(const int32_t* comp) { return comp ? T::iload(comp) : T::izero(); }  // -128·Σk (quads)
  static KVec load_k(const Elem* k) { return T::iload(k); }
  static typename Dot::Q bcast(const Elem* q) { return Dot::prep(*q); }
  static Acc mac(Acc acc, const typename Dot::Q& q, KVec k) { return Dot::dot(acc, q, k); }
};

template <class T>
struct QkF32 {  // decoded fp8 codes, FMA
  using Elem = float;
  using KVec = typename T::F;
  using Acc = typename T::F;
  static constexpr bool kInt = false;
  static constexpr int MR = T::kQkF32Rows, NR = T::kQkF32Panels;
  static Acc seed(const int32_t*) { return T::zero(); }
  static KVec load_k(const Elem* k) { return T::load(k); }
  static typename T::F bcast(const Elem* q) { return T::bcast(q); }
  static Acc mac(Acc acc, typename T::F q, KVec k) { return T::fmadd(q, k, acc); }
};

template <class T>
struct QkBf16 {  // fp8 codes as bf16 pairs, VDPBF16PS (traits with kBf16Dot)
  using Elem = uint32_t;
  using KVec = typename T::I;
  using Acc = typename T::F;
  static constexpr bool kInt = false;
  static constexpr int MR = T::kQkBf16Rows, NR = T::kQkBf16Panels;
  static Acc seed(const int32_t*) { return T::zero(); }
  static KVec load_k(const Elem* k) { return T::iload(k); }
  static typename T::I bcast(const Elem* q) { return T::iset1(static_cast<int32_t>(*q)); }
  static Acc mac(Acc acc, typename T::I q, KVec k) { return T::dot_bf16(acc, q, k); }
};

// MR query rows x NR key panels over all `groups` Elems; comp: Op's per-key seed or null.
template <class T, class Op, int MR, int NR>
inline void qk_micro(const typename Op::Elem* q, int groups, const typename Op::Elem* k, const int32_t* comp,
                     const float* rs, const float* cs, int cols, float* s, int lds) {
  constexpr int W = T::W;
  typename Op::Acc acc[MR][NR];
  for (int n = 0; n < NR; ++n) {
    const typename Op::Acc init = Op::seed(comp ? comp + n * W : nullptr);
    for (int r = 0; r < MR; ++r) acc[r][n] = init;
  }
  const int64_t kstride = static_cast<int64_t>(groups) * W;
  for (int g = 0; g < groups; ++g) {
    typename Op::KVec kv[NR];
    for (int n = 0; n < NR; ++n) kv[n] = Op::load_k(k + n * kstride + g * W);
    for (int r = 0; r < MR; ++r) {
      const auto qb = Op::bcast(q + static_cast<int64_t>(r) * groups + g);
      for (int n = 0; n < NR; ++n) acc[r][n] = Op::mac(acc[r][n], qb, kv[n]);
    }
  }
  store_scores<T, Op::kInt, MR, NR>(acc, rs, cs, cols, s, lds);
}

template <class T, class Op>
void qk_tile(const typename Op::Elem* q, const typename Op::Elem* k, const int32_t* comp, int mq, int nk, int groups,
             const float* row_scale, const float* col_scale, float* s, int lds) {
  constexpr int W = T::W, MR = Op::MR, NR = Op::NR;
  const int panels = ceil_div(nk, W);
  for (int p0 = 0; p0 < panels; p0 += NR) {
    with_count<NR>(panels - p0, [&](auto nr) {
      constexpr int NRc = decltype(nr)::value;
      const typename Op::Elem* kp = k + static_cast<int64_t>(p0) * groups * W;
      const int32_t* cp = comp ? comp + p0 * W : nullptr;
      for (int i0 = 0; i0 < mq; i0 += MR) {
        with_count<MR>(mq - i0, [&](auto mr) {
          constexpr int MRc = decltype(mr)::value;
          qk_micro<T, Op, MRc, NRc>(q + static_cast<int64_t>(i0) * groups, groups, kp, cp, row_scale + i0,
                                    col_scale + p0 * W, nk - p0 * W, s + static_cast<int64_t>(i0) * lds + p0 * W, lds);
        });
      }
    });
  }
}

// ---------------------------------------------------------------------------------
// Online softmax over one tile (log2 units), W rows at a time.
// ---------------------------------------------------------------------------------
// For a block of up to W rows, pass 1 finds each row's max over this tile and forms the
// new running max and alpha as vectors across the block's rows; pass 2 (per P mode)
// streams exp2 / encode / store and leaves each row's sum as one vector, and the block's
// W sums are folded at once (T::rows_sum), as are pass 1's maxima (T::rows_max): no
// horizontal reduction per row. max() drops NaN, so pass 1 never sees one; a NaN score
// shows up as a NaN row sum in pass 2 (while m is finite nothing else makes it NaN), and
// the row is then poisoned as the scalar rule says (online_softmax.h): m, l, alpha NaN.

// What pass 1 leaves for pass 2, per row of the block.
template <class T>
struct SoftmaxBlock {
  float tile_max[T::W];    // the row's max over this tile, NaN dropped (-inf: no key visible)
  typename T::F m_new;     // the new running max, per row (lanes past `rows`: -inf)
};

// Pass 1 for rows [0, rows) of s (rows <= W); m and alpha point at the block's rows.
template <class T>
SoftmaxBlock<T> softmax_block_max(const float* s, int lds, int rows, int nk, float* m, float* alpha) {
  using F = typename T::F;
  constexpr int W = T::W;
  F vmax[W];
  for (int r = 0; r < W; ++r) {
    F acc = T::set1(kNegInfF);
    if (r < rows) {
      const float* row = s + static_cast<int64_t>(r) * lds;
      int j = 0;
      for (; j + W <= nk; j += W) acc = T::max(T::load(row + j), acc);  // max(x, acc) keeps acc for a NaN x
      if (j < nk) acc = T::max(T::load_n(row + j, nk - j, kNegInfF), acc);
    }
    vmax[r] = acc;
  }
  SoftmaxBlock<T> blk;
  const F t = T::rows_max(vmax);
  const F m_old = rows == W ? T::load(m) : T::load_n(m, rows, kNegInfF);
  blk.m_new = T::max(t, m_old);  // max returns its second operand for NaN: a poisoned row stays NaN
  // alpha = exp2(m_old - m_new), and exp2(0) = 1 for a row that has seen no key yet.
  const F diff = T::select(T::lt(blk.m_new, T::set1(-std::numeric_limits<float>::max())), T::zero(),
                           T::sub(m_old, blk.m_new));
  const F a = exp2v<T>(diff);
  if (rows == W) {
    T::store(m, blk.m_new);
    T::store(alpha, a);
  } else {
    T::store_n(m, blk.m_new, rows);
    T::store_n(alpha, a, rows);
  }
  T::store(blk.tile_max, t);
  return blk;
}

inline bool row_has_nan(const float* row, int nk) {
  for (int j = 0; j < nk; ++j)
    if (row[j] != row[j]) return true;
  return false;
}

// Row i of the block (r in it) saw a NaN score: poisoned as online_softmax.h says.
inline void poison_row(int i, float* m, float* l, float* alpha) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  m[i] = nan;
  l[i] = nan;
  alpha[i] = nan;
}

// 448·exp2(row - m) for one row: P = fp8(448·p) stored (as float, or with kBf16Out as
// bf16, exact: fp8 values are bf16 values), the unquantized 448·p summed into the result.
template <class T, bool kBf16Out>
inline typename T::F softmax_fp8_row(const float* row, int nk, float m, void* prow) {
  using F = typename T::F;
  constexpr int W = T::W;
  float* pf = static_cast<float*>(prow);
  uint16_t* ph = static_cast<uint16_t*>(prow);
  const F mv = T::set1(m);
  F sum = T::zero();
  int j = 0;
  for (; j + 2 * W <= nk; j += 2 * W) {  // two vectors per step: one bf16 conversion for both
    const F y0 = exp2v<T, 448>(T::sub(T::load(row + j), mv));
    const F y1 = exp2v<T, 448>(T::sub(T::load(row + j + W), mv));
    sum = T::add(sum, T::add(y0, y1));
    const F p0 = fp8_round_nonneg<T, false>(y0), p1 = fp8_round_nonneg<T, false>(y1);
    if constexpr (kBf16Out) {
      T::store_bf16_2(ph + j, p0, p1);
    } else {
      T::store(pf + j, p0);
      T::store(pf + j + W, p1);
    }
  }
  for (; j < nk; j += W) {
    const int n = nk - j < W ? nk - j : W;
    const F y = exp2v<T, 448>(T::sub(T::load_n(row + j, n, kNegInfF), mv));  // pad lanes: 0
    sum = T::add(sum, y);
    const F pv = fp8_round_nonneg<T, false>(y);
    if constexpr (kBf16Out) {
      if (n == W) T::store_bf16(ph + j, pv);
      else T::store_bf16_n(ph + j, pv, n);
    } else {
      if (n == W) T::store(pf + j, pv);
      else T::store_n(pf + j, pv, n);
    }
  }
  return sum;
}

// P = fp8(448·p), as float or, with kBf16Out, as bf16 with rows zero-padded to an even
// length for the pairs of VDPBF16PS.
template <class T, bool kBf16Out>
void softmax_tile(const float* s, int lds, int mq, int nk, float* m, float* l, float* alpha, void* p, int ldp) {
  using F = typename T::F;
  constexpr int W = T::W;
  const size_t elem = kBf16Out ? 2 : 4;
  auto prow_of = [&](int i) { return static_cast<uint8_t*>(p) + static_cast<int64_t>(i) * ldp * elem; };
  auto fill_row = [&](int i, float value) {
    uint8_t* prow = prow_of(i);
    for (int j = 0; j < nk; ++j) {
      if constexpr (kBf16Out) {
        const uint16_t h = value == value ? 0 : 0x7FC0;
        std::memcpy(prow + 2 * j, &h, 2);
      } else {
        std::memcpy(prow + 4 * j, &value, 4);
      }
    }
  };
  for (int i0 = 0; i0 < mq; i0 += W) {
    const int rows = mq - i0 < W ? mq - i0 : W;
    const float* sb = s + static_cast<int64_t>(i0) * lds;
    const SoftmaxBlock<T> blk = softmax_block_max<T>(sb, lds, rows, nk, m + i0, alpha + i0);
    F sums[W];
    for (int r = 0; r < W; ++r) {
      const int i = i0 + r;
      sums[r] = T::zero();
      if (r >= rows) continue;
      if constexpr (kBf16Out) {
        if (nk & 1) {  // the pad of the last pair
          const uint16_t zero = 0;
          std::memcpy(prow_of(i) + 2 * nk, &zero, 2);
        }
      }
      if (blk.tile_max[r] == kNegInfF || m[i] != m[i]) continue;  // no key in this tile, or poisoned
      sums[r] = softmax_fp8_row<T, kBf16Out>(sb + static_cast<int64_t>(r) * lds, nk, m[i], prow_of(i));
    }
    float tile_sum[W];
    T::store(tile_sum, T::rows_sum(sums));
    for (int r = 0; r < rows; ++r) {
      const int i = i0 + r;
      const float nan = std::numeric_limits<float>::quiet_NaN();
      if (m[i] != m[i]) {  // poisoned before this tile
        fill_row(i, nan);
        poison_row(i, m, l, alpha);
      } else if (blk.tile_max[r] == kNegInfF) {  // every key hidden, or NaN
        if (row_has_nan(sb + static_cast<int64_t>(r) * lds, nk)) {
          fill_row(i, nan);
          poison_row(i, m, l, alpha);
        } else {
          fill_row(i, 0.0f);
          l[i] = l[i] * alpha[i];
        }
      } else if (tile_sum[r] != tile_sum[r] && std::isfinite(m[i])) {  // a NaN score
        fill_row(i, nan);
        poison_row(i, m, l, alpha);
      } else {
        l[i] = l[i] * alpha[i] + tile_sum[r] / 448.0f;
      }
    }
  }
}

// ---------------------------------------------------------------------------------
// P·V: O = O·alpha + P·V, one micro-kernel for every operand form (the int8 mode's
// policy is in simd/pv_int8_kernels.h). A policy names P's element (broadcast per row
// and step), V's element and vector (NR loaded per step), the accumulator, the
// multiply-accumulate, the blocking MR x NR, and update(o, alpha, acc, r): row r's new
// O from its old O, alpha and accumulator (V's or P's scale applied there, after the dot).
// ---------------------------------------------------------------------------------
template <class T>
struct PvF32 {  // fp32 P and V (V decoded with its scale folded in): FMA
  using PElem = float;
  using VElem = float;
  using VVec = typename T::F;
  using Acc = typename T::F;
  static constexpr int MR = T::kPvRows, NR = T::kPvVecs;
  static Acc zero() { return T::zero(); }
  static VVec load_v(const VElem* v) { return T::load(v); }
  static VVec load_v_n(const VElem* v, int n) { return T::load_n(v, n); }
  static typename T::F bcast(const PElem* p) { return T::bcast(p); }
  static Acc mac(Acc acc, typename T::F p, VVec v) { return T::fmadd(p, v, acc); }
  typename T::F update(typename T::F o, typename T::F a, Acc acc, int /*r*/) const { return T::fmadd(o, a, acc); }
};

// fp8 P and V codes as bf16 pairs (one step = two keys), VDPBF16PS; V's scale after the
// dot. kUnitScale: v_scale is 1 (per-channel V, scaled after the last tile) and the
// multiply by it, exact then, is left out: the same bits, one FMA-unit operation fewer.
template <class T, bool kUnitScale>
struct PvBf16 {
  using PElem = uint32_t;
  using VElem = uint32_t;
  using VVec = typename T::I;
  using Acc = typename T::F;
  static constexpr int MR = T::kPvBf16Rows, NR = T::kPvBf16Vecs;
  typename T::F v_scale;
  static Acc zero() { return T::zero(); }
  static VVec load_v(const VElem* v) { return T::iload(v); }
  static VVec load_v_n(const VElem* v, int n) { return T::i32(T::load_n(reinterpret_cast<const float*>(v), n)); }
  static typename T::I bcast(const PElem* p) { return T::iset1(static_cast<int32_t>(*p)); }
  static Acc mac(Acc acc, typename T::I p, VVec v) { return T::dot_bf16(acc, p, v); }
  typename T::F update(typename T::F o, typename T::F a, Acc acc, int /*r*/) const {
    return T::fmadd(o, a, kUnitScale ? acc : T::mul(acc, v_scale));
  }
};

// MR rows x NR vectors of columns over `steps` steps; P row r at p + r*ldp, step t's V
// row at v + t*vstride; kPartial: one vector holding the last `tail` (< W) columns.
template <class T, class Op, int MR, int NR, bool kPartial>
inline void pv_micro(const Op& op, const typename Op::PElem* p, int ldp, const typename Op::VElem* v, int vstride,
                     int steps, const float* alpha, float* o, int ldo, int tail) {
  constexpr int W = T::W;
  typename Op::Acc acc[MR][NR];
  for (int r = 0; r < MR; ++r)
    for (int n = 0; n < NR; ++n) acc[r][n] = Op::zero();
  for (int t = 0; t < steps; ++t) {
    const typename Op::VElem* vr = v + static_cast<int64_t>(t) * vstride;
    typename Op::VVec vv[NR];
    for (int n = 0; n < NR; ++n) vv[n] = kPartial ? Op::load_v_n(vr + n * W, tail) : Op::load_v(vr + n * W);
    for (int r = 0; r < MR; ++r) {
      const auto pb = Op::bcast(p + static_cast<int64_t>(r) * ldp + t);
      for (int n = 0; n < NR; ++n) acc[r][n] = Op::mac(acc[r][n], pb, vv[n]);
    }
  }
  for (int r = 0; r < MR; ++r) {
    const typename T::F a = T::set1(alpha[r]);
    float* orow = o + static_cast<int64_t>(r) * ldo;
    for (int n = 0; n < NR; ++n) {
      if (kPartial) {
        T::store_n(orow + n * W, op.update(T::load_n(orow + n * W, tail), a, acc[r][n], r), tail);
      } else {
        T::store(orow + n * W, op.update(T::load(orow + n * W), a, acc[r][n], r));
      }
    }
  }
}

// Columns are swept in groups of 64: the group's V slab (for a 128-key tile 16 KiB of
// bf16 pairs, 8 KiB of int8 words, 32 KiB of fp32: L1's size on Zen 3/4, still faster
// there than 64-key tiles, bench/results/analysis.md) is reused by every row block, and
// each row block's P rows stay in L1 across the group's micro-kernels.
template <class T, class Op>
void pv_sweep(const Op& op, const typename Op::PElem* p, int ldp, const typename Op::VElem* v, int steps, int mq,
              int dv, const float* alpha, float* o, int ldo) {
  constexpr int W = T::W, MR = Op::MR, NR = Op::NR;
  constexpr int kGroupVecs = (64 / W / NR) * NR > 0 ? (64 / W / NR) * NR : NR;
  const int nv = dv / W, tail = dv % W;
  for (int g0 = 0; g0 < nv; g0 += kGroupVecs) {
    const int g1 = g0 + kGroupVecs < nv ? g0 + kGroupVecs : nv;
    for (int i0 = 0; i0 < mq; i0 += MR) {
      with_count<MR>(mq - i0, [&](auto mr) {
        constexpr int MRc = decltype(mr)::value;
        for (int c0 = g0; c0 < g1; c0 += NR) {
          with_count<NR>(g1 - c0, [&](auto nr) {
            constexpr int NRc = decltype(nr)::value;
            pv_micro<T, Op, MRc, NRc, false>(op, p + static_cast<int64_t>(i0) * ldp, ldp, v + c0 * W, dv, steps,
                                             alpha + i0, o + static_cast<int64_t>(i0) * ldo + c0 * W, ldo, 0);
          });
        }
      });
    }
  }
  if (tail) {
    for (int i0 = 0; i0 < mq; i0 += MR) {
      with_count<MR>(mq - i0, [&](auto mr) {
        constexpr int MRc = decltype(mr)::value;
        pv_micro<T, Op, MRc, 1, true>(op, p + static_cast<int64_t>(i0) * ldp, ldp, v + nv * W, dv, steps, alpha + i0,
                                      o + static_cast<int64_t>(i0) * ldo + nv * W, ldo, tail);
      });
    }
  }
}

}  // namespace
}  // namespace simd
}  // namespace sageattn

#include "sageattn/simd/pv_int8_kernels.h"  // the int8 P·V mode, built on the helpers above

namespace sageattn {
namespace simd {
namespace {


// ---------------------------------------------------------------------------------
// The TileOps table for traits T.
// ---------------------------------------------------------------------------------
template <class T>
struct TileKernels {
  static void pack_q(const void* src, int64_t row_stride, int rows, int d, QuantDType t, void* dst) {
    if (t == QuantDType::kInt8) {
      T::Pack::q_i8(static_cast<const int8_t*>(src), row_stride, rows, d, static_cast<int32_t*>(dst));
    } else if constexpr (T::kBf16Dot) {
      T::Pack::q_fp8_bf16(static_cast<const uint8_t*>(src), row_stride, rows, d, static_cast<uint32_t*>(dst));
    } else {
      T::Pack::rows_fp8(static_cast<const uint8_t*>(src), row_stride, rows, d, static_cast<float*>(dst));
    }
  }
  static void pack_k(const void* src, int64_t row_stride, int rows, int d, QuantDType t, void* dst) {
    if (t == QuantDType::kInt8) {
      T::Pack::k_i8(static_cast<const int8_t*>(src), row_stride, rows, d, static_cast<int32_t*>(dst));
    } else if constexpr (T::kBf16Dot) {
      T::Pack::k_fp8_bf16(static_cast<const uint8_t*>(src), row_stride, rows, d, static_cast<uint32_t*>(dst));
    } else {
      T::Pack::k_fp8(static_cast<const uint8_t*>(src), row_stride, rows, d, static_cast<float*>(dst));
    }
  }
  static void qk(const void* qp, const void* kp, int mq, int nk, int d, QuantDType t, const float* row_scale,
                 const float* col_scale, float* s, int lds) {
    if (mq <= 0 || nk <= 0) return;
    if (t == QuantDType::kInt8) {
      const int32_t* k = static_cast<const int32_t*>(kp);
      const int32_t* q = static_cast<const int32_t*>(qp);
      const int groups = ceil_div(d, T::kQkI8PerWord);
      const int64_t words = static_cast<int64_t>(ceil_div(nk, T::W)) * groups * T::W;  // then quads' corrections
      const int32_t* comp = T::kQkI8PerWord == 4 ? k + words : nullptr;
      qk_tile<T, QkInt8<T, typename T::Dot>>(q, k, comp, mq, nk, groups, row_scale, col_scale, s, lds);
    } else if constexpr (T::kBf16Dot) {
      qk_tile<T, QkBf16<T>>(static_cast<const uint32_t*>(qp), static_cast<const uint32_t*>(kp), nullptr, mq, nk,
                            ceil_div(d, 2), row_scale, col_scale, s, lds);
    } else {
      qk_tile<T, QkF32<T>>(static_cast<const float*>(qp), static_cast<const float*>(kp), nullptr, mq, nk, d,
                           row_scale, col_scale, s, lds);
    }
  }

  // ---- PvMode::kFp8 on FMA: P = fp8(448·p) as float, V decoded with its scale folded in.
  static void softmax_fp8(float* s, int lds, int mq, int nk, float* m, float* l, float* alpha, void* p, int ldp,
                          float* /*p_scale*/) {
    softmax_tile<T, false>(s, lds, mq, nk, m, l, alpha, p, ldp);
  }
  static void pack_v_fp8(const void* src, int64_t row_stride, DType /*v_dtype*/, int rows, int dv,
                         const float* channel_scale, const float* row_scale, void* dst) {
    T::Pack::v_fp8(static_cast<const uint8_t*>(src), row_stride, rows, dv, channel_scale, row_scale,
                   static_cast<float*>(dst));
  }
  // fp32 P times fp32 V (kFp8 on FMA and kHalf): V carries its scale, v_scale is 1.
  static void pv_f32(const void* p, int ldp, const float* /*p_scale*/, const void* v, int mq, int nk, int dv,
                     const float* alpha, float /*v_scale*/, float* o, int ldo) {
    if (mq <= 0 || dv <= 0) return;
    pv_sweep<T>(PvF32<T>{}, static_cast<const float*>(p), ldp, static_cast<const float*>(v), nk, mq, dv, alpha, o,
                ldo);
  }

  // ---- PvMode::kInt8 on the int8 dot units: u8 P codes with a per-row tile scale, int8 V
  // codes as kKeys-key words, both scales applied after the exact integer dot.
  static void softmax_u8(float* s, int lds, int mq, int nk, float* m, float* l, float* alpha, void* p, int ldp,
                         float* p_scale) {
    softmax_u8_tile<T>(s, lds, mq, nk, m, l, alpha, static_cast<uint8_t*>(p), ldp, p_scale);
  }
  static void pack_v_i8(const void* src, int64_t row_stride, DType /*v_dtype*/, int rows, int dv,
                        const float* /*channel_scale*/, const float* /*row_scale*/, void* dst) {
    T::Pack::template v_i8<T::PvI8::kKeys>(static_cast<const int8_t*>(src), row_stride, rows, dv,
                                           ceil_div(dv, T::W) * T::W, static_cast<int32_t*>(dst));
  }
  static void pv_i8(const void* p, int ldp, const float* p_scale, const void* v, int mq, int nk, int dv,
                    const float* alpha, float v_scale, float* o, int ldo) {
    if (mq <= 0 || dv <= 0) return;
    pv_i8_tile<T>(static_cast<const uint8_t*>(p), ldp, p_scale, static_cast<const int32_t*>(v), mq, nk, dv, alpha,
                  v_scale, o, ldo);
  }

  // ---- PvMode::kFp8 on VDPBF16PS: P = fp8(448·p) as bf16 (ldp in bf16 elements, even),
  // V as bf16 pairs of raw codes; V's scale after the dot.
  static void softmax_fp8_bf16(float* s, int lds, int mq, int nk, float* m, float* l, float* alpha, void* p, int ldp,
                               float* /*p_scale*/) {
    softmax_tile<T, true>(s, lds, mq, nk, m, l, alpha, p, ldp);
  }
  static void pack_v_fp8_bf16(const void* src, int64_t row_stride, DType /*v_dtype*/, int rows, int dv,
                              const float* /*channel_scale*/, const float* /*row_scale*/, void* dst) {
    T::Pack::v_fp8_bf16(static_cast<const uint8_t*>(src), row_stride, rows, dv, static_cast<uint32_t*>(dst));
  }
  static void pv_bf16(const void* p, int ldp, const float* /*p_scale*/, const void* v, int mq, int nk, int dv,
                      const float* alpha, float v_scale, float* o, int ldo) {
    if (mq <= 0 || dv <= 0) return;
    if constexpr (T::kBf16Dot) {
      const uint32_t* p2 = static_cast<const uint32_t*>(p);
      const uint32_t* v2 = static_cast<const uint32_t*>(v);
      const int pairs = ceil_div(nk, 2);
      if (v_scale == 1.0f) {
        pv_sweep<T>(PvBf16<T, true>{T::set1(v_scale)}, p2, ldp / 2, v2, pairs, mq, dv, alpha, o, ldo);
      } else {
        pv_sweep<T>(PvBf16<T, false>{T::set1(v_scale)}, p2, ldp / 2, v2, pairs, mq, dv, alpha, o, ldo);
      }
    }
  }

  // Packed sizes (layouts in the header comment, simd/x86_pack.h, simd/pv_int8_kernels.h).
  static int64_t k_bytes(int rows, int d, QuantDType t) {
    const int64_t keys = static_cast<int64_t>(ceil_div(rows, T::W)) * T::W;
    if (t == QuantDType::kInt8) {
      if constexpr (T::kQkI8PerWord == 2) return keys * ceil_div(d, 2) * 4;
      return (keys * ceil_div(d, 4) + keys) * 4;  // + the per-key corrections
    }
    if constexpr (T::kBf16Dot) return keys * ceil_div(d, 2) * 4;
    return keys * d * 4;
  }
  static int64_t v_bytes_bf16(int rows, int dv) { return static_cast<int64_t>(ceil_div(rows, 2)) * dv * 4; }
  static int64_t v_bytes_i8(int rows, int dv) {
    return static_cast<int64_t>(ceil_div(rows, T::PvI8::kKeys)) * ceil_div(dv, T::W) * T::W * 4;
  }

  static TileOps table() {
    const PvOps fp8_fma{448.0f, false, softmax_fp8, pack_v_fp8, pv_f32, v_bytes_f32};
    const PvOps half{1.0f, false, softmax_p16, pack_v_half, pv_f32, v_bytes_f32};
    const PvOps int8{1.0f, true, softmax_u8, pack_v_i8, pv_i8, v_bytes_i8};
    if constexpr (T::kBf16Dot) {
      const PvOps fp8_bf16{448.0f, true, softmax_fp8_bf16, pack_v_fp8_bf16, pv_bf16, v_bytes_bf16};
      return TileOps{pack_q, pack_k, qk, k_bytes,
                     {/* kFp8 */ fp8_bf16, /* kHalf */ half, /* kInt8 */ int8},
                     {/* kFp8 with V scale groups inside a key tile */ fp8_fma, PvOps{}, PvOps{}}};
    } else {
      return TileOps{pack_q, pack_k, qk, k_bytes,
                     {/* kFp8 */ fp8_fma, /* kHalf */ half, /* kInt8 */ int8},
                     {PvOps{}, PvOps{}, PvOps{}}};
    }
  }
};

}  // namespace
}  // namespace simd
}  // namespace sageattn
