// Randomized / libFuzzer harness of the C++ operator core (hardening, issue 5 item 5b).
//
// Each input (a byte string) drives one call of quantize_tokens, channel_mean,
// quantize_channels, attention_forward or the DLPack adapter (to_tensor_ref) on small
// TensorRefs with random shapes (empty ones included), dtypes, strides (permuted, padded,
// zero, overlapping, negative) and scales, on a random SIMD path and thread count.
// Every buffer is a heap block of exactly the bytes its shape and strides can reach, so
// AddressSanitizer reports any access the validation should have prevented.
//
// Oracles:
//   - A call built to be valid must succeed, and then:
//       quantize_tokens / quantize_channels: scales bit-equal to max(amax, 1e-12)/QMAX of
//         the harness's own amax per group, codes within half a step of x/scale (int8)
//         or bit-equal to the scalar fp8 encoding (channels);
//       channel_mean: bit-equal to the float64 token-order sum / N;
//       attention_forward: every output written, rows that see no key give 0 and LSE
//         -inf, the others are finite with |out| <= (1 + 2^-4 + Nk 2^-10/448) max|v|.
//   - A call with a hostile mutation (wrong shape/dtype/rank, overlapping output,
//     negative stride, bad grouping, non-finite scale or sm_scale, null data) may
//     succeed or throw sageattn::Error; any other exception, crash or sanitizer report
//     is a finding.
//
// Builds: `fuzz_core` (any C++17 compiler) is a standalone driver: random inputs for
// --seconds / --iterations, or replays the files given on the command line. With clang,
// `fuzz_core_libfuzzer` (-fsanitize=fuzzer) is the same harness under libFuzzer.
// Hostile groupings include int64-overflowing block/groups values (they crashed the core
// before csrc/core/validate.cc check_grouping bounded them); SAGEATTN_FUZZ_HOSTILE_GROUPINGS=0
// leaves them out (e.g. to fuzz an older core).
#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <iterator>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "sageattn/attention.h"
#include "sageattn/error.h"
#include "sageattn/grouping.h"
#include "sageattn/isa.h"
#include "sageattn/numeric.h"
#include "sageattn/quantize.h"
#include "sageattn/tensor.h"

#if defined(SAGEATTN_FUZZ_DLPACK)
#include <dlpack/dlpack.h>

#include "tensor_adapter.h"
#endif

using namespace sageattn;

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

[[noreturn]] void finding(const char* what, const std::string& detail) {
  std::fprintf(stderr, "FUZZ FINDING: %s: %s\n", what, detail.c_str());
  std::fflush(stderr);
  std::abort();
}

bool hostile_groupings() {  // on unless SAGEATTN_FUZZ_HOSTILE_GROUPINGS=0
  static const bool on = [] {
    const char* e = std::getenv("SAGEATTN_FUZZ_HOSTILE_GROUPINGS");
    return e == nullptr || e[0] != '0';
  }();
  return on;
}

// ---------------------------------------------------------------------------------------
// Input bytes -> choices. Past the end every read is 0 (the smallest choice).
// ---------------------------------------------------------------------------------------
struct Bytes {
  const uint8_t* d;
  size_t n, i = 0;
  uint64_t bits(int nbytes) {
    uint64_t v = 0;
    for (int k = 0; k < nbytes; ++k) v = (v << 8) | (i < n ? d[i++] : 0u);
    return v;
  }
  int64_t range(int64_t lo, int64_t hi) {  // inclusive, hi - lo < 2^32
    return lo + static_cast<int64_t>(bits(4) % static_cast<uint64_t>(hi - lo + 1));
  }
  bool chance(int percent) { return static_cast<int>(bits(1) % 100) < percent; }
  float unit() { return static_cast<float>(bits(3)) / 16777216.0f; }  // [0, 1)
};

// ---------------------------------------------------------------------------------------
// Tensors over exact-size heap blocks
// ---------------------------------------------------------------------------------------
enum class Layout { kContiguous, kPermuted, kPadded, kZero, kOverlap, kNegative };

struct Tensor {
  std::unique_ptr<uint8_t[]> mem;
  size_t bytes = 0;
  TensorRef ref;
  int64_t min_off = 0, max_off = 0;  // element offsets reachable from ref.data
};

int64_t esize(DType t) { return dtype_size(t); }

