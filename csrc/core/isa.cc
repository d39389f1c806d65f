#include "sageattn/isa.h"

#include <atomic>
#include <cstdlib>
#include <mutex>

#include "sageattn/error.h"

namespace sageattn {
namespace {

bool cpu_has_avx2() {
#if defined(SAGEATTN_HAVE_X86_KERNELS)
  __builtin_cpu_init();
#if defined(__clang__) && __clang_major__ < 18
  // Older clang rejects the "f16c" feature name; every AVX2 CPU has F16C.
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
         __builtin_cpu_supports("f16c");
#endif
#else
  return false;
#endif
}

bool cpu_has_avx512() {
#if defined(SAGEATTN_HAVE_X86_KERNELS)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bf16");
#else
  return false;
#endif
}

Isa parse_isa(const std::string& name) {
  if (name == "scalar") return Isa::kScalar;
  if (name == "avx2") return Isa::kAvx2;
  if (name == "avx512") return Isa::kAvx512;
  throw Error(ErrorKind::kValue, "SAGEATTN_CPU_ISA: unknown ISA '" + name +
                                     "' (expected scalar, avx2, avx512 or auto)");
}

Isa best_isa() {
  if (isa_available(Isa::kAvx512)) return Isa::kAvx512;
  if (isa_available(Isa::kAvx2)) return Isa::kAvx2;
  return Isa::kScalar;
}

Isa checked(Isa isa) {
  if (!isa_available(isa)) {
    throw Error(ErrorKind::kValue, std::string("SAGEATTN_CPU_ISA: ISA '") + isa_name(isa) +
                                       "' is not available on this CPU or in this build");
  }
  return isa;
}

// -1: automatic; otherwise an Isa value. Atomic so concurrent callers see a whole value.
std::atomic<int> g_override{-2};  // -2: not yet read from the environment
std::mutex g_env_mutex;

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kScalar: return "scalar";
    case Isa::kAvx2: return "avx2";
    case Isa::kAvx512: return "avx512";
  }
  return "unknown";
}

bool isa_available(Isa isa) {
  switch (isa) {
    case Isa::kScalar: return true;
    case Isa::kAvx2: return cpu_has_avx2();
    case Isa::kAvx512: return cpu_has_avx512();
  }
  return false;
}

void set_isa_override(const std::string& name) {
  if (name.empty() || name == "auto") {
    g_override.store(-1);
    return;
  }
  g_override.store(static_cast<int>(checked(parse_isa(name))));
}

Isa active_isa() {
  int o = g_override.load();
  if (o == -2) {
    std::lock_guard<std::mutex> lock(g_env_mutex);
    o = g_override.load();
    if (o == -2) {
      const char* env = std::getenv("SAGEATTN_CPU_ISA");
      const std::string name = env ? env : "";
      o = (name.empty() || name == "auto") ? -1 : static_cast<int>(parse_isa(name));
      g_override.store(o);
    }
  }
  return o < 0 ? best_isa() : checked(static_cast<Isa>(o));
}

}  // namespace sageattn
