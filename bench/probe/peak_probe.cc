// Instruction-throughput probes for the benchmark: what this CPU's multiply-accumulate
// units can do, measured in the same run as the benchmark so that "% of ceiling" is
// honest. Built only by bench/ (bench/probe/CMakeLists.txt) into libsageattn_probe.so,
// never into the shipped library; Python loads it with ctypes through the plain C
// functions at the end of this file.
//
// Each probe runs one multiply-accumulate instruction (or, for avx2_maddubs_i8, the
// three-instruction AVX2 int8 dot idiom) on kChains independent accumulators, so the
// instruction's latency is hidden and the loop is bound by its throughput. One loop
// (chain_loop) serves every probe: a probe is its step (a small struct: the instruction,
// with the target it needs), a body function that carries that target and inlines the
// loop and the step into itself (flatten), and a row of kProbes. So the file builds with
// default flags and only runs an instruction after the CPU (and OS) has been checked for
// it at run time.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdint>
#include <cstring>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#define SAGEATTN_PROBE_X86 1
#include <immintrin.h>
#else
#define SAGEATTN_PROBE_X86 0
#endif

namespace sageattn_probe {
namespace {

using Clock = std::chrono::steady_clock;

// What one thread did: multiply-add operations (a multiply-add counts as two) and the
// seconds it took to do them.
struct ProbeRun {
  double ops = 0.0;
  double seconds = 0.0;
};

// Signature of one probe body: run until `deadline`, return the number of inner-loop
// iterations executed (each one is kChains instructions or idioms).
using ProbeBody = std::uint64_t (*)(Clock::time_point deadline);

struct ProbeSpec {
  const char* kind;
  double ops_per_iteration;  // operations counted per inner-loop iteration
  bool (*supported)();
  ProbeBody body;
};

// Number of independent accumulators. Twelve hides a latency of up to 6 cycles at two
// instructions per cycle and still leaves AVX2's 16 ymm registers room for the operands.
constexpr int kChains = 12;
// Inner iterations between two reads of the clock (each is kChains instructions, so a
// clock read costs well under 1% of the time).
constexpr int kItersPerClockCheck = 1024;

// A sink the optimiser must honour, so the accumulators are live at the end.
volatile std::int64_t g_int_sink = 0;
volatile float g_float_sink = 0.0f;

// Adds the lanes of a final accumulator to a sink, through memory (off the timed path,
// and free of the -Wuninitialized noise GCC 12's _mm512_reduce_* helpers produce).
template <class Lane, class Vec, class Sum>
inline void sink_lanes(const Vec& v, volatile Sum& sink) {
  Lane lanes[sizeof(Vec) / sizeof(Lane)];
  std::memcpy(lanes, &v, sizeof(Vec));
  Sum total = 0;
  for (Lane x : lanes) total += x;
  sink = sink + total;
}

// The loop every probe runs: kChains accumulators, each stepped by Step::step once per
// iteration, until `deadline`; returns the iterations done. Step's members carry their
// target; the body that instantiates this (flatten) inlines them all, and the unrolled
// chains live in registers (the unroll counts are kChains). Step::pin is an empty asm that claims to modify an
// accumulator, so the compiler can neither fold a chain into a closed form nor hoist
// work across it; it emits nothing.
template <class Step>
inline std::uint64_t chain_loop(Clock::time_point deadline) {
  typename Step::Vec acc[kChains];
#pragma GCC unroll 12
  for (int c = 0; c < kChains; ++c) Step::init(acc[c], c);
  std::uint64_t iters = 0;
  do {
#pragma GCC unroll 4
    for (int r = 0; r < kItersPerClockCheck; ++r) {
#pragma GCC unroll 12
      for (int c = 0; c < kChains; ++c) Step::step(acc[c]);
#pragma GCC unroll 12
      for (int c = 0; c < kChains; ++c) Step::pin(acc[c]);
    }
    iters += kItersPerClockCheck;
  } while (Clock::now() < deadline);
  // Summed by value: a reference into acc would keep the chains in memory.
  typename Step::Vec sum = acc[0];
#pragma GCC unroll 12
  for (int c = 1; c < kChains; ++c) Step::add(sum, acc[c]);
  Step::sink(sum);
  return iters;
}

#if SAGEATTN_PROBE_X86

// ---------------------------------------------------------------------------
// CPU detection. __builtin_cpu_supports also checks that the OS saves the register
// state (XCR0) for AVX and AVX-512.
// ---------------------------------------------------------------------------
bool cpu_has_avx512_vnni() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vnni");
}
bool cpu_has_avx512_bf16() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512bf16");
}
bool cpu_has_avx512f() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f");
}
bool cpu_has_avx_vnni() {
  __builtin_cpu_init();
#if defined(__clang__) && __clang_major__ < 18
  return false;  // older clang cannot ask for "avxvnni"; the probe is then reported unsupported
#else
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("avxvnni");
#endif
}
bool cpu_has_avx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2");
}
bool cpu_has_avx2_fma() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

