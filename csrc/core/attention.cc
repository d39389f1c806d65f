// The flash-attention driver: validation, task split, per-thread scratch and the
// online-softmax loop over key tiles. The arithmetic inside a tile is TileOps' job.
#include "sageattn/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <vector>

#include "sageattn/error.h"
#include "sageattn/numeric.h"
#include "sageattn/online_softmax.h"
#include "sageattn/pv_int8.h"
#include "sageattn/thread_pool.h"
#include "sageattn/tile_ops.h"
#include "sageattn/validate.h"

namespace sageattn {
namespace {

constexpr int kTileM = 128;  // query rows per task
// Keys per tile. 128 rather than 64: a P·V micro-kernel ends each tile by folding its
// accumulators into O (convert, scale, load, store), and over 128 keys that epilogue
// weighs half as much against the dot products (bench/results/analysis.md).
constexpr int kTileN = 128;
static_assert(kTileN <= kInt8PvMaxKeys, "the int8 P·V kernels' exact sums are bounded in keys per tile");
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr float kFloatMax = std::numeric_limits<float>::max();

struct Dims {
  int64_t B, Nq, Nk, Hq, Hkv, D, Dv;
};

// Per-thread working memory, sized once per call: nothing is allocated in the loop.
struct Scratch {
  std::vector<float> qbuf, kbuf, vbuf, s, p, p_scale, o, m, l, alpha, row_scale, col_scale, v_scale, v_row_scale;
  Scratch(const Dims& d, const TileOps& ops, const PvOps& pv, QuantDType qk) {
    const int64_t dmax = std::max<int64_t>(d.D, 1);
    auto floats_for = [](int64_t bytes) { return (bytes + 3) / 4 + 16; };  // + 64 bytes of slack
    qbuf.resize(kTileM * dmax + 64);
    // One key tile packed by this ISA and P·V mode (their own byte counts).
    kbuf.resize(floats_for(ops.k_bytes(kTileN, static_cast<int>(dmax), qk)));
    vbuf.resize(floats_for(pv.v_bytes(kTileN, static_cast<int>(std::max<int64_t>(d.Dv, 1)))));
    s.resize(kTileM * kTileN);
    p.resize(kTileM * kTileN);  // P in the mode's type: at most 4 bytes per element
    p_scale.resize(kTileM);
    o.resize(kTileM * std::max<int64_t>(d.Dv, 1));
    m.resize(kTileM);
    l.resize(kTileM);
    alpha.resize(kTileM);
    row_scale.resize(kTileM);
    col_scale.resize(kTileN);
    v_scale.resize(std::max<int64_t>(d.Dv, kTileN));
    v_row_scale.resize(kTileN);
  }
};

bool is_fp8_storage(DType t) { return t == DType::kFP8E4M3 || t == DType::kU8; }

Dims validate(const AttentionArgs& a) {
  const bool int8 = a.qk_dtype == QuantDType::kInt8;
  check_ndim(a.q, 4, "q");
  check_ndim(a.k, 4, "k");
  check_ndim(a.v, 4, "v");
  if (int8) {
    check_dtype(a.q, {DType::kI8}, "q");
    check_dtype(a.k, {DType::kI8}, "k");
  } else {
    check_dtype(a.q, {DType::kFP8E4M3, DType::kU8}, "q");
    check_dtype(a.k, {DType::kFP8E4M3, DType::kU8}, "k");
  }
  switch (a.pv_mode) {
    case PvMode::kFp8: check_dtype(a.v, {DType::kFP8E4M3, DType::kU8}, "v"); break;
    case PvMode::kHalf: check_dtype(a.v, {DType::kF16, DType::kBF16}, "v"); break;
    case PvMode::kInt8: check_dtype(a.v, {DType::kI8}, "v"); break;
    default: fail_value("pv_mode: expected 0 (fp8), 1 (16-bit) or 2 (int8)");
  }
  const bool half_pv = a.pv_mode == PvMode::kHalf;
  Dims d{a.q.shape[0], a.q.shape[1], a.k.shape[1], a.q.shape[2], a.k.shape[2], a.q.shape[3],
         a.v.shape[3]};
  check_shape(a.k, {d.B, -1, -1, d.D}, "k");
  check_shape(a.v, {d.B, d.Nk, d.Hkv, -1}, "v");
  if (d.D < 1 || d.D > kMaxHeadDim) fail_value("q: head dim must be in [1, 256], got " + std::to_string(d.D));
  if (d.Dv < 1 || d.Dv > kMaxHeadDim) fail_value("v: head dim must be in [1, 256], got " + std::to_string(d.Dv));
  if (d.Hkv < 1 && d.Hq > 0) fail_value("k: needs at least one head");
  if (d.Hkv > 0 && d.Hq % d.Hkv != 0) {
    fail_value("q: number of query heads (" + std::to_string(d.Hq) +
               ") must be a multiple of key/value heads (" + std::to_string(d.Hkv) + ")");
  }
  for (const TensorRef* t : {&a.q, &a.k, &a.v}) {
    const char* name = t == &a.q ? "q" : (t == &a.k ? "k" : "v");
    check_non_negative_strides(*t, name);
    if (t->shape[3] > 1 && t->stride[3] != 1) fail_value(std::string(name) + ": codes need unit stride along the head dim");
    if (t->numel() > 0 && t->data == nullptr) fail_value(std::string(name) + ": null data");
  }
  auto check_scale = [&](const TensorRef& s, int64_t b, int64_t h, int64_t g, const char* name) {
    check_ndim(s, 3, name);
    check_dtype(s, {DType::kF32}, name);
    check_broadcastable(s, {b, h, g}, name);
    if (s.shape[2] != g) fail_value(std::string(name) + ": expected " + std::to_string(g) + " scale groups, got " + std::to_string(s.shape[2]));
  };
  check_grouping(a.q_grouping, "q_grouping");
  check_grouping(a.k_grouping, "k_grouping");
  check_grouping(a.v_grouping, "v_grouping");
  check_scale(a.q_scale, d.B, d.Hq, a.q_grouping.num_groups(d.Nq), "q_scale");
  check_scale(a.k_scale, d.B, d.Hkv, a.k_grouping.num_groups(d.Nk), "k_scale");
  if (!half_pv) {
    if (!a.v_scale) fail_value("v_scale: required for quantized V");
    if (a.v_scale_mode != VScaleMode::kPerChannel && a.v_scale_mode != VScaleMode::kPerToken)
      fail_value("v_scale_mode: expected 0 (per channel) or 1 (per token group)");
    if (a.v_scale_mode == VScaleMode::kPerChannel) check_scale(*a.v_scale, d.B, d.Hkv, d.Dv, "v_scale");
    else check_scale(*a.v_scale, d.B, d.Hkv, a.v_grouping.num_groups(d.Nk), "v_scale");
  }

  if (a.k_mean) {
    check_ndim(*a.k_mean, 3, "k_mean");
    check_dtype(*a.k_mean, {DType::kF32}, "k_mean");
    check_broadcastable(*a.k_mean, {d.B, d.Hkv, d.D}, "k_mean");
  }
  if (a.mask) {
    check_ndim(*a.mask, 4, "attn_mask");
    check_dtype(*a.mask, {DType::kBool, DType::kU8, DType::kF32}, "attn_mask");
    check_broadcastable(*a.mask, {d.B, d.Hq, d.Nq, d.Nk}, "attn_mask");
  }
  if (!std::isfinite(a.sm_scale)) fail_value("sm_scale: must be finite");
  check_ndim(a.out, 4, "out");
  check_shape(a.out, {d.B, d.Nq, d.Hq, d.Dv}, "out");
  check_no_self_overlap(a.out, "out");
  if (is_fp8_storage(a.out.dtype)) {
    if (!a.out_scale) fail_value("out_scale: required when out is float8");
    check_ndim(*a.out_scale, 4, "out_scale");
    check_dtype(*a.out_scale, {DType::kF32}, "out_scale");
    check_shape(*a.out_scale, {d.B, d.Nq, d.Hq, 1}, "out_scale");
    check_no_self_overlap(*a.out_scale, "out_scale");
  } else {
    check_dtype(a.out, {DType::kBF16, DType::kF16, DType::kF32}, "out");
  }
  if (a.lse) {
    check_ndim(*a.lse, 3, "lse");
    check_dtype(*a.lse, {DType::kF32}, "lse");
    check_shape(*a.lse, {d.B, d.Hq, d.Nq}, "lse");
    check_no_self_overlap(*a.lse, "lse");
  }
  return d;
}

inline float scale3(const TensorRef& s, int64_t b, int64_t h, int64_t g) {
  return s.ptr<const float>()[bcast_offset(s, 0, b) + bcast_offset(s, 1, h) + g * s.stride[2]];
}

void store_out_row(const AttentionArgs& a, int64_t b, int64_t n, int64_t h, const float* row, int64_t dv) {
  const TensorRef& o = a.out;
  const int64_t base = b * o.stride[0] + n * o.stride[1] + h * o.stride[2];
  const int64_t s = o.stride[3];
  switch (o.dtype) {
    case DType::kBF16:
      for (int64_t c = 0; c < dv; ++c) o.ptr<uint16_t>()[base + c * s] = f32_to_bf16(row[c]);
      break;
    case DType::kF16:
      for (int64_t c = 0; c < dv; ++c) o.ptr<uint16_t>()[base + c * s] = f32_to_f16(row[c]);
      break;
    case DType::kF32:
      for (int64_t c = 0; c < dv; ++c) o.ptr<float>()[base + c * s] = row[c];
      break;
    default: {  // fp8 output: per-row scale (docs/CONTRACT.md §3.8)
      float amax = 0.0f;
      for (int64_t c = 0; c < dv; ++c) {
        const float v = std::fabs(row[c]);
        amax = (v > amax || v != v) ? v : amax;
      }
      const float scale = (amax < 1e-12f ? 1e-12f : amax) / kFp8Max;
      const TensorRef& os = *a.out_scale;
      os.ptr<float>()[b * os.stride[0] + n * os.stride[1] + h * os.stride[2]] = scale;
      for (int64_t c = 0; c < dv; ++c) o.ptr<uint8_t>()[base + c * s] = f32_to_fp8_e4m3(row[c] / scale);
    }
  }
}

// Finite stays finite: ±FLT_MAX where a + b (a · b) overflowed but both were finite.
inline float add_saturating(float a, float b) {
  const float s = a + b;
  const bool overflowed = std::isinf(s) && std::isfinite(a) && std::isfinite(b);
  return overflowed ? std::copysign(kFloatMax, s) : s;
}

inline float mul_saturating(float a, float b) {
  const float p = a * b;
  const bool overflowed = std::isinf(p) && std::isfinite(a) && std::isfinite(b);
  return overflowed ? std::copysign(kFloatMax, p) : p;
}

// The score scale sm_scale·log2(e), split as q_side · 2^k_shift: the kernels form
// code dot × (q_scale·q_side) × (k_scale·2^k_shift), and for a huge finite sm_scale the
// unsplit q_scale·sm_scale·log2(e), or the dot times it, overflows float before k_scale
// brings the product back into range (docs/CONTRACT.md §3.4). Powers of two change no
// rounding, so every score that did not overflow unsplit is bitwise what it was; an
// ordinary sm_scale (below 2^32) is not split at all.
struct ScoreScale {
  float q_side;
  int k_shift;
};

ScoreScale split_score_scale(float sm_scale) {
  int exponent = 0;
  std::frexp(sm_scale, &exponent);
  const int k_shift = exponent > 32 ? exponent / 2 : 0;
  return {std::ldexp(sm_scale, -k_shift) * kLog2e, k_shift};
}

// The largest finite |scale| of a key tile's nk column scales.
float finite_abs_max(const float* col_scale, int nk) {
  float col_max = 0.0f;
  for (int j = 0; j < nk; ++j) {
    if (std::isfinite(col_scale[j])) col_max = std::fmax(col_max, std::fabs(col_scale[j]));
  }
  return col_max;
}

// Whether a score of this tile can leave float's range: |dot| <= 448² · D for both
// code types (fp8's bound covers int8's 127²).
bool scores_may_overflow(float row_scale_max, float col_scale_max, int D) {
  return static_cast<double>(row_scale_max) * col_scale_max * D * (448.0 * 448.0) >= static_cast<double>(kFloatMax);
}

// Scores that overflowed from finite scales saturate at ±FLT_MAX, as a finite mask value
// does (docs/CONTRACT.md §3.4, §8.6); with finite scales the codes are finite, so an
// infinite score can only be such an overflow. NaN stays NaN.
void saturate_scores(float* s, int lds, int mq, int nk, const float* row_scale, const float* col_scale) {
  for (int i = 0; i < mq; ++i) {
    if (!std::isfinite(row_scale[i])) continue;
    float* row = s + static_cast<int64_t>(i) * lds;
    for (int j = 0; j < nk; ++j) {
      if (std::isinf(row[j]) && std::isfinite(col_scale[j])) row[j] = std::copysign(kFloatMax, row[j]);
    }
  }
}

// Adds one mask row to a score row (log2 units): bool keeps or hides, float adds.
// A finite float mask value stays finite in log2 units and after the add (docs/CONTRACT.md
// §3): ComfyUI masks with -finfo(bf16).max (-3.39e38), which times log2(e) overflows
// float; SDPA adds it in natural units and stays finite, so a row it fully covers is a
// softmax over equal finite scores (the mean of V), not an empty row. -inf still hides.
void apply_mask_row(const TensorRef& mk, int64_t b, int64_t h, int64_t i, int64_t j0, int nk, float* row) {
  const int64_t base = bcast_offset(mk, 0, b) + bcast_offset(mk, 1, h) + bcast_offset(mk, 2, i);
  const int64_t js = mk.shape[3] == 1 ? 0 : mk.stride[3];
  if (mk.dtype == DType::kF32) {
    const float* m = mk.ptr<const float>() + base + j0 * js;
    for (int j = 0; j < nk; ++j) {
      const float bias = m[j * js];
      const float scaled = bias * kLog2e;  // -inf and NaN pass through unchanged
      const float term = std::isfinite(bias) ? std::fmax(-kFloatMax, std::fmin(kFloatMax, scaled)) : scaled;
      row[j] = add_saturating(row[j], term);
    }
  } else {
    const uint8_t* m = mk.ptr<const uint8_t>() + base + j0 * js;
    for (int j = 0; j < nk; ++j) row[j] = m[j * js] ? row[j] : kNegInf;
  }
}

// q̂_i · mean_k: the score shift that smoothing removed, added back to the LSE.
float smoothing_shift(const AttentionArgs& a, int64_t b, int64_t i, int64_t hq, int64_t hkv, int64_t D) {
  const TensorRef& mk = *a.k_mean;
  const float* mean = mk.ptr<const float>() + bcast_offset(mk, 0, b) + bcast_offset(mk, 1, hkv);
  const int64_t qoff = b * a.q.stride[0] + i * a.q.stride[1] + hq * a.q.stride[2];
  float acc = 0.0f;
  for (int64_t c = 0; c < D; ++c) {
    const float qv = a.qk_dtype == QuantDType::kInt8
                         ? static_cast<float>(a.q.ptr<const int8_t>()[qoff + c])
                         : fp8_e4m3_to_f32(a.q.ptr<const uint8_t>()[qoff + c]);
    acc += qv * mean[c * mk.stride[2]];
  }
  return acc;
}

// Packs key tiles of one (b, kv head): K and V codes into the ISA's layouts, and the
// per-key K scales. V's scale goes where the P·V mode wants it: folded into V (from
// v_channel_scale or the per-key V scales) or, for a mode that scales after the dot,
// returned as the tile's one V scale (per-token V; per-channel V is scaled by the
// caller at the end), together with the largest finite |K scale| of the tile.
struct KeyTilePacker {
  const AttentionArgs& a;
  const Dims& d;
  const TileOps& ops;
  const PvOps& pv;
  int64_t b, hkv;
  int k_shift = split_score_scale(a.sm_scale).k_shift;  // K's side of the score scale