// Strides for `shape`: a random dim order and padding; inputs may also get zero or
// overlapping strides; `negative` flips one stride (memory stays valid).
void make_strides(Bytes& in, const std::vector<int64_t>& shape, Layout layout, int64_t* stride) {
  const int nd = static_cast<int>(shape.size());
  std::vector<int> order(nd);
  for (int i = 0; i < nd; ++i) order[i] = nd - 1 - i;  // innermost first
  if (layout == Layout::kPermuted || layout == Layout::kPadded || layout == Layout::kNegative) {
    for (int i = nd - 1; i > 0; --i) std::swap(order[i], order[in.range(0, i)]);
    if (in.chance(60) && nd > 0) {  // keep the last dim innermost most of the time (codes need it)
      auto it = std::find(order.begin(), order.end(), nd - 1);
      std::rotate(order.begin(), it, it + 1);
    }
  }
  int64_t extent = 1;
  for (int k = 0; k < nd; ++k) {
    const int d = order[k];
    stride[d] = extent;
    int64_t pad = layout == Layout::kPadded ? in.range(0, 3) : 0;
    extent = extent * std::max<int64_t>(shape[d], 1) + pad;
  }
  if (nd > 0 && layout == Layout::kZero) stride[in.range(0, nd - 1)] = 0;
  if (nd > 0 && layout == Layout::kOverlap) {
    const int d = static_cast<int>(in.range(0, nd - 1));
    stride[d] = std::max<int64_t>(0, stride[d] - in.range(1, 64));
  }
  if (nd > 0 && layout == Layout::kNegative) {
    const int d = static_cast<int>(in.range(0, nd - 1));
    stride[d] = -stride[d];
  }
}

Tensor alloc(Bytes& in, DType t, const std::vector<int64_t>& shape, Layout layout) {
  Tensor x;
  x.ref.dtype = t;
  x.ref.ndim = static_cast<int>(shape.size());
  for (int i = 0; i < x.ref.ndim; ++i) x.ref.shape[i] = shape[i];
  make_strides(in, shape, layout, x.ref.stride);
  bool empty = false;
  for (int i = 0; i < x.ref.ndim; ++i) {
    if (shape[i] <= 0) empty = true;
    const int64_t span = (std::max<int64_t>(shape[i], 1) - 1) * x.ref.stride[i];
    (span < 0 ? x.min_off : x.max_off) += span;
  }
  const int64_t elems = empty ? 1 : x.max_off - x.min_off + 1;
  x.bytes = static_cast<size_t>(elems * esize(t));
  x.mem.reset(new uint8_t[x.bytes]);
  std::memset(x.mem.get(), 0xFF, x.bytes);  // NaN in every float format: unwritten outputs show
  x.ref.data = x.mem.get() - x.min_off * esize(t);
  return x;
}

Layout input_layout(Bytes& in) {
  static const Layout k[] = {Layout::kContiguous, Layout::kContiguous, Layout::kPermuted, Layout::kPadded,
                             Layout::kZero, Layout::kOverlap};
  return k[in.range(0, 5)];
}
Layout output_layout(Bytes& in) {
  static const Layout k[] = {Layout::kContiguous, Layout::kPermuted, Layout::kPadded};
  return k[in.range(0, 2)];
}

// Fill the whole block (every reachable element) with values of the dtype.
enum class Fill { kHalf, kScale, kMean, kMask, kCodesI8, kCodesFp8, kBool };

void fill(Bytes& in, Tensor& x, Fill f, bool hostile, float mag = 2.0f) {
  const int64_t n = static_cast<int64_t>(x.bytes) / esize(x.ref.dtype);
  auto special = [&]() -> float {
    static const float v[] = {kNaN, kInf, -kInf, 0.0f, -0.0f, 1e-40f, 3.0e38f, -1.0f};
    return v[in.range(0, 7)];
  };
  for (int64_t e = 0; e < n; ++e) {
    uint8_t* p = x.mem.get() + e * esize(x.ref.dtype);
    const bool odd = hostile && in.chance(3);
    switch (f) {
      case Fill::kHalf: {
        float v = odd ? special() : (in.unit() * 2.0f - 1.0f) * mag;
        uint16_t h = x.ref.dtype == DType::kBF16 ? f32_to_bf16(v) : f32_to_f16(v);
        std::memcpy(p, &h, 2);
        break;
      }
      case Fill::kScale: {
        float v = odd ? special() : 1e-3f + in.unit() * 2.0f;
        std::memcpy(p, &v, 4);
        break;
      }
      case Fill::kMean: {
        float v = odd ? special() : (in.unit() * 2.0f - 1.0f) * mag;
        std::memcpy(p, &v, 4);
        break;
      }
      case Fill::kMask: {
        float v = odd ? special() : (in.chance(25) ? -kInf : (in.unit() * 2.0f - 1.0f) * 3.0f);
        std::memcpy(p, &v, 4);
        break;
      }
      case Fill::kCodesI8: *p = static_cast<uint8_t>(static_cast<int8_t>(in.range(-127, 127))); break;
      case Fill::kCodesFp8: {
        uint8_t c = static_cast<uint8_t>(in.bits(1));
        if (!hostile && (c & 0x7F) == 0x7F) c &= 0xF7;  // no NaN codes in valid inputs
        *p = c;
        break;
      }
      case Fill::kBool: *p = static_cast<uint8_t>(in.bits(1) & 1); break;
    }
  }
}

