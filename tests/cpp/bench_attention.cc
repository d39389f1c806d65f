// End-to-end timing of attention_forward on pre-quantized codes (no Python, no
// quantizers): B=1, H=8, N x N, D=Dv, default per-thread recipe, per-channel V.
//   bench_attention [isa] [N] [D] [threads] [int8|fp8] [causal] [reps] [fp8|int8 P·V]
// Prints wall time and process CPU time (a busy machine inflates the first) as
// effective ops/s = 4·B·H·N²·D / time (halved for causal).
#include <time.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "sageattn/attention.h"
#include "sageattn/isa.h"

using namespace sageattn;

namespace {

double now(clockid_t id) {
  timespec ts;
  clock_gettime(id, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

TensorRef make(void* data, DType t, std::initializer_list<int64_t> shape) {
  TensorRef r;
  r.data = data;
  r.dtype = t;
  r.ndim = static_cast<int>(shape.size());
  int i = 0;
  for (int64_t s : shape) r.shape[i++] = s;
  int64_t st = 1;
  for (int k = r.ndim - 1; k >= 0; --k) {
    r.stride[k] = st;
    st *= r.shape[k];
  }
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string isa = argc > 1 ? argv[1] : "auto";
  const int64_t N = argc > 2 ? std::atoll(argv[2]) : 2048;
  const int64_t D = argc > 3 ? std::atoll(argv[3]) : 128;
  const int threads = argc > 4 ? std::atoi(argv[4]) : 1;
  // Q·Kᵀ codes (argument 5) and P·V mode (argument 8): "int8" or "fp8"; anything else is an
  // error, not a silent default.
  auto int8_or_fp8 = [&](int i, const char* name, bool default_fp8) {
    if (argc <= i) return default_fp8;
    if (std::strcmp(argv[i], "fp8") == 0) return true;
    if (std::strcmp(argv[i], "int8") == 0) return false;
    std::fprintf(stderr, "bench_attention: %s must be int8 or fp8, got '%s'\n", name, argv[i]);
    std::exit(2);
  };
  const bool fp8 = int8_or_fp8(5, "the Q·Kᵀ codes (argument 5)", false);
  const bool causal = argc > 6 && std::atoi(argv[6]) != 0;
  const int reps = argc > 7 ? std::atoi(argv[7]) : 5;
  const bool int8_pv = !int8_or_fp8(8, "the P·V mode (argument 8)", true);
  const int64_t B = 1, H = 8;
  set_isa_override(isa);
  std::printf("isa=%s N=%lld D=%lld threads=%d qk=%s pv=%s causal=%d\n", isa_name(active_isa()), static_cast<long long>(N),
              static_cast<long long>(D), threads, fp8 ? "fp8" : "int8", int8_pv ? "int8" : "fp8", causal ? 1 : 0);

  std::mt19937 rng(7);
  std::vector<uint8_t> q(B * N * H * D), k(B * N * H * D), v(B * N * H * D);
  for (auto& x : q) x = fp8 ? static_cast<uint8_t>(rng() % 0x7E) | ((rng() & 1) << 7) : static_cast<uint8_t>(rng() % 255 + 129);
  for (auto& x : k) x = fp8 ? static_cast<uint8_t>(rng() % 0x7E) | ((rng() & 1) << 7) : static_cast<uint8_t>(rng() % 255 + 129);
  for (auto& x : v) x = int8_pv ? static_cast<uint8_t>(rng() % 255 + 129) : static_cast<uint8_t>(rng() % 0x7E) | ((rng() & 1) << 7);
  const int64_t gq = (N + 127) / 128, gk = ((N + 127) / 128) * 8;
  std::vector<float> qs(B * H * gq, 0.02f), ks(B * H * gk, 0.03f), vs(B * H * D, 0.01f);
  std::vector<uint16_t> out(B * N * H * D);
  std::vector<float> lse(B * H * N);

  AttentionArgs a;
  const DType ct = fp8 ? DType::kFP8E4M3 : DType::kI8;
  a.q = make(q.data(), ct, {B, N, H, D});
  a.k = make(k.data(), ct, {B, N, H, D});
  a.v = make(v.data(), int8_pv ? DType::kI8 : DType::kFP8E4M3, {B, N, H, D});
  a.pv_mode = int8_pv ? PvMode::kInt8 : PvMode::kFp8;
  a.q_scale = make(qs.data(), DType::kF32, {B, H, gq});
  a.k_scale = make(ks.data(), DType::kF32, {B, H, gk});
  a.v_scale = make(vs.data(), DType::kF32, {B, H, D});
  a.q_grouping = TokenGrouping{128, 1, 128};
  a.k_grouping = TokenGrouping{128, 8, 8};
  a.v_grouping = TokenGrouping{-1, 1, 0};
  a.v_scale_mode = VScaleMode::kPerChannel;
  a.qk_dtype = fp8 ? QuantDType::kFP8 : QuantDType::kInt8;
  a.sm_scale = 0.088f;
  a.causal = causal;
  a.out = make(out.data(), DType::kBF16, {B, N, H, D});
  a.lse = make(lse.data(), DType::kF32, {B, H, N});
  a.num_threads = threads;

  const double ops = 4.0 * B * H * N * N * D / (causal ? 2.0 : 1.0);
  double best_wall = 1e30, best_cpu = 1e30;
  attention_forward(a);
  for (int r = 0; r < reps; ++r) {
    const double w0 = now(CLOCK_MONOTONIC), c0 = now(CLOCK_PROCESS_CPUTIME_ID);
    attention_forward(a);
    const double w = now(CLOCK_MONOTONIC) - w0, c = now(CLOCK_PROCESS_CPUTIME_ID) - c0;
    best_wall = w < best_wall ? w : best_wall;
    best_cpu = c < best_cpu ? c : best_cpu;
  }
  std::printf("  wall %.1f ms (%.1f GOPS)   cpu %.1f ms (%.1f GOPS per core-second x %d = %.1f GOPS)\n",
              best_wall * 1e3, ops / best_wall * 1e-9, best_cpu * 1e3, ops / best_cpu * 1e-9, threads,
              ops / best_cpu * 1e-9 * threads);
  return 0;
}
