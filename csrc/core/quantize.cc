// Quantizers (SEMANTICS.md §2): scale = max(amax, 1e-12) / QMAX, code = RNE(x / scale)
// saturated to ±QMAX. Non-finite inputs poison their group's scale (NaN or inf), so the
// affected scores become NaN instead of silently finite; codes themselves stay defined.
#include "sageattn/quantize.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "sageattn/error.h"
#include "sageattn/numeric.h"
#include "sageattn/thread_pool.h"
#include "sageattn/validate.h"

namespace sageattn {
namespace {

// Row (b, n, h, :) of a (B, N, H, D) half-precision tensor, as float.
void load_row(const TensorRef& x, int64_t b, int64_t n, int64_t h, float* dst) {
  const int64_t d = x.shape[3];
  const int64_t base = b * x.stride[0] + n * x.stride[1] + h * x.stride[2];
  const uint16_t* src = x.ptr<const uint16_t>() + base;
  const int64_t s = x.stride[3];
  if (x.dtype == DType::kBF16) {
    for (int64_t i = 0; i < d; ++i) dst[i] = bf16_to_f32(src[i * s]);
  } else {
    for (int64_t i = 0; i < d; ++i) dst[i] = f16_to_f32(src[i * s]);
  }
}

// NaN-propagating max: a NaN anywhere in a group makes its amax (and scale) NaN.
inline float amax_step(float acc, float v) {
  const float a = std::fabs(v);
  return (a > acc || a != a) ? a : acc;
}

inline float scale_from_amax(float amax, float qmax) {
  const float clamped = (amax < 1e-12f) ? 1e-12f : amax;  // keeps NaN
  return clamped / qmax;
}

inline int8_t to_int8_code(float y) {
  if (!(y == y)) return 0;
  const float r = round_half_even(y);
  return static_cast<int8_t>(std::min(127.0f, std::max(-127.0f, r)));
}

void store_code(const TensorRef& codes, int64_t off, QuantDType t, float y) {
  if (t == QuantDType::kInt8) {
    codes.ptr<int8_t>()[off] = to_int8_code(y);
  } else {
    codes.ptr<uint8_t>()[off] = f32_to_fp8_e4m3(y);
  }
}

int64_t offset4(const TensorRef& t, int64_t b, int64_t n, int64_t h, int64_t d) {
  return b * t.stride[0] + n * t.stride[1] + h * t.stride[2] + d * t.stride[3];
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

}  // namespace

void channel_mean(const TensorRef& x, const TensorRef& mean_out, int num_threads) {
  check_half_input(x, "k");
  check_mean(mean_out, x, "k_mean");
  check_no_self_overlap(mean_out, "k_mean");
  const int64_t B = x.shape[0], N = x.shape[1], H = x.shape[2], D = x.shape[3];
  parallel_for(B * H, num_threads, [&](int64_t task, int) {
    const int64_t b = task / H, h = task % H;
    std::vector<double> sum(D, 0.0);
    std::vector<float> row(D);
    for (int64_t n = 0; n < N; ++n) {
      load_row(x, b, n, h, row.data());
      for (int64_t d = 0; d < D; ++d) sum[d] += row[d];
    }
    float* out = mean_out.ptr<float>() + b * mean_out.stride[0] + h * mean_out.stride[1];
    for (int64_t d = 0; d < D; ++d) {
      out[d * mean_out.stride[2]] = N > 0 ? static_cast<float>(sum[d] / static_cast<double>(N)) : 0.0f;
    }
  });
}

void quantize_tokens(const TokenQuantizeArgs& a) {
  check_half_input(a.x, "x");
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

  auto mean_row = [&](int64_t b, int64_t h) -> const float* {
    return a.mean ? a.mean->ptr<const float>() + b * a.mean->stride[0] + h * a.mean->stride[1]
                  : nullptr;
  };
  const int64_t mean_stride = a.mean ? a.mean->stride[2] : 0;

  // Pass 1: amax per (b, h, group). Per-tensor folds every (b, h) into one value.
  std::vector<float> amax(static_cast<size_t>(B * H * G), 0.0f);
  parallel_for(B * H, a.num_threads, [&](int64_t task, int) {
    const int64_t b = task / H, h = task % H;
    const float* mean = mean_row(b, h);
    std::vector<float> row(D);
    float* am = amax.data() + task * G;
    for (int64_t n = 0; n < N; ++n) {
      load_row(a.x, b, n, h, row.data());
      const int64_t g = a.per_tensor ? 0 : a.grouping.group_of(n, N);
      float m = am[g];
      for (int64_t d = 0; d < D; ++d) {
        const float v = mean ? row[d] - mean[d * mean_stride] : row[d];
        m = amax_step(m, v);
      }
      am[g] = m;
    }
  });
  if (a.per_tensor) {
    float m = 0.0f;
    for (float v : amax) m = amax_step(m, v);
    *a.scale.ptr<float>() = scale_from_amax(m, qmax);
  } else {
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t g = 0; g < G; ++g)
          *scale_at(a.scale, b, h, g) = scale_from_amax(amax[(b * H + h) * G + g], qmax);
  }

  // Pass 2: codes.
  parallel_for(B * H, a.num_threads, [&](int64_t task, int) {
    const int64_t b = task / H, h = task % H;
    const float* mean = mean_row(b, h);
    std::vector<float> row(D);
    for (int64_t n = 0; n < N; ++n) {
      load_row(a.x, b, n, h, row.data());
      const float scale = a.per_tensor ? *a.scale.ptr<float>()
                                       : *scale_at(a.scale, b, h, a.grouping.group_of(n, N));
      for (int64_t d = 0; d < D; ++d) {
        const float v = mean ? row[d] - mean[d * mean_stride] : row[d];
        store_code(a.codes, offset4(a.codes, b, n, h, d), a.qdtype, v / scale);
      }
    }
  });
}

void quantize_channels(const ChannelQuantizeArgs& a) {
  check_half_input(a.x, "v");
  check_codes(a.codes, a.x, QuantDType::kFP8, "v_codes");
  const int64_t B = a.x.shape[0], N = a.x.shape[1], H = a.x.shape[2], D = a.x.shape[3];
  check_ndim(a.scale, 3, "v_scale");
  check_dtype(a.scale, {DType::kF32}, "v_scale");
  check_shape(a.scale, {B, H, D}, "v_scale");
  check_no_self_overlap(a.scale, "v_scale");
  parallel_for(B * H, a.num_threads, [&](int64_t task, int) {
    const int64_t b = task / H, h = task % H;
    std::vector<float> row(D), am(D, 0.0f), scale(D);
    for (int64_t n = 0; n < N; ++n) {
      load_row(a.x, b, n, h, row.data());
      for (int64_t d = 0; d < D; ++d) am[d] = amax_step(am[d], row[d]);
    }
    for (int64_t d = 0; d < D; ++d) {
      scale[d] = scale_from_amax(am[d], kFp8Max);
      *scale_at(a.scale, b, h, d) = scale[d];
    }
    for (int64_t n = 0; n < N; ++n) {
      load_row(a.x, b, n, h, row.data());
      for (int64_t d = 0; d < D; ++d) {
        a.codes.ptr<uint8_t>()[offset4(a.codes, b, n, h, d)] = f32_to_fp8_e4m3(row[d] / scale[d]);
      }
    }
  });
}

}  // namespace sageattn