// ---------------------------------------------------------------------------
// Accumulator kinds: start values, the final sum, the register pin, the sink. zmm pins
// take any of the 32 vector registers ("+v"); ymm pins stay in AVX2's 16 ("+x").
// ---------------------------------------------------------------------------
struct ZmmInt32 {
  using Vec = __m512i;
  [[gnu::target("avx512f")]] static void init(Vec& a, int c) { a = _mm512_set1_epi32(c); }
  [[gnu::target("avx512f")]] static void add(Vec& sum, const Vec& x) { sum = _mm512_add_epi32(sum, x); }
  [[gnu::target("avx512f")]] static void pin(Vec& a) { asm volatile("" : "+v"(a)); }
  static void sink(const Vec& v) { sink_lanes<std::int32_t>(v, g_int_sink); }
};
struct ZmmFloat {
  using Vec = __m512;
  [[gnu::target("avx512f")]] static void init(Vec& a, int c) { a = _mm512_set1_ps(1.0f + 0.125f * c); }
  [[gnu::target("avx512f")]] static void add(Vec& sum, const Vec& x) { sum = _mm512_add_ps(sum, x); }
  [[gnu::target("avx512f")]] static void pin(Vec& a) { asm volatile("" : "+v"(a)); }
  static void sink(const Vec& v) { sink_lanes<float>(v, g_float_sink); }
};
struct YmmInt32 {
  using Vec = __m256i;
  [[gnu::target("avx2")]] static void init(Vec& a, int c) { a = _mm256_set1_epi32(c); }
  [[gnu::target("avx2")]] static void add(Vec& sum, const Vec& x) { sum = _mm256_add_epi32(sum, x); }
  [[gnu::target("avx2")]] static void pin(Vec& a) { asm volatile("" : "+x"(a)); }
  static void sink(const Vec& v) { sink_lanes<std::int32_t>(v, g_int_sink); }
};
struct YmmFloat {
  using Vec = __m256;
  [[gnu::target("avx2")]] static void init(Vec& a, int c) { a = _mm256_set1_ps(1.0f + 0.125f * c); }
  [[gnu::target("avx2")]] static void add(Vec& sum, const Vec& x) { sum = _mm256_add_ps(sum, x); }
  [[gnu::target("avx2")]] static void pin(Vec& a) { asm volatile("" : "+x"(a)); }
  static void sink(const Vec& v) { sink_lanes<float>(v, g_float_sink); }
};

// ---------------------------------------------------------------------------
// The steps: one instruction (or idiom) each, with the target it needs. Operands are
// loop-invariant constants the compiler keeps in registers.
// ---------------------------------------------------------------------------

