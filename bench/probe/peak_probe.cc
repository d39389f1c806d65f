// Instruction-throughput probes for the benchmark: what this CPU's multiply-accumulate
// units can do, measured in the same run as the benchmark so that "% of ceiling" is
// honest. Built only by bench/ (bench/probe/CMakeLists.txt) into libsageattn_probe.so,
// never into the shipped library; Python loads it with ctypes through the plain C
// functions at the end of this file.
//
// Each probe runs one multiply-accumulate instruction (or, for avx2_maddubs_i8, the
// three-instruction AVX2 int8 dot idiom) on kChains independent accumulators, so the
// instruction's latency is hidden and the loop is bound by its throughput. Every probe
// lives in this one translation unit behind __attribute__((target(...))), so the file
// builds with default flags and only runs an instruction after the CPU (and OS) has been
// checked for it at run time.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdint>
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

#define SAGEATTN_REP12(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)

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

// Empty asm that claims to modify the accumulators: the compiler can neither fold the
// chain of the inner loop into a closed form nor hoist work across it. It emits nothing.
#define SAGEATTN_PIN(i) asm volatile("" : "+v"(acc##i));
#define SAGEATTN_PIN_X(i) asm volatile("" : "+x"(acc##i));

// ---------------------------------------------------------------------------
// AVX-512
// ---------------------------------------------------------------------------

// Horizontal sums for the sinks (through memory: off the timed path, and free of the
// -Wuninitialized noise GCC 12's _mm512_reduce_* helpers produce).
__attribute__((target("avx512f"))) inline std::int64_t hsum_epi32_512(__m512i v) {
  alignas(64) std::int32_t lanes[16];
  _mm512_store_si512(lanes, v);
  std::int64_t s = 0;
  for (std::int32_t x : lanes) s += x;
  return s;
}
__attribute__((target("avx512f"))) inline float hsum_ps_512(__m512 v) {
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, v);
  float s = 0.0f;
  for (float x : lanes) s += x;
  return s;
}

// VPDPBUSD zmm: 64 u8 x s8 multiply-adds into 16 int32 lanes = 128 ops.
__attribute__((target("avx512f,avx512bw,avx512vnni"), noinline)) std::uint64_t
body_avx512_vpdpbusd(Clock::time_point deadline) {
#define SAGEATTN_INIT(i) __m512i acc##i = _mm512_set1_epi32(i);
  SAGEATTN_REP12(SAGEATTN_INIT)
#undef SAGEATTN_INIT
  const __m512i a = _mm512_set1_epi8(3);
  const __m512i b = _mm512_set1_epi8(-5);
  std::uint64_t iters = 0;
  do {
#pragma GCC unroll 4
    for (int r = 0; r < kItersPerClockCheck; ++r) {
#define SAGEATTN_STEP(i) acc##i = _mm512_dpbusd_epi32(acc##i, a, b);
      SAGEATTN_REP12(SAGEATTN_STEP)
#undef SAGEATTN_STEP
      SAGEATTN_REP12(SAGEATTN_PIN)
    }
    iters += kItersPerClockCheck;
  } while (Clock::now() < deadline);
  __m512i sum = acc0;
#define SAGEATTN_SUM(i) sum = _mm512_add_epi32(sum, acc##i);
  SAGEATTN_REP12(SAGEATTN_SUM)
#undef SAGEATTN_SUM
  g_int_sink = g_int_sink + hsum_epi32_512(sum);
  return iters;
}

// VDPBF16PS zmm: 32 bf16-pair multiply-adds into 16 fp32 lanes = 64 ops.
__attribute__((target("avx512f,avx512bw,avx512bf16"), noinline)) std::uint64_t
body_avx512_vdpbf16ps(Clock::time_point deadline) {
#define SAGEATTN_INIT(i) __m512 acc##i = _mm512_set1_ps(1.0f + 0.125f * (i));
  SAGEATTN_REP12(SAGEATTN_INIT)
#undef SAGEATTN_INIT
  // bf16 0x3A83 ~= 1e-3: products of 1e-6 that leave the accumulators finite and normal.
  const __m512bh a = (__m512bh)_mm512_set1_epi16(0x3A83);
  const __m512bh b = (__m512bh)_mm512_set1_epi16(0x3A83);
  std::uint64_t iters = 0;
  do {
#pragma GCC unroll 4
    for (int r = 0; r < kItersPerClockCheck; ++r) {
#define SAGEATTN_STEP(i) acc##i = _mm512_dpbf16_ps(acc##i, a, b);
      SAGEATTN_REP12(SAGEATTN_STEP)
#undef SAGEATTN_STEP
      SAGEATTN_REP12(SAGEATTN_PIN)
    }
    iters += kItersPerClockCheck;
  } while (Clock::now() < deadline);
  __m512 sum = acc0;
#define SAGEATTN_SUM(i) sum = _mm512_add_ps(sum, acc##i);
  SAGEATTN_REP12(SAGEATTN_SUM)
#undef SAGEATTN_SUM
  g_float_sink = g_float_sink + hsum_ps_512(sum);
  return iters;
}