template <typename T>
T& at(const TensorRef& t, int64_t i0, int64_t i1 = 0, int64_t i2 = 0, int64_t i3 = 0) {
  const int64_t idx[4] = {i0, i1, i2, i3};
  int64_t off = 0;
  for (int d = 0; d < t.ndim; ++d) off += (t.shape[d] == 1 ? 0 : idx[d]) * t.stride[d];
  return static_cast<T*>(t.data)[off];
}

float half_at(const TensorRef& t, int64_t b, int64_t n, int64_t h, int64_t d) {
  const uint16_t v = at<uint16_t>(t, b, n, h, d);
  return t.dtype == DType::kBF16 ? bf16_to_f32(v) : f16_to_f32(v);
}

// ---------------------------------------------------------------------------------------
// Outcome bookkeeping
// ---------------------------------------------------------------------------------------
enum Target { kTokens, kMean, kChannels, kAttention, kAdapter, kTargets };
const char* kTargetNames[] = {"quantize_tokens", "channel_mean", "quantize_channels", "attention_forward",
                              "to_tensor_ref"};
struct Stats {
  uint64_t ok[kTargets] = {}, rejected[kTargets] = {}, checked[kTargets] = {};
};
Stats g_stats;

// Runs `call`; a valid call must succeed, a mutated one may throw sageattn::Error only.
template <typename F>
bool guarded(Target t, bool valid, const std::string& what, F&& call) {
  try {
    call();
  } catch (const Error& e) {
    if (valid) finding("a valid call was rejected", std::string(kTargetNames[t]) + " " + what + ": " + e.what());
    ++g_stats.rejected[t];
    return false;
  } catch (const std::exception& e) {
    finding("unexpected exception type", std::string(kTargetNames[t]) + " " + what + ": " + e.what());
  } catch (...) {
    finding("unexpected non-std exception", std::string(kTargetNames[t]) + " " + what);
  }
  ++g_stats.ok[t];
  return true;
}

DType pick_half(Bytes& in) { return in.chance(50) ? DType::kBF16 : DType::kF16; }

// A hostile replacement dtype for any tensor.
DType wrong_dtype(Bytes& in, DType right) {
  static const DType all[] = {DType::kF16, DType::kBF16, DType::kF32, DType::kI8, DType::kFP8E4M3, DType::kU8,
                              DType::kBool};
  DType d = all[in.range(0, 6)];
  return d == right ? DType::kF32 == right ? DType::kI8 : DType::kF32 : d;
}

TokenGrouping pick_grouping(Bytes& in, int64_t n_tokens, bool* hostile) {
  TokenGrouping g;
  switch (in.range(0, 4)) {
    case 0: g = {-1, 1, 0}; break;
    case 1: g = {128, 1, 128}; break;
    case 2: g = {128, 8, 8}; break;
    case 3: g = {64, 1, 64}; break;
    default:  // valid under the core's rules: whole axis is -1 (or 0), stride in [0, block]
      g.block = in.chance(30) ? -in.range(0, 1) : in.range(1, std::max<int64_t>(n_tokens + 3, 1));
      g.groups = in.range(1, 9);
      g.stride = g.block > 0 ? in.range(0, g.block) : in.range(0, 40);
      break;
  }
  if (*hostile && in.chance(30)) {
    if (hostile_groupings()) {
      static const int64_t big[] = {int64_t{1} << 62, std::numeric_limits<int64_t>::max(), int64_t{1} << 40,
                                    (int64_t{1} << 62) + 1};
      (in.chance(50) ? g.block : g.groups) = big[in.range(0, 3)];
    } else if (in.chance(50)) {
      g.groups = in.range(-3, 0);  // rejected: groups < 1
    } else {
      g.stride = -in.range(1, 3);  // a negative stride: rejected, or read as "block / groups"
    }
  } else {
    *hostile = false;
  }
  return g;
}