// VPDPBUSD zmm: 64 u8 x s8 multiply-adds into 16 int32 lanes = 128 ops.
struct Avx512Vpdpbusd : ZmmInt32 {
  [[gnu::target("avx512f,avx512bw,avx512vnni")]] static void step(Vec& acc) {
    acc = _mm512_dpbusd_epi32(acc, _mm512_set1_epi8(3), _mm512_set1_epi8(-5));
  }
};
// VDPBF16PS zmm: 32 bf16-pair multiply-adds into 16 fp32 lanes = 64 ops. bf16 0x3A83
// ~= 1e-3: products of 1e-6 that leave the accumulators finite and normal.
struct Avx512Vdpbf16ps : ZmmFloat {
  [[gnu::target("avx512f,avx512bw,avx512bf16")]] static void step(Vec& acc) {
    const __m512bh x = (__m512bh)_mm512_set1_epi16(0x3A83);
    acc = _mm512_dpbf16_ps(acc, x, x);
  }
};
// VFMADD231PS zmm: 16 fp32 FMAs = 32 ops.
struct Avx512FmaFp32 : ZmmFloat {
  [[gnu::target("avx512f,fma")]] static void step(Vec& acc) {
    acc = _mm512_fmadd_ps(_mm512_set1_ps(1e-3f), _mm512_set1_ps(1e-3f), acc);
  }
};
// VPDPBUSD ymm, VEX (AVX-VNNI) encoding: 32 u8 x s8 multiply-adds = 64 ops.
struct AvxVnniVpdpbusd : YmmInt32 {
  [[gnu::target("avx2,avxvnni")]] static void step(Vec& acc) {
    acc = _mm256_dpbusd_avx_epi32(acc, _mm256_set1_epi8(3), _mm256_set1_epi8(-5));
  }
};
// The usual AVX2 int8 dot idiom (our kernels left it for int16 pairs on VPMADDWD, which
// ran faster on Zen 4; kept for comparison): VPMADDUBSW (32 u8 x s8 products, pairwise summed to int16),
// VPMADDWD against ones (widen pairs to int32), VPADDD into the accumulator. Only the
// 32 u8 x s8 multiply-adds are counted: 64 ops per triple. The accumulator itself feeds
// the u8 operand so that no step is loop-invariant.
struct Avx2MaddubsI8 : YmmInt32 {
  [[gnu::target("avx2")]] static void init(Vec& a, int c) { a = _mm256_set1_epi32(0x01020304 + c); }
  [[gnu::target("avx2")]] static void step(Vec& acc) {
    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(acc, _mm256_set1_epi8(-3)),
                                                   _mm256_set1_epi16(1)));
  }
};
// VPMADDWD + VPADDD ymm, the AVX2 int8 P·V idiom (P and V widened to int16): 16 int16 x
// int16 multiply-adds, pairwise summed into 8 int32 lanes = 32 ops per pair. As in the
// maddubs probe, the accumulator feeds an operand so that no step is loop-invariant.
struct Avx2Vpmaddwd : YmmInt32 {
  [[gnu::target("avx2")]] static void init(Vec& a, int c) { a = _mm256_set1_epi32(0x00010002 + c); }
  [[gnu::target("avx2")]] static void step(Vec& acc) {
    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(acc, _mm256_set1_epi16(-3)));
  }
};
// VFMADD231PS ymm: 8 fp32 FMAs = 16 ops.
struct Avx2FmaFp32 : YmmFloat {
  [[gnu::target("avx2,fma")]] static void step(Vec& acc) {
    acc = _mm256_fmadd_ps(_mm256_set1_ps(1e-3f), _mm256_set1_ps(1e-3f), acc);
  }
};

// One body per probe: the probe's target, with the loop and its step inlined (flatten).
[[gnu::target("avx512f,avx512bw,avx512vnni"), gnu::noinline, gnu::flatten]] std::uint64_t body_avx512_vpdpbusd(Clock::time_point d) {
  return chain_loop<Avx512Vpdpbusd>(d);
}
[[gnu::target("avx512f,avx512bw,avx512bf16"), gnu::noinline, gnu::flatten]] std::uint64_t body_avx512_vdpbf16ps(Clock::time_point d) {
  return chain_loop<Avx512Vdpbf16ps>(d);
}
[[gnu::target("avx512f,fma"), gnu::noinline, gnu::flatten]] std::uint64_t body_avx512_fma_fp32(Clock::time_point d) {
  return chain_loop<Avx512FmaFp32>(d);
}
[[gnu::target("avx2,avxvnni"), gnu::noinline, gnu::flatten]] std::uint64_t body_avx_vnni_vpdpbusd(Clock::time_point d) {
  return chain_loop<AvxVnniVpdpbusd>(d);
}
[[gnu::target("avx2"), gnu::noinline, gnu::flatten]] std::uint64_t body_avx2_maddubs_i8(Clock::time_point d) {
  return chain_loop<Avx2MaddubsI8>(d);
}
[[gnu::target("avx2"), gnu::noinline, gnu::flatten]] std::uint64_t body_avx2_vpmaddwd(Clock::time_point d) {
  return chain_loop<Avx2Vpmaddwd>(d);
}
[[gnu::target("avx2,fma"), gnu::noinline, gnu::flatten]] std::uint64_t body_avx2_fma_fp32(Clock::time_point d) {
  return chain_loop<Avx2FmaFp32>(d);
}