// VFMADD231PS zmm: 16 fp32 FMAs = 32 ops.
__attribute__((target("avx512f,fma"), noinline)) std::uint64_t body_avx512_fma_fp32(
    Clock::time_point deadline) {
#define SAGEATTN_INIT(i) __m512 acc##i = _mm512_set1_ps(1.0f + 0.125f * (i));
  SAGEATTN_REP12(SAGEATTN_INIT)
#undef SAGEATTN_INIT
  const __m512 a = _mm512_set1_ps(1e-3f);
  const __m512 b = _mm512_set1_ps(1e-3f);
  std::uint64_t iters = 0;
  do {
#pragma GCC unroll 4
    for (int r = 0; r < kItersPerClockCheck; ++r) {
#define SAGEATTN_STEP(i) acc##i = _mm512_fmadd_ps(a, b, acc##i);
      SAGEATTN_REP12(SAGEATTN_STEP)
#undef SAGEATTN_STEP
      SAGEATTN_REP12(SAGEATTN_PIN)
    }
    iters += kItersPerClockCheck;
  } while (Clock::now() < deadline);
  __m512 sum = acc0;
#define SAGEATTN_SUM(i) sum = _mm512_add_ps(sum, acc##i);
  SAGEATTN_REP12(SAGEATTN_SUM)
#undef SAGEATTN_SUM
  g_float_sink = g_float_sink + hsum_ps_512(sum);
  return iters;
}

// ---------------------------------------------------------------------------
// AVX2 / AVX-VNNI (ymm; 16 architectural registers, so "+x" pins)
// ---------------------------------------------------------------------------

// Horizontal sums for the sinks.
__attribute__((target("avx2"))) inline std::int64_t hsum_epi32_256(__m256i v) {
  alignas(32) std::int32_t lanes[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), v);
  std::int64_t s = 0;
  for (std::int32_t x : lanes) s += x;
  return s;
}
__attribute__((target("avx2"))) inline float hsum_ps_256(__m256 v) {
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, v);
  float s = 0.0f;
  for (float x : lanes) s += x;
  return s;
}

// VPDPBUSD ymm, VEX (AVX-VNNI) encoding: 32 u8 x s8 multiply-adds = 64 ops.
__attribute__((target("avx2,avxvnni"), noinline)) std::uint64_t body_avx_vnni_vpdpbusd(
    Clock::time_point deadline) {
#define SAGEATTN_INIT(i) __m256i acc##i = _mm256_set1_epi32(i);
  SAGEATTN_REP12(SAGEATTN_INIT)
#undef SAGEATTN_INIT
  const __m256i a = _mm256_set1_epi8(3);
  const __m256i b = _mm256_set1_epi8(-5);
  std::uint64_t iters = 0;
  do {
#pragma GCC unroll 4
    for (int r = 0; r < kItersPerClockCheck; ++r) {
#define SAGEATTN_STEP(i) acc##i = _mm256_dpbusd_avx_epi32(acc##i, a, b);
      SAGEATTN_REP12(SAGEATTN_STEP)
#undef SAGEATTN_STEP
      SAGEATTN_REP12(SAGEATTN_PIN_X)
    }
    iters += kItersPerClockCheck;
  } while (Clock::now() < deadline);
  __m256i sum = acc0;
#define SAGEATTN_SUM(i) sum = _mm256_add_epi32(sum, acc##i);
  SAGEATTN_REP12(SAGEATTN_SUM)
#undef SAGEATTN_SUM
  g_int_sink = g_int_sink + hsum_epi32_256(sum);
  return iters;
}

