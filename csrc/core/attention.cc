// The flash-attention driver: validation, task split, per-thread scratch and the
// online-softmax loop over key tiles. The arithmetic inside a tile is TileOps' job.
#include "sageattn/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
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

constexpr int kTileM = 128;  // query rows per task (K/V tiles are packed once per 128 rows)
constexpr int kTileN = 64;  // keys per tile
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
  std::vector<float> qbuf, kbuf, vbuf, s, p, p_scale, o, m, l, alpha, row_scale, col_scale, v_scale;
  explicit Scratch(const Dims& d) {
    const int64_t dmax = std::max<int64_t>(d.D, 1);
    qbuf.resize(kTileM * dmax + 64);
    kbuf.resize(kTileN * dmax + 64);
    // 4 bytes per element of a V tile whose width is rounded up to 16 (the int8 P·V
    // mode pads its packed V to whole vectors).
    vbuf.resize(kTileN * ((std::max<int64_t>(d.Dv, 1) + 15) / 16 * 16) + 64);
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

// Finite stays finite: ±FLT_MAX where a + b overflowed but both were finite.
inline float add_saturating(float a, float b) {
  const float s = a + b;
  const bool overflowed = std::isinf(s) && std::isfinite(a) && std::isfinite(b);
  return overflowed ? std::copysign(kFloatMax, s) : s;
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

// One task: query rows [i0, i0 + mq) of head (b, hq), over all visible key tiles.
void attend_tile(const AttentionArgs& a, const Dims& d, const TileOps& ops, const PvOps& pv, Scratch& sc,
                 int64_t b, int64_t hq, int64_t i0) {
  const int mq = static_cast<int>(std::min<int64_t>(kTileM, d.Nq - i0));
  const int64_t hkv = hq / (d.Hq / d.Hkv);
  const int D = static_cast<int>(d.D), Dv = static_cast<int>(d.Dv);
  const float score_scale = a.sm_scale * kLog2e;

  const uint8_t* qsrc = static_cast<const uint8_t*>(a.q.data) + b * a.q.stride[0] + i0 * a.q.stride[1] + hq * a.q.stride[2];
  ops.pack_q(qsrc, a.q.stride[1], mq, D, a.qk_dtype, sc.qbuf.data());
  for (int i = 0; i < mq; ++i) {
    sc.row_scale[i] = scale3(a.q_scale, b, hq, a.q_grouping.group_of(i0 + i, d.Nq)) * score_scale;
    sc.m[i] = kNegInf;
    sc.l[i] = 0.0f;
  }
  std::fill(sc.o.begin(), sc.o.begin() + static_cast<int64_t>(mq) * Dv, 0.0f);
  // V's scale, if V has one: folded into the packed V, or applied after the dot (per
  // key tile for token groups, per output element at the end for channels).
  const bool v_scaled = a.pv_mode != PvMode::kHalf;
  const bool v_per_channel = v_scaled && a.v_scale_mode == VScaleMode::kPerChannel;
  const bool v_per_token = v_scaled && !v_per_channel;
  if (v_per_channel) {
    for (int c = 0; c < Dv; ++c) sc.v_scale[c] = scale3(*a.v_scale, b, hkv, c);
  }

  const int64_t kend = a.causal ? std::min<int64_t>(d.Nk, i0 + mq) : d.Nk;
  const uint8_t* kbase = static_cast<const uint8_t*>(a.k.data) + b * a.k.stride[0] + hkv * a.k.stride[2];
  const int64_t v_elem = dtype_size(a.v.dtype);
  const uint8_t* vbase = static_cast<const uint8_t*>(a.v.data) + (b * a.v.stride[0] + hkv * a.v.stride[2]) * v_elem;
  for (int64_t j0 = 0; j0 < kend; j0 += kTileN) {
    const int nk = static_cast<int>(std::min<int64_t>(kTileN, kend - j0));
    ops.pack_k(kbase + j0 * a.k.stride[1], a.k.stride[1], nk, D, a.qk_dtype, sc.kbuf.data());
    for (int j = 0; j < nk; ++j) sc.col_scale[j] = scale3(a.k_scale, b, hkv, a.k_grouping.group_of(j0 + j, d.Nk));
    ops.qk(sc.qbuf.data(), sc.kbuf.data(), mq, nk, D, a.qk_dtype, sc.row_scale.data(),
           sc.col_scale.data(), sc.s.data(), kTileN);
    if (a.causal && j0 + nk - 1 > i0) {  // diagonal tile: hide keys after each query
      for (int i = 0; i < mq; ++i)
        for (int j = std::max<int64_t>(0, i0 + i + 1 - j0); j < nk; ++j) sc.s[i * kTileN + j] = kNegInf;
    }
    if (a.mask) {
      for (int i = 0; i < mq; ++i) apply_mask_row(*a.mask, b, hq, i0 + i, j0, nk, sc.s.data() + i * kTileN);
    }
    pv.softmax(sc.s.data(), kTileN, mq, nk, sc.m.data(), sc.l.data(), sc.alpha.data(), sc.p.data(), kTileN,
               sc.p_scale.data());
    const float* channel_scale = v_per_channel && !pv.v_scale_after_dot ? sc.v_scale.data() : nullptr;
    const float* row_scale = nullptr;
    float tile_scale = 1.0f;
    if (v_per_token) {
      for (int j = 0; j < nk; ++j) sc.col_scale[j] = scale3(*a.v_scale, b, hkv, a.v_grouping.group_of(j0 + j, d.Nk));
      if (pv.v_scale_after_dot) tile_scale = sc.col_scale[0];  // one group per key tile (checked per call)
      else row_scale = sc.col_scale.data();
    }
    pv.pack_v(vbase + j0 * a.v.stride[1] * v_elem, a.v.stride[1], a.v.dtype, nk, Dv, channel_scale, row_scale,
              sc.vbuf.data());
    pv.pv(sc.p.data(), kTileN, sc.p_scale.data(), sc.vbuf.data(), mq, nk, Dv, sc.alpha.data(), tile_scale,
          sc.o.data(), Dv);
  }
  const bool scale_channels_now = v_per_channel && pv.v_scale_after_dot;

  for (int i = 0; i < mq; ++i) {
    float* orow = sc.o.data() + static_cast<int64_t>(i) * Dv;
    const bool empty = sc.m[i] == kNegInf;
    const float inv = empty ? 0.0f : 1.0f / (pv.p_unit * sc.l[i]);
    if (scale_channels_now) {
      for (int c = 0; c < Dv; ++c) orow[c] = empty ? 0.0f : orow[c] * sc.v_scale[c] * inv;
    } else {
      for (int c = 0; c < Dv; ++c) orow[c] = empty ? 0.0f : orow[c] * inv;
    }
    store_out_row(a, b, i0 + i, hq, orow, Dv);
    if (a.lse) {
      float lse = kNegInf;
      if (!empty) {
        lse = (sc.m[i] + std::log2(sc.l[i])) * kLn2;
        if (a.k_mean) {
          const float qs = scale3(a.q_scale, b, hq, a.q_grouping.group_of(i0 + i, d.Nq));
          lse += a.sm_scale * qs * smoothing_shift(a, b, i0 + i, hq, hkv, D);
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
    throw Error(ErrorKind::kNotImplemented,
                "v_grouping: this P·V mode applies V's scale once per key tile, so a V scale group must "
                "not change inside a " + std::to_string(kTileN) + "-key tile");
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
  const int64_t heads = d.B * d.Hq;
  const int threads = std::max(1, a.num_threads);
  std::vector<Scratch> scratch;
  scratch.reserve(threads);
  for (int t = 0; t < std::min<int64_t>(threads, q_tiles * heads); ++t) scratch.emplace_back(d);
  // Causal tiles further down the sequence see more keys: hand them out first so the
  // dynamic schedule ends with the cheap ones and the threads finish together.
  parallel_for(q_tiles * heads, threads, [&](int64_t task, int worker) {
    const int64_t tile = a.causal ? q_tiles - 1 - task / heads : task / heads;
    const int64_t bh = task % heads;
    attend_tile(a, d, ops, pv, scratch[worker], bh / d.Hq, bh % d.Hq, tile * kTileM);
  });
}

}  // namespace sageattn
