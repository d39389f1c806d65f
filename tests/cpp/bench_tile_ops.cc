// Micro-benchmark of the tile operations of every ISA available on this CPU: the cost
// of each TileOps function on one tile, by default of the core's shape (128 queries x
// 128 keys), in thread CPU time (robust to a busy machine) and as multiply-accumulates
// per second for qk / pv.
//   bench_tile_ops [d] [dv] [iters] [queries] [keys]
#include <time.h>

#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "sageattn/isa.h"
#include "sageattn/tile_ops.h"

using namespace sageattn;

namespace {

double cpu_now() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

template <class Fn>
double time_it(int iters, Fn&& fn) {
  fn();
  double best = 1e30;
  for (int rep = 0; rep < 200; ++rep) {
    const double t0 = cpu_now();
    for (int i = 0; i < iters; ++i) fn();
    const double t = (cpu_now() - t0) / iters;
    best = t < best ? t : best;
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  const int d = argc > 1 ? std::atoi(argv[1]) : 128;
  const int dv = argc > 2 ? std::atoi(argv[2]) : d;
  const int iters = argc > 3 ? std::atoi(argv[3]) : 200;
  const int M = argc > 4 ? std::atoi(argv[4]) : 128;  // attention.cc's kTileM
  const int N = argc > 5 ? std::atoi(argv[5]) : 128;  // and kTileN
  std::printf("tile: %d queries x %d keys\n", M, N);
  std::mt19937 rng(1);
  std::vector<int8_t> qi(M * d), ki(N * d);
  std::vector<uint8_t> q8(M * d), k8(N * d), v8(N * dv);
  for (auto& x : qi) x = static_cast<int8_t>(static_cast<int>(rng() % 255) - 127);
  for (auto& x : ki) x = static_cast<int8_t>(static_cast<int>(rng() % 255) - 127);
  for (auto* a : {&q8, &k8, &v8})
    for (auto& x : *a) { x = static_cast<uint8_t>(rng() % 0x7E); x |= (rng() & 1) ? 0x80 : 0; }
  std::vector<int8_t> vi(N * dv);  // int8 V codes (the int8 P·V mode)
  for (auto& x : vi) x = static_cast<int8_t>(static_cast<int>(rng() % 255) - 127);
  // V buffers as attention.cc sizes them (the int8 mode pads dv to 16).
  std::vector<float> qbuf(M * d + 64), kbuf(N * d + 64), vbuf(N * ((dv + 15) / 16 * 16) + 64), s(M * N), p(M * N),
      o(M * dv, 0.f);
  std::vector<float> rs(M, 0.01f), cs(N, 0.02f), vs(dv, 0.5f), m(M), l(M), alpha(M), p_scale(M);
  for (const IsaInfo& e : isa_table()) {
    const Isa isa = e.isa;
    if (!e.available()) {
      std::printf("%s: not available on this CPU, skipped\n", e.name);
      continue;
    }
    const TileOps& ops = e.tile_ops();
    const PvOps& fp8 = ops.pv_ops(PvMode::kFp8);
    const PvOps& int8 = ops.pv_ops(PvMode::kInt8);
    const int it = isa == Isa::kScalar ? iters / 10 + 1 : iters;
    for (QuantDType t : {QuantDType::kInt8, QuantDType::kFP8}) {
      const void* qsrc = t == QuantDType::kInt8 ? static_cast<const void*>(qi.data()) : q8.data();
      const void* ksrc = t == QuantDType::kInt8 ? static_cast<const void*>(ki.data()) : k8.data();
      const double tpq = time_it(it, [&] { ops.pack_q(qsrc, d, M, d, t, qbuf.data()); });
      const double tpk = time_it(it, [&] { ops.pack_k(ksrc, d, N, d, t, kbuf.data()); });
      const double tqk = time_it(it, [&] { ops.qk(qbuf.data(), kbuf.data(), M, N, d, t, rs.data(), cs.data(), s.data(), N); });
      std::printf("%-6s %-4s d=%d: pack_q %6.2f us  pack_k %6.2f us  qk %7.2f us (%5.1f GMAC/s)\n", isa_name(isa),
                  t == QuantDType::kInt8 ? "int8" : "fp8", d, tpq * 1e6, tpk * 1e6, tqk * 1e6,
                  double(M) * N * d / tqk * 1e-9);
    }
    for (int i = 0; i < M * N; ++i) s[i] = static_cast<float>(rng() % 1000) * 0.01f - 5.f;
    std::vector<float> s0 = s;
    const double tsm = time_it(it, [&] {
      s = s0;
      for (int i = 0; i < M; ++i) { m[i] = -1.f; l[i] = 1.f; }
      fp8.softmax(s.data(), N, M, N, m.data(), l.data(), alpha.data(), p.data(), N, nullptr);
    });
    const double tcopy = time_it(it, [&] { s = s0; for (int i = 0; i < M; ++i) { m[i] = -1.f; l[i] = 1.f; } });
    const double tpv_pack = time_it(it, [&] { fp8.pack_v(v8.data(), dv, DType::kFP8E4M3, N, dv, vs.data(), nullptr, vbuf.data()); });
    const double tpv = time_it(it, [&] { fp8.pv(p.data(), N, nullptr, vbuf.data(), M, N, dv, alpha.data(), 1.0f, o.data(), dv); });
    // pack_v / pack_k streaming a (4096 keys, 8 heads) tensor, as attention does.
    const int64_t big_rows = 4096, big_stride = 8 * static_cast<int64_t>(dv);
    std::vector<uint8_t> vbig(big_rows * big_stride);
    for (auto& x : vbig) x = static_cast<uint8_t>(rng() % 0x7E);
    int64_t tile = 0;
    const double tpv_stream = time_it(it, [&] {
      fp8.pack_v(vbig.data() + (tile % (big_rows / N)) * N * big_stride, big_stride, DType::kFP8E4M3, N, dv, vs.data(),
                 nullptr, vbuf.data());
      ++tile;
    });
    const double tpk_stream = time_it(it, [&] {
      ops.pack_k(vbig.data() + (tile % (big_rows / N)) * N * big_stride, big_stride, N, dv, QuantDType::kInt8, kbuf.data());
      ++tile;
    });
    std::printf("%-6s streaming from a strided 4096-key tensor: pack_v %6.2f us  pack_k(int8) %6.2f us\n", isa_name(isa),
                tpv_stream * 1e6, tpk_stream * 1e6);
    std::printf("%-6s fp8  P·V dv=%d: softmax %6.2f us  pack_v %6.2f us  pv %7.2f us (%5.1f GMAC/s)\n", isa_name(isa),
                dv, (tsm - tcopy) * 1e6, tpv_pack * 1e6, tpv * 1e6, double(M) * N * dv / tpv * 1e-9);
    // The int8 P·V mode on the same scores: u8 P with a per-row tile scale, int8 V.
    const double tsm8 = time_it(it, [&] {
      s = s0;
      for (int i = 0; i < M; ++i) { m[i] = -1.f; l[i] = 1.f; }
      int8.softmax(s.data(), N, M, N, m.data(), l.data(), alpha.data(), p.data(), N, p_scale.data());
    });
    const double tpack8 = time_it(it, [&] { int8.pack_v(vi.data(), dv, DType::kI8, N, dv, nullptr, nullptr, vbuf.data()); });
    const double tpv8 = time_it(it, [&] {
      int8.pv(p.data(), N, p_scale.data(), vbuf.data(), M, N, dv, alpha.data(), 1.0f, o.data(), dv);
    });
    std::printf("%-6s int8 P·V dv=%d: softmax %6.2f us  pack_v %6.2f us  pv %7.2f us (%5.1f GMAC/s)\n", isa_name(isa),
                dv, (tsm8 - tcopy) * 1e6, tpack8 * 1e6, tpv8 * 1e6, double(M) * N * dv / tpv8 * 1e-9);
  }
  return 0;
}