// The probes: kind, operations per iteration of kChains steps, CPU check, body.
const ProbeSpec kProbes[] = {
    {"avx512_vpdpbusd", 128.0 * kChains, cpu_has_avx512_vnni, body_avx512_vpdpbusd},
    {"avx512_vdpbf16ps", 64.0 * kChains, cpu_has_avx512_bf16, body_avx512_vdpbf16ps},
    {"avx512_fma_fp32", 32.0 * kChains, cpu_has_avx512f, body_avx512_fma_fp32},
    {"avx_vnni_vpdpbusd", 64.0 * kChains, cpu_has_avx_vnni, body_avx_vnni_vpdpbusd},
    {"avx2_maddubs_i8", 64.0 * kChains, cpu_has_avx2, body_avx2_maddubs_i8},
    {"avx2_vpmaddwd", 32.0 * kChains, cpu_has_avx2, body_avx2_vpmaddwd},
    {"avx2_fma_fp32", 16.0 * kChains, cpu_has_avx2_fma, body_avx2_fma_fp32},
};

#else  // not x86: the kinds exist, none is supported.

bool never_supported() { return false; }

const ProbeSpec kProbes[] = {
    {"avx512_vpdpbusd", 128.0 * kChains, never_supported, nullptr},
    {"avx512_vdpbf16ps", 64.0 * kChains, never_supported, nullptr},
    {"avx512_fma_fp32", 32.0 * kChains, never_supported, nullptr},
    {"avx_vnni_vpdpbusd", 64.0 * kChains, never_supported, nullptr},
    {"avx2_maddubs_i8", 64.0 * kChains, never_supported, nullptr},
    {"avx2_vpmaddwd", 32.0 * kChains, never_supported, nullptr},
    {"avx2_fma_fp32", 16.0 * kChains, never_supported, nullptr},
};

#endif  // SAGEATTN_PROBE_X86

const ProbeSpec* find_probe(const std::string& kind) {
  for (const ProbeSpec& spec : kProbes) {
    if (kind == spec.kind) return &spec;
  }
  return nullptr;
}

std::string known_kinds_list() {
  std::string out;
  for (const ProbeSpec& spec : kProbes) {
    if (!out.empty()) out += ", ";
    out += spec.kind;
  }
  return out;
}

// One thread's share: a short unmeasured warm-up (lets the core settle into the
// frequency it keeps for this instruction mix), then the measured run.
ProbeRun run_one_thread(const ProbeSpec& spec, double seconds, const std::atomic<bool>& go) {
  while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
  const double warmup_s = std::min(0.05, 0.1 * seconds);
  spec.body(Clock::now() + std::chrono::duration_cast<Clock::duration>(
                               std::chrono::duration<double>(warmup_s)));
  const Clock::time_point start = Clock::now();
  const std::uint64_t iters = spec.body(
      start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds)));
  const Clock::time_point stop = Clock::now();
  ProbeRun run;
  run.ops = static_cast<double>(iters) * spec.ops_per_iteration;
  run.seconds = std::chrono::duration<double>(stop - start).count();
  return run;
}

bool peak_probe_supported(const std::string& kind) {
  const ProbeSpec* spec = find_probe(kind);
  return spec != nullptr && spec->body != nullptr && spec->supported();
}