  bool v_scaled() const { return a.pv_mode != PvMode::kHalf; }
  bool v_per_channel() const { return v_scaled() && a.v_scale_mode == VScaleMode::kPerChannel; }

  struct TileScales {
    float v_tile;     // the tile's one V scale (1 unless applied after the dot per token group)
    float k_abs_max;  // finite_abs_max of the tile's K scales (for scores_may_overflow)
  };
  // The first nk keys of tile t (keys [t·kTileN, +nk)); v_row_scale: kTileN floats of scratch.
  TileScales pack(int64_t t, int nk, void* k, float* k_scale, void* v, const float* v_channel_scale,
             float* v_row_scale) const {
    const int64_t j0 = t * kTileN;
    const uint8_t* kbase = static_cast<const uint8_t*>(a.k.data) + b * a.k.stride[0] + hkv * a.k.stride[2];
    ops.pack_k(kbase + j0 * a.k.stride[1], a.k.stride[1], nk, static_cast<int>(d.D), a.qk_dtype, k);
    for (int j = 0; j < nk; ++j) {
      const float ks = scale3(a.k_scale, b, hkv, a.k_grouping.group_of(j0 + j, d.Nk));
      k_scale[j] = k_shift == 0 ? ks : mul_saturating(ks, std::ldexp(1.0f, k_shift));
    }

    const float* channel_scale = v_per_channel() && !pv.v_scale_after_dot ? v_channel_scale : nullptr;
    const float* row_scale = nullptr;
    float tile_scale = 1.0f;
    if (v_scaled() && !v_per_channel()) {
      for (int j = 0; j < nk; ++j) v_row_scale[j] = scale3(*a.v_scale, b, hkv, a.v_grouping.group_of(j0 + j, d.Nk));
      if (pv.v_scale_after_dot) tile_scale = v_row_scale[0];  // one group per key tile (checked per call)
      else row_scale = v_row_scale;
    }
    const int64_t v_elem = dtype_size(a.v.dtype);
    const uint8_t* vbase = static_cast<const uint8_t*>(a.v.data) + (b * a.v.stride[0] + hkv * a.v.stride[2]) * v_elem;
    pv.pack_v(vbase + j0 * a.v.stride[1] * v_elem, a.v.stride[1], a.v.dtype, nk, static_cast<int>(d.Dv), channel_scale,
              row_scale, v);
    return {tile_scale, finite_abs_max(k_scale, nk)};
  }
};

// The packed K/V tiles of one (b, kv head), shared by every query tile and thread
// (tile t at t·k_stride / t·v_stride bytes). Allocated once per call without touching
// its pages, so only what is packed becomes resident.
struct SharedKeyTiles {
  int64_t tiles = 0, k_stride = 0, v_stride = 0;
  std::unique_ptr<uint8_t[]> k, v;
  std::vector<float> k_scale, v_tile_scale;
  std::vector<float> k_scale_max;  // per tile, finite_abs_max of its K scales (found once, read per query tile)

