// Quantizers (docs/CONTRACT.md §2): scale = max(amax, 1e-12) / QMAX, code = RNE(x / scale)
// saturated to ±QMAX. Non-finite inputs poison their group's scale (NaN or inf), so the
// affected scores become NaN instead of silently finite; codes themselves stay defined.
//
// This file owns the loops: validation, (b, h, token chunk) tasks, scale groups and
// every stride other than "unit stride along D". The per-row work runs in the QuantOps
// kernels of the active ISA (quant_ops.h), which agree bit for bit.
//
// The amax of a group is a NaN-propagating fold (quant_common.h: amax_step) whose result
// is the largest |x|, or |last NaN| in token-major order. That fold decomposes exactly:
// folding the amaxes of consecutive pieces (rows, chunks, (b, h) slices) in order gives
// the amax of the whole, so rows and chunks can be reduced separately and combined.
#include "sageattn/quantize.h"

#include <algorithm>
#include <limits>
#include <vector>

#include "sageattn/error.h"
#include "sageattn/isa.h"
#include "sageattn/numeric.h"
#include "sageattn/quant_common.h"
#include "sageattn/quant_ops.h"
#include "sageattn/thread_pool.h"
#include "sageattn/validate.h"

namespace sageattn {

namespace {

using quant_detail::amax_step;
using quant_detail::scale_from_amax;

constexpr int64_t kTileRows = 128;   // rows per kernel call (bounds the staging buffers)
constexpr int64_t kChunkRows = 512;  // tokens per task in the chunked passes

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Per-worker buffers, allocated once per call and reused by every task of that worker.
struct Scratch {
  std::vector<uint16_t> x;      // rows gathered when the input's D stride is not 1
  std::vector<uint8_t> codes;   // codes staged when the output's D stride is not 1
  std::vector<float> mean;      // the (b, h) mean row, contiguous
  std::vector<float> rowv;      // per-row amax / scale of one tile
  std::vector<float> group;     // group amax and scales of one block
  std::vector<double> sum;      // column sums
  Scratch() : rowv(kTileRows) {}
};

// Rows [n0, n0 + rows) of slice (b, h) as unit-stride rows: in place when D is
// contiguous, else gathered into `buf`.
struct Rows {
  const uint16_t* ptr;
  int64_t row_stride;
};

Rows input_rows(const TensorRef& x, int64_t b, int64_t h, int64_t n0, int64_t rows,
                std::vector<uint16_t>& buf) {
  const int64_t D = x.shape[3];
  const uint16_t* base =
      x.ptr<const uint16_t>() + b * x.stride[0] + n0 * x.stride[1] + h * x.stride[2];
  if (x.stride[3] == 1 || D == 1) return {base, x.stride[1]};
  if (static_cast<int64_t>(buf.size()) < rows * D) buf.resize(rows * D);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < D; ++i) buf[r * D + i] = base[r * x.stride[1] + i * x.stride[3]];
  }
  return {buf.data(), D};
}

// Where the kernels write the codes of rows [n0, n0 + rows): in place when D is
// contiguous, else staged in `buf` and scattered by finish().
struct CodeRows {
  uint8_t* base;
  uint8_t* ptr;
  int64_t row_stride;
  bool staged;

  void finish(const TensorRef& c, int64_t rows) const {
    if (!staged) return;
    const int64_t D = c.shape[3];
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t i = 0; i < D; ++i) base[r * c.stride[1] + i * c.stride[3]] = ptr[r * D + i];
    }
  }
};

CodeRows output_rows(const TensorRef& c, int64_t b, int64_t h, int64_t n0, int64_t rows,
                     std::vector<uint8_t>& buf) {
  const int64_t D = c.shape[3];
  uint8_t* base = c.ptr<uint8_t>() + b * c.stride[0] + n0 * c.stride[1] + h * c.stride[2];
  if (c.stride[3] == 1 || D == 1) return {base, base, c.stride[1], false};
  if (static_cast<int64_t>(buf.size()) < rows * D) buf.resize(rows * D);
  return {base, buf.data(), D, true};
}

float* scale_at(const TensorRef& s, int64_t b, int64_t h, int64_t g) {
  return s.ptr<float>() + b * s.stride[0] + h * s.stride[1] + g * s.stride[2];
}

void check_half_input(const TensorRef& x, const char* name) {
  check_ndim(x, 4, name);
  check_dtype(x, {DType::kBF16, DType::kF16}, name);
  check_non_negative_strides(x, name);
}

void check_codes(const TensorRef& codes, const TensorRef& x, QuantDType t, const char* name) {
  check_ndim(codes, 4, name);
  if (t == QuantDType::kInt8) {
    check_dtype(codes, {DType::kI8}, name);
  } else {
    check_dtype(codes, {DType::kFP8E4M3, DType::kU8}, name);
  }
  check_shape(codes, {x.shape[0], x.shape[1], x.shape[2], x.shape[3]}, name);
  check_no_self_overlap(codes, name);
}