// ---------------------------------------------------------------------------------------
// quantize_tokens
// ---------------------------------------------------------------------------------------
void fuzz_quantize_tokens(Bytes& in, int threads, bool mutate) {
  const int64_t B = in.chance(8) ? 0 : in.range(1, 2), N = in.chance(8) ? 0 : in.range(1, 300);
  const int64_t H = in.chance(8) ? 0 : in.range(1, 3);
  const int64_t D = in.chance(5) ? in.range(0, 520) : in.range(1, 80);
  if (B * N * H * D > 60000) return;
  TokenQuantizeArgs a;
  a.per_tensor = in.chance(20);
  a.qdtype = in.chance(50) ? QuantDType::kInt8 : QuantDType::kFP8;
  bool bad_grouping = mutate;  // stays true only when pick_grouping made the grouping hostile
  a.grouping = pick_grouping(in, N, &bad_grouping);
  const bool groups_ok = a.grouping.groups > 0 && (a.grouping.block <= 0 || a.grouping.block % a.grouping.groups == 0 ||
                                                    a.grouping.stride > 0);
  if (!mutate && !a.per_tensor && !groups_ok) a.grouping.stride = 1;
  const int64_t G = a.per_tensor ? 1 : (bad_grouping ? 1 : a.grouping.num_groups(N));
  Tensor x = alloc(in, pick_half(in), {B, N, H, D}, input_layout(in));
  fill(in, x, Fill::kHalf, mutate, in.chance(20) ? 300.0f : 2.0f);
  Tensor codes = alloc(in, a.qdtype == QuantDType::kInt8 ? DType::kI8 : (in.chance(80) ? DType::kFP8E4M3 : DType::kU8),
                       {B, N, H, D}, output_layout(in));
  std::vector<int64_t> sshape = a.per_tensor ? std::vector<int64_t>{1, 1, 1} : std::vector<int64_t>{B, H, G};
  Tensor scale = alloc(in, DType::kF32, sshape, output_layout(in));
  Tensor mean;
  const bool with_mean = in.chance(40);
  if (with_mean) {
    mean = alloc(in, DType::kF32, {B, H, D}, input_layout(in));
    fill(in, mean, Fill::kMean, mutate);
    a.mean = mean.ref;
  }
  a.x = x.ref;
  a.codes = codes.ref;
  a.scale = scale.ref;
  a.num_threads = threads;
  if (mutate && !bad_grouping) {
    switch (in.range(0, 7)) {
      case 0: a.x.dtype = wrong_dtype(in, a.x.dtype); break;
      case 1: a.codes.dtype = wrong_dtype(in, a.codes.dtype); break;
      case 2: a.scale.shape[in.range(0, 2)] += in.chance(50) ? 1 : -1; break;
      case 3: a.codes.stride[in.range(0, 3)] = 0; break;
      case 4: a.x.ndim = static_cast<int>(in.range(0, 3)); break;
      case 5: a.codes.shape[in.range(0, 3)] = -1; break;
      case 6: if (with_mean) a.mean->shape[2] += 1; else a.scale.stride[2] = 0; break;
      default: a.x.data = nullptr; break;
    }
  }
  const bool valid = !mutate;
  if (!guarded(kTokens, valid, "", [&] { quantize_tokens(a); }) || !valid) return;
  // Oracle: per-group amax -> scale bit-equal; codes within half a step (int8) or the fp8 rounding.
  const float qmax = a.qdtype == QuantDType::kInt8 ? 127.0f : 448.0f;
  if (B * H * N * D == 0) return;
  std::vector<float> amax(static_cast<size_t>(a.per_tensor ? 1 : B * H * G), 0.0f);
  auto xv = [&](int64_t b, int64_t n, int64_t h, int64_t d) {
    float v = half_at(x.ref, b, n, h, d);
    return with_mean ? v - at<float>(mean.ref, b, h, d) : v;
  };
  auto gidx = [&](int64_t b, int64_t h, int64_t n) -> size_t {
    return a.per_tensor ? 0 : static_cast<size_t>((b * H + h) * G + a.grouping.group_of(n, N));
  };
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t n = 0; n < N; ++n)
        for (int64_t d = 0; d < D; ++d) {
          float& m = amax[gidx(b, h, n)];
          m = std::max(m, std::fabs(xv(b, n, h, d)));
        }
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t n = 0; n < N; ++n) {
        const float s = std::max(amax[gidx(b, h, n)], 1e-12f) / qmax;
        const int64_t g = a.per_tensor ? 0 : a.grouping.group_of(n, N);
        const float got_s = a.per_tensor ? at<float>(scale.ref, 0, 0, 0) : at<float>(scale.ref, b, h, g);
        if (std::memcmp(&got_s, &s, 4) != 0) {
          finding("quantize_tokens scale", "b=" + std::to_string(b) + " h=" + std::to_string(h) + " g=" +
                                               std::to_string(g) + " got " + std::to_string(got_s) + " want " +
                                               std::to_string(s));
        }
        for (int64_t d = 0; d < D; ++d) {
          const float v = xv(b, n, h, d);
          float deq;
          if (a.qdtype == QuantDType::kInt8) {
            deq = static_cast<float>(at<int8_t>(codes.ref, b, n, h, d)) * s;
            if (!(std::fabs(deq - v) <= 0.5f * s * 1.0001f + 1e-30f)) finding("quantize_tokens int8 code", "");
          } else {
            const uint8_t c = at<uint8_t>(codes.ref, b, n, h, d);
            if (c != f32_to_fp8_e4m3(v / s)) finding("quantize_tokens fp8 code", std::to_string(c));
          }
        }
      }
  ++g_stats.checked[kTokens];
}