  static int64_t round64(int64_t n) { return (n + 63) / 64 * 64; }
  SharedKeyTiles(const Dims& d, const TileOps& ops, const PvOps& pv, QuantDType qk)
      : tiles((d.Nk + kTileN - 1) / kTileN),
        k_stride(round64(ops.k_bytes(kTileN, static_cast<int>(d.D), qk))),
        v_stride(round64(pv.v_bytes(kTileN, static_cast<int>(d.Dv)))) {}
  int64_t bytes() const { return tiles * (k_stride + v_stride); }
  void allocate() {
    k.reset(new uint8_t[tiles * k_stride + 64]);
    v.reset(new uint8_t[tiles * v_stride + 64]);
    k_scale.resize(tiles * kTileN);
    v_tile_scale.resize(tiles);
    k_scale_max.resize(tiles);
  }
  void* k_tile(int64_t t) const { return align(k.get()) + t * k_stride; }
  void* v_tile(int64_t t) const { return align(v.get()) + t * v_stride; }
  static uint8_t* align(uint8_t* p) { return reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(p) + 63) & ~uintptr_t{63}); }
};

void fill_v_channel_scale(const AttentionArgs& a, const Dims& d, int64_t b, int64_t hkv, float* out) {
  if (a.pv_mode == PvMode::kHalf || a.v_scale_mode != VScaleMode::kPerChannel) return;
  for (int64_t c = 0; c < d.Dv; ++c) out[c] = scale3(*a.v_scale, b, hkv, c);
}