void check_mean(const TensorRef& mean, const TensorRef& x, const char* name) {
  check_ndim(mean, 3, name);
  check_dtype(mean, {DType::kF32}, name);
  check_shape(mean, {x.shape[0], x.shape[2], x.shape[3]}, name);
  check_non_negative_strides(mean, name);
}

// The token quantizer's row passes over one (b, h) slice.
struct TokenPass {
  const TokenQuantizeArgs& a;
  const QuantOps& ops;
  int64_t N, D;
  bool bf16;

  int64_t group_of(int64_t n) const { return a.per_tensor ? 0 : a.grouping.group_of(n, N); }

  const float* mean_row(int64_t b, int64_t h, Scratch& s) const {
    if (!a.mean) return nullptr;
    const TensorRef& m = *a.mean;
    const float* src = m.ptr<const float>() + b * m.stride[0] + h * m.stride[1];
    s.mean.resize(D);
    for (int64_t i = 0; i < D; ++i) s.mean[i] = src[i * m.stride[2]];
    return s.mean.data();
  }

  // gam[group_of(n) - g_base] folds the amax of every row n in [n0, n0 + count).
  void amax(int64_t b, int64_t h, int64_t n0, int64_t count, const float* mean, Scratch& s,
            float* gam, int64_t g_base) const {
    for (int64_t t0 = n0; t0 < n0 + count; t0 += kTileRows) {
      const int64_t rows = std::min(kTileRows, n0 + count - t0);
      const Rows src = input_rows(a.x, b, h, t0, rows, s.x);
      ops.row_amax(src.ptr, src.row_stride, rows, D, bf16, mean, s.rowv.data());
      for (int64_t r = 0; r < rows; ++r) {
        float& g = gam[group_of(t0 + r) - g_base];
        g = amax_step(g, s.rowv[r]);
      }
    }
  }

  // Codes of rows [n0, n0 + count); row n uses scales[group_of(n) - g_base].
  void encode(int64_t b, int64_t h, int64_t n0, int64_t count, const float* mean, Scratch& s,
              const float* scales, int64_t g_base) const {
    for (int64_t t0 = n0; t0 < n0 + count; t0 += kTileRows) {
      const int64_t rows = std::min(kTileRows, n0 + count - t0);
      const Rows src = input_rows(a.x, b, h, t0, rows, s.x);
      for (int64_t r = 0; r < rows; ++r) s.rowv[r] = scales[group_of(t0 + r) - g_base];
      const CodeRows dst = output_rows(a.codes, b, h, t0, rows, s.codes);
      ops.encode_rows(src.ptr, src.row_stride, rows, D, bf16, mean, s.rowv.data(), a.qdtype,
                      dst.ptr, dst.row_stride);
      dst.finish(a.codes, rows);
    }
  }
};

// Per-chunk amax partials (laid out [bh][chunk][g]) folded over chunks in token order
// into one scale per (bh, g); written to `scale` (B, H, G) and returned in `scales`.
void fold_chunk_scales(const std::vector<float>& partial, int64_t BH, int64_t H, int64_t chunks, int64_t G,
                       float qmax, const TensorRef& scale, std::vector<float>& scales) {
  for (int64_t bh = 0; bh < BH; ++bh) {
    for (int64_t g = 0; g < G; ++g) {
      float m = 0.0f;
      for (int64_t c = 0; c < chunks; ++c) m = amax_step(m, partial[(bh * chunks + c) * G + g]);
      scales[bh * G + g] = scale_from_amax(m, qmax);
      *scale_at(scale, bh / H, bh % H, g) = scales[bh * G + g];
    }
  }
}

}  // namespace