// ---------------------------------------------------------------------------------------
// channel_mean and quantize_channels
// ---------------------------------------------------------------------------------------
void fuzz_channel_mean(Bytes& in, int threads, bool mutate) {
  const int64_t B = in.chance(8) ? 0 : in.range(1, 2), N = in.range(0, 700), H = in.chance(8) ? 0 : in.range(1, 3);
  const int64_t D = in.chance(8) ? 0 : in.range(1, 130);
  if (B * N * H * D > 80000) return;
  Tensor x = alloc(in, pick_half(in), {B, N, H, D}, input_layout(in));
  fill(in, x, Fill::kHalf, mutate);
  Tensor mean = alloc(in, DType::kF32, {B, H, D}, output_layout(in));
  TensorRef xr = x.ref, mr = mean.ref;
  if (mutate) {
    switch (in.range(0, 4)) {
      case 0: mr.dtype = wrong_dtype(in, mr.dtype); break;
      case 1: mr.shape[in.range(0, 2)] += 1; break;
      case 2: mr.stride[in.range(0, 2)] = 0; break;
      case 3: xr.dtype = wrong_dtype(in, xr.dtype); break;
      default: xr.ndim = 3; break;
    }
  }
  if (!guarded(kMean, !mutate, "", [&] { channel_mean(xr, mr, threads); }) || mutate) return;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t d = 0; d < D; ++d) {
        double s = 0.0;
        for (int64_t n = 0; n < N; ++n) s += static_cast<double>(half_at(x.ref, b, n, h, d));
        const float want = N > 0 ? static_cast<float>(s / static_cast<double>(N)) : 0.0f;
        const float got = at<float>(mean.ref, b, h, d);
        if (std::memcmp(&got, &want, 4) != 0) finding("channel_mean", std::to_string(got) + " vs " + std::to_string(want));
      }
  ++g_stats.checked[kMean];
}

void fuzz_quantize_channels(Bytes& in, int threads, bool mutate) {
  const int64_t B = in.chance(8) ? 0 : in.range(1, 2), N = in.range(0, 700), H = in.chance(8) ? 0 : in.range(1, 3);
  const int64_t D = in.chance(8) ? 0 : in.range(1, 130);
  if (B * N * H * D > 80000) return;
  ChannelQuantizeArgs a;
  Tensor x = alloc(in, pick_half(in), {B, N, H, D}, input_layout(in));
  fill(in, x, Fill::kHalf, mutate);
  Tensor codes = alloc(in, in.chance(80) ? DType::kFP8E4M3 : DType::kU8, {B, N, H, D}, output_layout(in));
  Tensor scale = alloc(in, DType::kF32, {B, H, D}, output_layout(in));
  a.x = x.ref;
  a.codes = codes.ref;
  a.scale = scale.ref;
  a.num_threads = threads;
  if (mutate) {
    switch (in.range(0, 4)) {
      case 0: a.codes.dtype = DType::kI8; break;
      case 1: a.scale.shape[2] += 1; break;
      case 2: a.codes.stride[in.range(0, 3)] = 0; break;
      case 3: a.scale.dtype = wrong_dtype(in, DType::kF32); break;
      default: a.x.data = nullptr; break;
    }
  }
  if (!guarded(kChannels, !mutate, "", [&] { quantize_channels(a); }) || mutate) return;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t d = 0; d < D; ++d) {
        float m = 0.0f;
        for (int64_t n = 0; n < N; ++n) m = std::max(m, std::fabs(half_at(x.ref, b, n, h, d)));
        const float s = std::max(m, 1e-12f) / 448.0f;
        const float got_s = at<float>(scale.ref, b, h, d);
        if (std::memcmp(&got_s, &s, 4) != 0) finding("quantize_channels scale", std::to_string(got_s));
        for (int64_t n = 0; n < N; ++n) {
          if (at<uint8_t>(codes.ref, b, n, h, d) != f32_to_fp8_e4m3(half_at(x.ref, b, n, h, d) / s)) {
            finding("quantize_channels code", "");
          }
        }
      }
  ++g_stats.checked[kChannels];
}

// ---------------------------------------------------------------------------------------
// attention_forward
// ---------------------------------------------------------------------------------------
float code_value(const TensorRef& t, int64_t b, int64_t n, int64_t h, int64_t d) {
  if (t.dtype == DType::kI8) return static_cast<float>(at<int8_t>(t, b, n, h, d));
  if (t.dtype == DType::kBF16 || t.dtype == DType::kF16) return half_at(t, b, n, h, d);
  return fp8_e4m3_to_f32(at<uint8_t>(t, b, n, h, d));
}