// One task: query rows [i0, i0 + mq) of head (b, hq), over all visible key tiles, taken
// from `shared` or, when it is null, packed into this thread's scratch tile by tile.
void attend_tile(const AttentionArgs& a, const Dims& d, const TileOps& ops, const PvOps& pv, Scratch& sc,
                 int64_t b, int64_t hq, int64_t i0, const SharedKeyTiles* shared) {
  const int mq = static_cast<int>(std::min<int64_t>(kTileM, d.Nq - i0));
  const int64_t hkv = hq / (d.Hq / d.Hkv);
  const int D = static_cast<int>(d.D), Dv = static_cast<int>(d.Dv);
  const ScoreScale score_scale = split_score_scale(a.sm_scale);
  const KeyTilePacker packer{a, d, ops, pv, b, hkv};

  const uint8_t* qsrc = static_cast<const uint8_t*>(a.q.data) + b * a.q.stride[0] + i0 * a.q.stride[1] + hq * a.q.stride[2];
  ops.pack_q(qsrc, a.q.stride[1], mq, D, a.qk_dtype, sc.qbuf.data());
  float row_scale_max = 0.0f;
  for (int i = 0; i < mq; ++i) {
    sc.row_scale[i] = mul_saturating(scale3(a.q_scale, b, hq, a.q_grouping.group_of(i0 + i, d.Nq)), score_scale.q_side);
    if (std::isfinite(sc.row_scale[i])) row_scale_max = std::fmax(row_scale_max, std::fabs(sc.row_scale[i]));
    sc.m[i] = kNegInf;
    sc.l[i] = 0.0f;
  }
  std::fill(sc.o.begin(), sc.o.begin() + static_cast<int64_t>(mq) * Dv, 0.0f);
  fill_v_channel_scale(a, d, b, hkv, sc.v_scale.data());

  const int64_t kend = a.causal ? std::min<int64_t>(d.Nk, i0 + mq) : d.Nk;
  for (int64_t j0 = 0; j0 < kend; j0 += kTileN) {
    const int64_t t = j0 / kTileN;
    const int nk = static_cast<int>(std::min<int64_t>(kTileN, kend - j0));
    const void* kt;
    const float* k_scale;
    float k_scale_max;
    const void* vt;
    float v_tile_scale;
    // A causal diagonal tile that ends before the shared tile does is packed for its
    // visible keys only: the kernels read a packed tile for exactly the keys it holds.
    if (shared && nk == std::min<int64_t>(kTileN, d.Nk - j0)) {
      kt = shared->k_tile(t);
      k_scale = shared->k_scale.data() + t * kTileN;
      k_scale_max = shared->k_scale_max[t];
      vt = shared->v_tile(t);
      v_tile_scale = shared->v_tile_scale[t];
    } else {
      const KeyTilePacker::TileScales scales = packer.pack(t, nk, sc.kbuf.data(), sc.col_scale.data(), sc.vbuf.data(),
                                                           sc.v_scale.data(), sc.v_row_scale.data());
      v_tile_scale = scales.v_tile;
      k_scale_max = scales.k_abs_max;
      kt = sc.kbuf.data();
      k_scale = sc.col_scale.data();
      vt = sc.vbuf.data();
    }
    ops.qk(sc.qbuf.data(), kt, mq, nk, D, a.qk_dtype, sc.row_scale.data(), k_scale, sc.s.data(), kTileN);
    if (scores_may_overflow(row_scale_max, k_scale_max, D)) {
      saturate_scores(sc.s.data(), kTileN, mq, nk, sc.row_scale.data(), k_scale);
    }
    if (a.causal && j0 + nk - 1 > i0) {  // diagonal tile: hide keys after each query
      for (int i = 0; i < mq; ++i)
        for (int j = std::max<int64_t>(0, i0 + i + 1 - j0); j < nk; ++j) sc.s[i * kTileN + j] = kNegInf;
    }
    if (a.mask) {
      for (int i = 0; i < mq; ++i) apply_mask_row(*a.mask, b, hq, i0 + i, j0, nk, sc.s.data() + i * kTileN);
    }
    pv.softmax(sc.s.data(), kTileN, mq, nk, sc.m.data(), sc.l.data(), sc.alpha.data(), sc.p.data(), kTileN,
               sc.p_scale.data());
    pv.pv(sc.p.data(), kTileN, sc.p_scale.data(), vt, mq, nk, Dv, sc.alpha.data(), v_tile_scale, sc.o.data(), Dv);
  }
  const bool scale_channels_now = packer.v_per_channel() && pv.v_scale_after_dot;

  for (int i = 0; i < mq; ++i) {
    // Restrict-qualified and branch-free inside: the compiler vectorizes these loops
    // (a per-element `empty ?` and possible aliasing with v_scale kept them scalar).
    float* __restrict orow = sc.o.data() + static_cast<int64_t>(i) * Dv;
    const float* __restrict channel_scale = sc.v_scale.data();
    const bool empty = sc.m[i] == kNegInf;
    const float inv = empty ? 0.0f : 1.0f / (pv.p_unit * sc.l[i]);
    if (empty) {
      std::fill(orow, orow + Dv, 0.0f);
    } else if (scale_channels_now) {
      for (int c = 0; c < Dv; ++c) orow[c] = orow[c] * channel_scale[c] * inv;
    } else {
      for (int c = 0; c < Dv; ++c) orow[c] = orow[c] * inv;
    }
    store_out_row(a, b, i0 + i, hq, orow, Dv);
    if (a.lse) {
      float lse = kNegInf;
      if (!empty) {
        lse = (sc.m[i] + std::log2(sc.l[i])) * kLn2;
        if (a.k_mean) {
          const float qs = scale3(a.q_scale, b, hq, a.q_grouping.group_of(i0 + i, d.Nq));
          const float shift = mul_saturating(mul_saturating(a.sm_scale, qs), smoothing_shift(a, b, i0 + i, hq, hkv, D));
          lse = add_saturating(lse, shift);
        }
      }
      const TensorRef& t = *a.lse;
      t.ptr<float>()[b * t.stride[0] + hq * t.stride[1] + (i0 + i) * t.stride[2]] = lse;
    }
  }
}