void channel_mean(const TensorRef& x, const TensorRef& mean_out, int num_threads) {
  check_half_input(x, "k");
  check_mean(mean_out, x, "k_mean");
  check_no_self_overlap(mean_out, "k_mean");
  const int64_t B = x.shape[0], N = x.shape[1], H = x.shape[2], D = x.shape[3];
  if (B * H * D == 0) return;
  const QuantOps& ops = quant_ops_for(active_isa());
  const bool bf16 = x.dtype == DType::kBF16;
  const int threads = std::max(1, num_threads);
  // Every column is summed in token order whatever the split, so the result does not
  // depend on the ISA or the thread count. With few slices, split columns too.
  int64_t width = D;
  if ((x.stride[3] == 1 || D == 1) && B * H < 2 * threads && D > 32) {
    const int64_t parts = std::min(ceil_div(D, 32), ceil_div(2 * threads, B * H));
    width = ceil_div(ceil_div(D, parts), 8) * 8;
  }
  const int64_t strips = ceil_div(D, width);
  std::vector<Scratch> scratch(threads);
  parallel_for(B * H * strips, threads, [&](int64_t task, int worker) {
    Scratch& s = scratch[worker];
    const int64_t bh = task / strips, d0 = (task % strips) * width;
    const int64_t b = bh / H, h = bh % H, w = std::min(width, D - d0);
    s.sum.assign(w, 0.0);
    for (int64_t t0 = 0; t0 < N; t0 += kTileRows) {
      const int64_t rows = std::min(kTileRows, N - t0);
      const Rows src = input_rows(x, b, h, t0, rows, s.x);
      ops.col_sum(src.ptr + d0, src.row_stride, rows, w, bf16, s.sum.data());
    }
    float* out = mean_out.ptr<float>() + b * mean_out.stride[0] + h * mean_out.stride[1];
    for (int64_t i = 0; i < w; ++i) {
      const double m = N > 0 ? s.sum[i] / static_cast<double>(N) : 0.0;
      // Which NaN an addition of two NaNs returns depends on the operand order the
      // compiler picked (it treats + as commutative), so a NaN mean is canonicalized.
      out[(d0 + i) * mean_out.stride[2]] =
          m == m ? static_cast<float>(m) : std::numeric_limits<float>::quiet_NaN();
    }
  });
}

void quantize_tokens(const TokenQuantizeArgs& a) {
  check_half_input(a.x, "x");
  check_grouping(a.grouping, "grouping");
  check_codes(a.codes, a.x, a.qdtype, "codes");
  const int64_t B = a.x.shape[0], N = a.x.shape[1], H = a.x.shape[2], D = a.x.shape[3];
  check_ndim(a.scale, 3, "scale");
  check_dtype(a.scale, {DType::kF32}, "scale");
  const int64_t G = a.per_tensor ? 1 : a.grouping.num_groups(N);
  if (a.per_tensor) {
    check_shape(a.scale, {1, 1, 1}, "scale");
  } else {
    if (a.grouping.groups < 1 || (a.grouping.block > 0 && a.grouping.block % a.grouping.groups != 0 &&
                                  a.grouping.stride <= 0)) {
      fail_value("grouping: groups must be >= 1 and divide the block");
    }
    check_shape(a.scale, {B, H, G}, "scale");
  }
  check_no_self_overlap(a.scale, "scale");
  if (a.mean) check_mean(*a.mean, a.x, "mean");
  const float qmax = quant_max(a.qdtype);
  if (B * N * H * D == 0) {
    if (a.per_tensor) *a.scale.ptr<float>() = scale_from_amax(0.0f, qmax);
    else if (N == 0 || D == 0) {
      for (int64_t b = 0; b < B; ++b)
        for (int64_t h = 0; h < H; ++h)
          for (int64_t g = 0; g < G; ++g) *scale_at(a.scale, b, h, g) = scale_from_amax(0.0f, qmax);
    }
    return;
  }

  const int threads = std::max(1, a.num_threads);
  const TokenPass pass{a, quant_ops_for(active_isa()), N, D, a.x.dtype == DType::kBF16};
  std::vector<Scratch> scratch(threads);

  if (!a.per_tensor && !a.grouping.whole_axis()) {
    // Block-local groups: each block of `block` tokens owns groups [blk*groups, +groups).
    // One task per few blocks; per block: row amaxes, scales, then codes while the
    // block's rows are still in cache.
    const int64_t block = a.grouping.block, groups = a.grouping.groups;
    const int64_t nblocks = ceil_div(N, block);
    const int64_t per_task = std::max<int64_t>(1, kChunkRows / block);
    const int64_t tasks = ceil_div(nblocks, per_task);
    parallel_for(B * H * tasks, threads, [&](int64_t task, int worker) {
      Scratch& s = scratch[worker];
      const int64_t bh = task / tasks, c = task % tasks, b = bh / H, h = bh % H;
      const float* mean = pass.mean_row(b, h, s);
      s.group.resize(2 * groups);
      float* gam = s.group.data();
      float* gscale = gam + groups;
      const int64_t blk_end = std::min(nblocks, (c + 1) * per_task);
      for (int64_t blk = c * per_task; blk < blk_end; ++blk) {
        const int64_t n0 = blk * block, count = std::min(block, N - n0), g_base = blk * groups;
        std::fill(gam, gam + groups, 0.0f);
        pass.amax(b, h, n0, count, mean, s, gam, g_base);
        for (int64_t g = 0; g < groups; ++g) {
          gscale[g] = scale_from_amax(gam[g], qmax);
          *scale_at(a.scale, b, h, g_base + g) = gscale[g];
        }
        pass.encode(b, h, n0, count, mean, s, gscale, g_base);
      }
    });
    return;
  }

  // Whole-axis groups (or one scale per tensor): amax over token chunks in parallel,
  // fold the chunks in order, then a second parallel pass for the codes.
  const int64_t gp = a.per_tensor ? 1 : G;  // groups a chunk may touch
  const int64_t chunks = ceil_div(N, kChunkRows);
  std::vector<float> partial(static_cast<size_t>(B * H * chunks * gp), 0.0f);
  parallel_for(B * H * chunks, threads, [&](int64_t task, int worker) {
    Scratch& s = scratch[worker];
    const int64_t bh = task / chunks, c = task % chunks, b = bh / H, h = bh % H;
    const int64_t n0 = c * kChunkRows;
    pass.amax(b, h, n0, std::min(kChunkRows, N - n0), pass.mean_row(b, h, s), s,
              partial.data() + task * gp, 0);
  });
  std::vector<float> scales(static_cast<size_t>(a.per_tensor ? 1 : B * H * G));
  if (a.per_tensor) {
    float m = 0.0f;
    for (float v : partial) m = amax_step(m, v);  // (b, h, chunk) order = token-major
    scales[0] = scale_from_amax(m, qmax);
    *a.scale.ptr<float>() = scales[0];
  } else {
    fold_chunk_scales(partial, B * H, H, chunks, G, qmax, a.scale, scales);
  }
  parallel_for(B * H * chunks, threads, [&](int64_t task, int worker) {
    Scratch& s = scratch[worker];
    const int64_t bh = task / chunks, c = task % chunks, b = bh / H, h = bh % H;
    const int64_t n0 = c * kChunkRows;
    pass.encode(b, h, n0, std::min(kChunkRows, N - n0), pass.mean_row(b, h, s), s,
                scales.data() + (a.per_tensor ? 0 : bh * G), 0);
  });
}