void fuzz_attention(Bytes& in, int threads, bool mutate) {
  const int64_t B = in.chance(5) ? 0 : in.range(1, 2), Hkv = in.range(1, 3), rep = in.range(1, 3), Hq = in.chance(3) ? 0 : Hkv * rep;
  const int64_t Nq = in.chance(5) ? 0 : in.range(1, 150), Nk = in.chance(5) ? 0 : in.range(1, 170);
  static const int64_t dims[] = {1, 2, 3, 7, 8, 16, 31, 32, 33, 64, 100, 128, 256};
  const int64_t D = dims[in.range(0, 12)], Dv = in.chance(70) ? D : dims[in.range(0, 12)];
  if (B * Hq * Nq * Nk * std::max(D, Dv) > 3000000) return;
  AttentionArgs a;
  a.qk_dtype = in.chance(50) ? QuantDType::kInt8 : QuantDType::kFP8;
  const int vm = static_cast<int>(in.range(0, 2));  // 0 per-channel fp8, 1 per-token fp8, 2 16-bit
  a.v_scale_mode = vm == 1 ? VScaleMode::kPerToken : VScaleMode::kPerChannel;
  a.pv_mode = vm == 2 ? PvMode::kHalf : PvMode::kFp8;
  bool bad_grouping = mutate;
  a.q_grouping = pick_grouping(in, Nq, &bad_grouping);
  bool bad_k = mutate && !bad_grouping;
  a.k_grouping = pick_grouping(in, Nk, &bad_k);
  bool bad_v = false;
  a.v_grouping = pick_grouping(in, Nk, &bad_v);
  bad_grouping = bad_grouping || bad_k;
  auto groups = [&](const TokenGrouping& g, int64_t n) { return bad_grouping ? int64_t{1} : g.num_groups(n); };

  const DType qk_t = a.qk_dtype == QuantDType::kInt8 ? DType::kI8 : (in.chance(80) ? DType::kFP8E4M3 : DType::kU8);
  auto code_layout = [&]() {  // codes need a unit stride along D: contiguous, padded rows, zero or overlapping rows
    static const Layout k[] = {Layout::kContiguous, Layout::kPadded, Layout::kZero, Layout::kOverlap};
    return k[in.range(0, 3)];
  };
  Tensor q = alloc(in, qk_t, {B, Nq, Hq, D}, code_layout());
  Tensor k = alloc(in, qk_t, {B, Nk, Hkv, D}, code_layout());
  const DType v_t = vm == 2 ? pick_half(in) : (in.chance(80) ? DType::kFP8E4M3 : DType::kU8);
  Tensor v = alloc(in, v_t, {B, Nk, Hkv, Dv}, code_layout());
  for (Tensor* t : {&q, &k}) fill(in, *t, qk_t == DType::kI8 ? Fill::kCodesI8 : Fill::kCodesFp8, mutate);
  fill(in, v, vm == 2 ? Fill::kHalf : Fill::kCodesFp8, mutate);
  // A D dim whose stride became 0 or non-unit by the layout: reset (inputs need unit D stride)
  for (Tensor* t : {&q, &k, &v}) {
    if (t->ref.shape[3] > 1 && t->ref.stride[3] != 1) {
      const std::vector<int64_t> s(t->ref.shape, t->ref.shape + 4);
      DType dt = t->ref.dtype;
      *t = alloc(in, dt, s, Layout::kContiguous);
      fill(in, *t, dt == DType::kI8 ? Fill::kCodesI8 : (dt == DType::kBF16 || dt == DType::kF16) ? Fill::kHalf
                                                                                                : Fill::kCodesFp8,
           mutate);
    }
  }
  auto bdim = [&](int64_t n) { return in.chance(25) ? int64_t{1} : n; };  // broadcast dims of scales
  Tensor qs = alloc(in, DType::kF32, {bdim(B), bdim(Hq), groups(a.q_grouping, Nq)}, input_layout(in));
  Tensor ks = alloc(in, DType::kF32, {bdim(B), bdim(Hkv), groups(a.k_grouping, Nk)}, input_layout(in));
  for (Tensor* t : {&qs, &ks}) fill(in, *t, Fill::kScale, mutate);
  Tensor vs;
  if (vm != 2) {
    vs = alloc(in, DType::kF32, {bdim(B), bdim(Hkv), vm == 0 ? Dv : a.v_grouping.num_groups(Nk)}, input_layout(in));
    fill(in, vs, Fill::kScale, mutate);
    a.v_scale = vs.ref;
  }
  Tensor km, mask;
  if (in.chance(40)) {
    km = alloc(in, DType::kF32, {bdim(B), bdim(Hkv), D}, input_layout(in));
    fill(in, km, Fill::kMean, mutate);
    a.k_mean = km.ref;
  }
  a.causal = in.chance(30);
  if (in.chance(30)) {
    const DType mt = in.chance(40) ? DType::kF32 : (in.chance(50) ? DType::kBool : DType::kU8);
    mask = alloc(in, mt, {bdim(B), bdim(Hq), bdim(Nq), bdim(Nk)}, input_layout(in));
    fill(in, mask, mt == DType::kF32 ? Fill::kMask : Fill::kBool, mutate);
    a.mask = mask.ref;
  }
  a.sm_scale = in.chance(10) ? -0.3f : (in.chance(5) ? 0.0f : 0.05f + in.unit());
  const int ot = static_cast<int>(in.range(0, 3));
  static const DType out_types[] = {DType::kBF16, DType::kF16, DType::kF32, DType::kFP8E4M3};
  Tensor out = alloc(in, out_types[ot], {B, Nq, Hq, Dv}, output_layout(in));
  Tensor out_scale, lse;
  if (ot == 3) {
    out_scale = alloc(in, DType::kF32, {B, Nq, Hq, 1}, output_layout(in));
    a.out_scale = out_scale.ref;
  }
  if (in.chance(60)) {
    lse = alloc(in, DType::kF32, {B, Hq, Nq}, output_layout(in));
    a.lse = lse.ref;
  }
  a.q = q.ref;
  a.k = k.ref;
  a.v = v.ref;
  a.q_scale = qs.ref;
  a.k_scale = ks.ref;
  a.out = out.ref;
  a.num_threads = threads;
  if (mutate && !bad_grouping) {
    switch (in.range(0, 13)) {
      case 0: a.q.dtype = wrong_dtype(in, a.q.dtype); break;
      case 1: a.v.dtype = wrong_dtype(in, a.v.dtype); break;
      case 2: a.q_scale.shape[2] += 1; break;
      case 3: a.k_scale.dtype = wrong_dtype(in, DType::kF32); break;
      case 4: a.out.stride[in.range(0, 3)] = 0; break;
      case 5: a.out.shape[in.range(0, 3)] += 1; break;
      case 6: a.sm_scale = in.chance(50) ? kNaN : -kInf; break;
      case 7: a.k.stride[in.range(0, 2)] *= -1; break;
      case 8: a.q.stride[3] = 2; break;
      case 9: if (a.lse) a.lse->stride[2] = 0; else a.v_scale.reset(); break;
      case 10: a.k.ndim = static_cast<int>(in.range(0, 3)); break;
      case 11: a.q.shape[3] = in.chance(50) ? 0 : 257; break;
      case 12: if (a.mask) a.mask->shape[3] += 2; else a.out.dtype = DType::kI8; break;
      default: a.v.data = nullptr; break;
    }
  }
  const bool valid = !mutate;
  if (!guarded(kAttention, valid, "", [&] { attention_forward(a); }) || !valid) return;
  if (B * Hq * Nq == 0) return;
  // Oracle: which rows see a key; bound on |out| by max|v̂| (finite, positive scales).
  float vmax = 0.0f;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < Nk; ++j)
      for (int64_t h = 0; h < Hkv; ++h)
        for (int64_t c = 0; c < Dv; ++c) {
          float sc = 1.0f;
          if (vm == 0) sc = at<float>(vs.ref, b, h, c);
          if (vm == 1) sc = at<float>(vs.ref, b, h, a.v_grouping.group_of(j, Nk));
          vmax = std::max(vmax, std::fabs(code_value(v.ref, b, j, h, c) * sc));
        }
  const float bound = (1.0f + 0.0625f + static_cast<float>(Nk) * 0.0009765625f / 448.0f) * vmax * 1.001f + 1e-30f;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < Hq; ++h)
      for (int64_t i = 0; i < Nq; ++i) {
        bool sees = false;
        for (int64_t j = 0; j < Nk && !sees; ++j) {
          if (a.causal && j > i) break;
          if (!a.mask) {
            sees = true;
          } else if (mask.ref.dtype == DType::kF32) {
            sees = at<float>(mask.ref, b, h, i, j) != -kInf;
          } else {
            sees = at<uint8_t>(mask.ref, b, h, i, j) != 0;
          }
        }
        float row_scale = 1.0f;
        if (ot == 3) {
          row_scale = at<float>(out_scale.ref, b, i, h, 0);
          if (!(std::isfinite(row_scale) && row_scale > 0.0f)) finding("attention out_scale", std::to_string(row_scale));
        }
        for (int64_t c = 0; c < Dv; ++c) {
          float o;
          switch (ot) {
            case 0: o = bf16_to_f32(at<uint16_t>(out.ref, b, i, h, c)); break;
            case 1: o = f16_to_f32(at<uint16_t>(out.ref, b, i, h, c)); break;
            case 2: o = at<float>(out.ref, b, i, h, c); break;
            default: o = fp8_e4m3_to_f32(at<uint8_t>(out.ref, b, i, h, c)) * row_scale; break;
          }
          if (!sees && o != 0.0f) finding("attention: a row without keys is not 0", std::to_string(o));
          if (sees && !(std::fabs(o) <= bound * (ot == 3 ? 1.07f : 1.01f))) {
            finding("attention output out of bounds", "o=" + std::to_string(o) + " bound=" + std::to_string(bound));
          }
        }
        if (a.lse) {
          const float l = at<float>(lse.ref, b, h, i);
          if (sees ? !std::isfinite(l) : l != -kInf) finding("attention lse", std::to_string(l));
        }
      }
  ++g_stats.checked[kAttention];
}