// The AVX2 int8 dot idiom: VPMADDUBSW (32 u8 x s8 products, pairwise summed to int16),
// VPMADDWD against ones (widen pairs to int32), VPADDD into the accumulator. Only the
// 32 u8 x s8 multiply-adds are counted: 64 ops per triple. The accumulator itself feeds
// the u8 operand so that no step is loop-invariant.
__attribute__((target("avx2"), noinline)) std::uint64_t body_avx2_maddubs_i8(
    Clock::time_point deadline) {
#define SAGEATTN_INIT(i) __m256i acc##i = _mm256_set1_epi32(0x01020304 + (i));
  SAGEATTN_REP12(SAGEATTN_INIT)
#undef SAGEATTN_INIT
  const __m256i b = _mm256_set1_epi8(-3);
  const __m256i ones = _mm256_set1_epi16(1);
  std::uint64_t iters = 0;
  do {
#pragma GCC unroll 2
    for (int r = 0; r < kItersPerClockCheck; ++r) {
#define SAGEATTN_STEP(i)                                                   \
  acc##i = _mm256_add_epi32(                                               \
      acc##i, _mm256_madd_epi16(_mm256_maddubs_epi16(acc##i, b), ones));
      SAGEATTN_REP12(SAGEATTN_STEP)
#undef SAGEATTN_STEP
      SAGEATTN_REP12(SAGEATTN_PIN_X)
    }
    iters += kItersPerClockCheck;
  } while (Clock::now() < deadline);
  __m256i sum = acc0;
#define SAGEATTN_SUM(i) sum = _mm256_add_epi32(sum, acc##i);
  SAGEATTN_REP12(SAGEATTN_SUM)
#undef SAGEATTN_SUM
  g_int_sink = g_int_sink + hsum_epi32_256(sum);
  return iters;
}

// VPMADDWD + VPADDD ymm, the AVX2 int8 P·V idiom (P and V widened to int16): 16 int16 x
// int16 multiply-adds, pairwise summed into 8 int32 lanes = 32 ops per pair. As in the
// maddubs probe, the accumulator feeds an operand so that no step is loop-invariant.
__attribute__((target("avx2"), noinline)) std::uint64_t body_avx2_vpmaddwd(Clock::time_point deadline) {
#define SAGEATTN_INIT(i) __m256i acc##i = _mm256_set1_epi32(0x00010002 + (i));
  SAGEATTN_REP12(SAGEATTN_INIT)
#undef SAGEATTN_INIT
  const __m256i b = _mm256_set1_epi16(-3);
  std::uint64_t iters = 0;
  do {
#pragma GCC unroll 2
    for (int r = 0; r < kItersPerClockCheck; ++r) {
#define SAGEATTN_STEP(i) acc##i = _mm256_add_epi32(acc##i, _mm256_madd_epi16(acc##i, b));
      SAGEATTN_REP12(SAGEATTN_STEP)
#undef SAGEATTN_STEP
      SAGEATTN_REP12(SAGEATTN_PIN_X)
    }
    iters += kItersPerClockCheck;
  } while (Clock::now() < deadline);
  __m256i sum = acc0;
#define SAGEATTN_SUM(i) sum = _mm256_add_epi32(sum, acc##i);
  SAGEATTN_REP12(SAGEATTN_SUM)
#undef SAGEATTN_SUM
  g_int_sink = g_int_sink + hsum_epi32_256(sum);
  return iters;
}

// VFMADD231PS ymm: 8 fp32 FMAs = 16 ops.
__attribute__((target("avx2,fma"), noinline)) std::uint64_t body_avx2_fma_fp32(
    Clock::time_point deadline) {
#define SAGEATTN_INIT(i) __m256 acc##i = _mm256_set1_ps(1.0f + 0.125f * (i));
  SAGEATTN_REP12(SAGEATTN_INIT)
#undef SAGEATTN_INIT
  const __m256 a = _mm256_set1_ps(1e-3f);
  const __m256 b = _mm256_set1_ps(1e-3f);
  std::uint64_t iters = 0;
  do {
#pragma GCC unroll 4
    for (int r = 0; r < kItersPerClockCheck; ++r) {
#define SAGEATTN_STEP(i) acc##i = _mm256_fmadd_ps(a, b, acc##i);
      SAGEATTN_REP12(SAGEATTN_STEP)
#undef SAGEATTN_STEP
      SAGEATTN_REP12(SAGEATTN_PIN_X)
    }
    iters += kItersPerClockCheck;
  } while (Clock::now() < deadline);
  __m256 sum = acc0;
#define SAGEATTN_SUM(i) sum = _mm256_add_ps(sum, acc##i);
  SAGEATTN_REP12(SAGEATTN_SUM)
#undef SAGEATTN_SUM
  g_float_sink = g_float_sink + hsum_ps_256(sum);
  return iters;
}

#undef SAGEATTN_PIN
#undef SAGEATTN_PIN_X

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

#undef SAGEATTN_REP12

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