void quantize_channels(const ChannelQuantizeArgs& a) {
  check_half_input(a.x, "v");
  check_codes(a.codes, a.x, a.qdtype, "v_codes");
  const int64_t B = a.x.shape[0], N = a.x.shape[1], H = a.x.shape[2], D = a.x.shape[3];
  check_ndim(a.scale, 3, "v_scale");
  check_dtype(a.scale, {DType::kF32}, "v_scale");
  check_shape(a.scale, {B, H, D}, "v_scale");
  check_no_self_overlap(a.scale, "v_scale");
  if (B * H * D == 0) return;
  const QuantOps& ops = quant_ops_for(active_isa());
  const bool bf16 = a.x.dtype == DType::kBF16;
  const int threads = std::max(1, a.num_threads);
  std::vector<Scratch> scratch(threads);

  // Column amax per token chunk, folded over chunks in order; then codes.
  const int64_t chunks = ceil_div(N, kChunkRows);
  std::vector<float> partial(static_cast<size_t>(B * H * chunks * D), 0.0f);
  parallel_for(B * H * chunks, threads, [&](int64_t task, int worker) {
    Scratch& s = scratch[worker];
    const int64_t bh = task / chunks, c = task % chunks, b = bh / H, h = bh % H;
    const int64_t n_end = std::min(N, (c + 1) * kChunkRows);
    for (int64_t t0 = c * kChunkRows; t0 < n_end; t0 += kTileRows) {
      const int64_t rows = std::min(kTileRows, n_end - t0);
      const Rows src = input_rows(a.x, b, h, t0, rows, s.x);
      ops.col_amax(src.ptr, src.row_stride, rows, D, bf16, partial.data() + task * D);
    }
  });
  std::vector<float> scales(static_cast<size_t>(B * H * D));
  fold_chunk_scales(partial, B * H, H, chunks, D, quant_max(a.qdtype), a.scale, scales);
  parallel_for(B * H * chunks, threads, [&](int64_t task, int worker) {
    Scratch& s = scratch[worker];
    const int64_t bh = task / chunks, c = task % chunks, b = bh / H, h = bh % H;
    const int64_t n_end = std::min(N, (c + 1) * kChunkRows);
    for (int64_t t0 = c * kChunkRows; t0 < n_end; t0 += kTileRows) {
      const int64_t rows = std::min(kTileRows, n_end - t0);
      const Rows src = input_rows(a.x, b, h, t0, rows, s.x);
      const CodeRows dst = output_rows(a.codes, b, h, t0, rows, s.codes);
      ops.encode_cols(src.ptr, src.row_stride, rows, D, bf16, scales.data() + bh * D, a.qdtype,
                      dst.ptr, dst.row_stride);
      dst.finish(a.codes, rows);
    }
  });
}

}  // namespace sageattn