// ---------------------------------------------------------------------------------------
// DLPack adapter
// ---------------------------------------------------------------------------------------
void fuzz_adapter(Bytes& in) {
#if defined(SAGEATTN_FUZZ_DLPACK)
  int64_t shape[8], strides[8];
  uint8_t storage[16];
  DLTensor t{};
  t.data = in.chance(10) ? nullptr : storage;
  t.device.device_type = in.chance(90) ? kDLCPU : static_cast<DLDeviceType>(in.range(0, 20));
  t.ndim = static_cast<int32_t>(in.range(-2, 8));
  t.dtype.code = static_cast<uint8_t>(in.range(0, 20));
  t.dtype.bits = static_cast<uint8_t>(in.chance(50) ? 8 * in.range(0, 4) : in.bits(1));
  t.dtype.lanes = static_cast<uint16_t>(in.chance(80) ? 1 : in.range(0, 4));
  for (int i = 0; i < 8; ++i) {
    shape[i] = in.range(-2, 5);
    strides[i] = in.range(-9, 9);
  }
  t.shape = shape;
  t.strides = in.chance(30) ? nullptr : strides;
  t.byte_offset = static_cast<uint64_t>(in.range(0, 8));
  guarded(kAdapter, false, "", [&] { (void)to_tensor_ref(&t, "x"); });
#else
  (void)in;
#endif
}