double measure_peak_gops(const std::string& kind, int num_threads, double seconds) {
  const ProbeSpec* spec = find_probe(kind);
  if (spec == nullptr) {
    throw std::invalid_argument("measure_peak_gops: unknown kind '" + kind +
                                       "' (known: " + known_kinds_list() + ")");
  }
  if (spec->body == nullptr || !spec->supported()) {
    throw std::invalid_argument(
                "measure_peak_gops: kind '" + kind + "' is not supported by this CPU");
  }
  constexpr int kMaxThreads = 4096;
  if (num_threads < 1 || num_threads > kMaxThreads) {
    throw std::invalid_argument("measure_peak_gops: num_threads must be in [1, " +
                                       std::to_string(kMaxThreads) + "], got " +
                                       std::to_string(num_threads));
  }
  constexpr double kMaxSeconds = 3600.0;
  if (!std::isfinite(seconds) || seconds <= 0.0 || seconds > kMaxSeconds) {
    throw std::invalid_argument(
                "measure_peak_gops: seconds must be in (0, 3600], got " + std::to_string(seconds));
  }

  std::vector<ProbeRun> runs(static_cast<std::size_t>(num_threads));
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  threads.reserve(runs.size());
  std::exception_ptr failure;
  std::mutex failure_mutex;
  try {
    for (std::size_t t = 0; t < runs.size(); ++t) {
      threads.emplace_back([&, t] {
        try {
          runs[t] = run_one_thread(*spec, seconds, go);
        } catch (...) {
          std::lock_guard<std::mutex> lock(failure_mutex);
          if (!failure) failure = std::current_exception();
        }
      });
    }
  } catch (const std::system_error& e) {
    go.store(true, std::memory_order_release);
    for (std::thread& th : threads) th.join();
    throw std::runtime_error(
                std::string("measure_peak_gops: could not start threads: ") + e.what());
  }
  go.store(true, std::memory_order_release);
  for (std::thread& th : threads) th.join();
  if (failure) std::rethrow_exception(failure);

  double total_ops = 0.0;
  double slowest_s = 0.0;
  for (const ProbeRun& run : runs) {
    total_ops += run.ops;
    slowest_s = std::max(slowest_s, run.seconds);
  }
  if (slowest_s <= 0.0) {
    throw std::runtime_error("measure_peak_gops: timer reported no elapsed time");
  }
  return total_ops / slowest_s * 1e-9;
}

}  // namespace
}  // namespace sageattn_probe

// ---------------------------------------------------------------------------
// The C ABI that bench/native.py loads with ctypes. No C++ exception crosses it.
// ---------------------------------------------------------------------------
#define SAGEATTN_PROBE_API extern "C" __attribute__((visibility("default")))

// Number of probes this build knows, whether or not the CPU supports them.
SAGEATTN_PROBE_API int sageattn_probe_count() {
  return static_cast<int>(sizeof(sageattn_probe::kProbes) / sizeof(sageattn_probe::kProbes[0]));
}

// Name of probe `index`, or null when out of range. The string is static.
SAGEATTN_PROBE_API const char* sageattn_probe_kind(int index) {
  if (index < 0 || index >= sageattn_probe_count()) return nullptr;
  return sageattn_probe::kProbes[index].kind;
}

// 1 when the running CPU (and OS) can execute probe `kind`, else 0.
SAGEATTN_PROBE_API int sageattn_probe_supported(const char* kind) {
  return kind != nullptr && sageattn_probe::peak_probe_supported(kind) ? 1 : 0;
}

// Sustained throughput of `kind` in giga-operations per second (a multiply-add counts as
// two), summed over `num_threads` threads that each run for about `seconds`. Returns 0
// and writes *gops, or non-zero with a NUL-terminated reason in error[0..error_len).
SAGEATTN_PROBE_API int sageattn_probe_measure(const char* kind, int num_threads, double seconds,
                                              double* gops, char* error, int error_len) {
  auto fail = [&](const char* what) {
    if (error != nullptr && error_len > 0) std::snprintf(error, static_cast<std::size_t>(error_len), "%s", what);
    return 1;
  };
  if (kind == nullptr || gops == nullptr) return fail("sageattn_probe_measure: kind and gops must not be null");
  try {
    *gops = sageattn_probe::measure_peak_gops(kind, num_threads, seconds);
    return 0;
  } catch (const std::exception& e) {
    return fail(e.what());
  } catch (...) {
    return fail("sageattn_probe_measure: unknown error");
  }
}