// The P·V kernels of this call, chosen once from the ISA's table by the P·V mode.
const PvOps& select_pv_ops(const AttentionArgs& a, const Dims& d, const TileOps& ops, Isa isa) {
  const PvOps& pv = ops.pv_ops(a.pv_mode);
  if (!pv.built()) {
    throw Error(ErrorKind::kNotImplemented, std::string("pv_mode: P·V mode ") +
                                                std::to_string(static_cast<int>(a.pv_mode)) +
                                                " is not built for the ISA '" + isa_name(isa) + "'");
  }
  if (pv.v_scale_after_dot && a.v_scale_mode == VScaleMode::kPerToken &&
      !a.v_grouping.constant_over_tiles(d.Nk, kTileN)) {
    const PvOps& folded = ops.pv_ops_folded_scale(a.pv_mode);
    if (!folded.built()) {
      throw Error(ErrorKind::kNotImplemented,
                  "v_grouping: this P·V mode applies V's scale once per key tile, so a V scale group must "
                  "not change inside a " + std::to_string(kTileN) + "-key tile");
    }
    return folded;
  }
  return pv;
}

}  // namespace

void attention_forward(const AttentionArgs& a) {
  const Dims d = validate(a);
  if (d.B == 0 || d.Nq == 0 || d.Hq == 0) return;
  const Isa isa = active_isa();
  const TileOps& ops = tile_ops_for(isa);
  const PvOps& pv = select_pv_ops(a, d, ops, isa);
  const int64_t q_tiles = (d.Nq + kTileM - 1) / kTileM;
  const int64_t rep = d.Hq / d.Hkv;  // query heads per kv head
  const int threads = std::max(1, a.num_threads);
  SharedKeyTiles shared(d, ops, pv, a.qk_dtype);
  // Above the byte limit, key tiles are packed per query tile instead: extra memory
  // stays small at any N (tests/test_scale.py).
  const bool share = d.Nk > 0 && shared.bytes() <= a.shared_kv_max_bytes;
  const int64_t max_tasks = std::max(q_tiles * d.B * d.Hq, share ? shared.tiles : 0);
  std::vector<Scratch> scratch;
  scratch.reserve(threads);
  for (int t = 0; t < std::min<int64_t>(threads, max_tasks); ++t) scratch.emplace_back(d, ops, pv, a.qk_dtype);
  // Causal tiles further down the sequence see more keys: hand them out first so the
  // dynamic schedule ends with the cheap ones and the threads finish together.
  auto tile_of = [&](int64_t task, int64_t heads) { return a.causal ? q_tiles - 1 - task / heads : task / heads; };

  if (!share) {
    // Every task packs the key tiles it reads (O(1) extra memory per thread).
    const int64_t heads = d.B * d.Hq;
    parallel_for(q_tiles * heads, threads, [&](int64_t task, int worker) {
      const int64_t bh = task % heads;
      attend_tile(a, d, ops, pv, scratch[worker], bh / d.Hq, bh % d.Hq, tile_of(task, heads) * kTileM, nullptr);
    });
    return;
  }
  // K/V packed once per (b, kv head): the threads split the key tiles to pack them, then
  // the query tiles of the kv head's query heads.
  shared.allocate();
  std::vector<float> v_channel_scale(std::max<int64_t>(d.Dv, 1));
  for (int64_t b = 0; b < d.B; ++b) {
    for (int64_t hkv = 0; hkv < d.Hkv; ++hkv) {
      const KeyTilePacker packer{a, d, ops, pv, b, hkv};
      fill_v_channel_scale(a, d, b, hkv, v_channel_scale.data());
      parallel_for(shared.tiles, threads, [&](int64_t t, int worker) {
        const int nk = static_cast<int>(std::min<int64_t>(kTileN, d.Nk - t * kTileN));
        const KeyTilePacker::TileScales scales =
            packer.pack(t, nk, shared.k_tile(t), shared.k_scale.data() + t * kTileN, shared.v_tile(t),
                        v_channel_scale.data(), scratch[worker].v_row_scale.data());
        shared.v_tile_scale[t] = scales.v_tile;
        shared.k_scale_max[t] = scales.k_abs_max;
      });
      parallel_for(q_tiles * rep, threads, [&](int64_t task, int worker) {
        attend_tile(a, d, ops, pv, scratch[worker], b, hkv * rep + task % rep, tile_of(task, rep) * kTileM, &shared);
      });
    }
  }
}

}  // namespace sageattn