std::vector<Isa> available_isas() {
  std::vector<Isa> r;
  for (const IsaInfo& e : isa_table())
    if (e.available()) r.push_back(e.isa);
  return r;
}

int run_one(const uint8_t* data, size_t size) {
  static const std::vector<Isa> isas = available_isas();
  Bytes in{data, size};
  const int target = static_cast<int>(in.range(0, 9));
  set_isa_override(isa_name(isas[in.range(0, static_cast<int64_t>(isas.size()) - 1)]));
  const int threads = static_cast<int>(in.range(1, 4));
  const bool mutate = in.chance(30);
  switch (target) {
    case 0: case 1: fuzz_quantize_tokens(in, threads, mutate); break;
    case 2: fuzz_channel_mean(in, threads, mutate); break;
    case 3: fuzz_quantize_channels(in, threads, mutate); break;
    case 9: fuzz_adapter(in); break;
    default: fuzz_attention(in, threads, mutate); break;
  }
  return 0;
}

void print_stats(double seconds, uint64_t iterations) {
  std::fprintf(stderr, "fuzz_core: %" PRIu64 " inputs in %.1f s (%.0f/s)\n", iterations, seconds,
               seconds > 0 ? static_cast<double>(iterations) / seconds : 0.0);
  for (int t = 0; t < kTargets; ++t) {
    std::fprintf(stderr, "  %-18s ok %8" PRIu64 "  (oracle-checked %8" PRIu64 ")  rejected %8" PRIu64 "\n",
                 kTargetNames[t], g_stats.ok[t], g_stats.checked[t], g_stats.rejected[t]);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) { return run_one(data, size); }

#if !defined(SAGEATTN_LIBFUZZER)
// Standalone driver: fuzz_core [--seconds S] [--iterations N] [--seed X] [--max-len L] [FILE...]
int main(int argc, char** argv) {
  double seconds = 10.0;
  uint64_t iterations = 0, seed = 1;
  size_t max_len = 2048;
  std::vector<std::string> files;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--seconds") seconds = std::atof(next());
    else if (a == "--iterations") iterations = std::strtoull(next(), nullptr, 10);
    else if (a == "--seed") seed = std::strtoull(next(), nullptr, 10);
    else if (a == "--max-len") max_len = std::strtoull(next(), nullptr, 10);
    else if (a == "-h" || a == "--help") {
      std::printf("usage: %s [--seconds S] [--iterations N] [--seed X] [--max-len L] [FILE...]\n", argv[0]);
      return 0;
    } else files.push_back(a);
  }
  if (!files.empty()) {  // replay (e.g. a libFuzzer crash file)
    for (const auto& f : files) {
      std::ifstream is(f, std::ios::binary);
      std::vector<uint8_t> buf((std::istreambuf_iterator<char>(is)), std::istreambuf_iterator<char>());
      run_one(buf.data(), buf.size());
    }
    std::fprintf(stderr, "fuzz_core: replayed %zu file(s)\n", files.size());
    return 0;
  }
  uint64_t state = seed * 0x9E3779B97F4A7C15ull + 1;
  auto next64 = [&] {  // splitmix64
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  };
  std::vector<uint8_t> buf;
  const auto t0 = std::chrono::steady_clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
  uint64_t n = 0;
  for (;; ++n) {
    if (iterations ? n >= iterations : elapsed() >= seconds) break;
    buf.resize(static_cast<size_t>(next64() % max_len) + 1);
    for (auto& b : buf) b = static_cast<uint8_t>(next64());
    run_one(buf.data(), buf.size());
  }
  print_stats(elapsed(), n);
  return 0;
}
#endif
