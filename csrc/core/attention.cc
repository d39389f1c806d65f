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
#include "sageattn/thread_pool.h"
#include "sageattn/tile_ops.h"
#include "sageattn/validate.h"

namespace sageattn {
namespace {

constexpr int kTileM = 128;  // query rows per task (K/V tiles are packed once per 128 rows)
constexpr int kTileN = 64;  // keys per tile
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

struct Dims {
  int64_t B, Nq, Nk, Hq, Hkv, D, Dv;
};

// Per-thread working memory, sized once per call: nothing is allocated in the loop.
struct Scratch {
  std::vector<float> qbuf, kbuf, vbuf, s, o, m, l, alpha, row_scale, col_scale, v_scale;
  explicit Scratch(const Dims& d) {
    const int64_t dmax = std::max<int64_t>(d.D, 1);
    qbuf.resize(kTileM * dmax + 64);
    kbuf.resize(kTileN * dmax + 64);
    vbuf.resize(kTileN * std::max<int64_t>(d.Dv, 1) + 64);
    s.resize(kTileM * kTileN);
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
  const bool half_pv = a.pv_mode == PvMode::kHalf;
  if (half_pv) check_dtype(a.v, {DType::kF16, DType::kBF16}, "v");
  else check_dtype(a.v, {DType::kFP8E4M3, DType::kU8}, "v");
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
    if (!a.v_scale) fail_value("v_scale: required for fp8 V");
    if (a.v_mode == VScaleMode::kPerChannel) check_scale(*a.v_scale, d.B, d.Hkv, d.Dv, "v_scale");
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

// Adds one mask row to a score row (log2 units): bool keeps or hides, float adds.
void apply_mask_row(const TensorRef& mk, int64_t b, int64_t h, int64_t i, int64_t j0, int nk, float* row) {
  const int64_t base = bcast_offset(mk, 0, b) + bcast_offset(mk, 1, h) + bcast_offset(mk, 2, i);
  const int64_t js = mk.shape[3] == 1 ? 0 : mk.stride[3];
  if (mk.dtype == DType::kF32) {
    const float* m = mk.ptr<const float>() + base + j0 * js;
    for (int j = 0; j < nk; ++j) row[j] += m[j * js] * kLog2e;
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

// 16-bit P·V (PvMode::kHalf): the TileOps softmax step with P rounded to fp16 instead of
// fp8(448·p). A rarely used mode, so the portable version serves every ISA.
void softmax_p16(float* s, int lds, int mq, int nk, float* m, float* l, float* alpha) {
  online_softmax_rows(s, lds, mq, nk, m, l, alpha, [](float p) { return f16_to_f32(f32_to_f16(p)); });
}

void pack_v_half(const uint16_t* src, int64_t row_stride, int rows, int dv, bool bf16, float* dst) {
  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < dv; ++c) {
      const uint16_t h = src[r * row_stride + c];
      dst[static_cast<int64_t>(r) * dv + c] = bf16 ? bf16_to_f32(h) : f16_to_f32(h);
    }
  }
}

// One task: query rows [i0, i0 + mq) of head (b, hq), over all visible key tiles.
void attend_tile(const AttentionArgs& a, const Dims& d, const TileOps& ops, Scratch& sc,
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
  const bool half_pv = a.pv_mode == PvMode::kHalf;
  const bool v_per_channel = a.v_mode == VScaleMode::kPerChannel;
  if (!half_pv && v_per_channel) {
    for (int c = 0; c < Dv; ++c) sc.v_scale[c] = scale3(*a.v_scale, b, hkv, c);
  }
  const float p_unit = half_pv ? 1.0f : kFp8Max;  // P is stored as 448·p in fp8 mode

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
    if (half_pv) {
      softmax_p16(sc.s.data(), kTileN, mq, nk, sc.m.data(), sc.l.data(), sc.alpha.data());
      pack_v_half(reinterpret_cast<const uint16_t*>(vbase + j0 * a.v.stride[1] * v_elem), a.v.stride[1], nk, Dv,
                  a.v.dtype == DType::kBF16, sc.vbuf.data());
    } else {
      ops.softmax(sc.s.data(), kTileN, mq, nk, sc.m.data(), sc.l.data(), sc.alpha.data());
      if (!v_per_channel) {
        for (int j = 0; j < nk; ++j) sc.col_scale[j] = scale3(*a.v_scale, b, hkv, a.v_grouping.group_of(j0 + j, d.Nk));
      }
      ops.pack_v(vbase + j0 * a.v.stride[1], a.v.stride[1], nk, Dv,
                 v_per_channel ? sc.v_scale.data() : nullptr,
                 v_per_channel ? nullptr : sc.col_scale.data(), sc.vbuf.data());
    }
    ops.pv(sc.s.data(), kTileN, sc.vbuf.data(), mq, nk, Dv, sc.alpha.data(), sc.o.data(), Dv);
  }

  for (int i = 0; i < mq; ++i) {
    float* orow = sc.o.data() + static_cast<int64_t>(i) * Dv;
    const bool empty = sc.m[i] == kNegInf;
    const float inv = empty ? 0.0f : 1.0f / (p_unit * sc.l[i]);
    for (int c = 0; c < Dv; ++c) orow[c] = empty ? 0.0f : orow[c] * inv;
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

}  // namespace

void attention_forward(const AttentionArgs& a) {
  const Dims d = validate(a);
  if (d.B == 0 || d.Nq == 0 || d.Hq == 0) return;
  const TileOps& ops = tile_ops_for(active_isa());
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
    attend_tile(a, d, ops, scratch[worker], bh / d.Hq, bh % d.Hq, tile * kTileM);
  });
}

}  // namespace sageattn
