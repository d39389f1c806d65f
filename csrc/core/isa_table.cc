// THE table of supported ISAs: adding an ISA level is one row here (plus its kernels).
#include "sageattn/isa.h"

#include "sageattn/quant_ops.h"
#include "sageattn/tile_ops.h"

namespace sageattn {
namespace {

bool always() { return true; }

#if defined(SAGEATTN_HAVE_X86_KERNELS)
bool cpu_has_avx2() {
  __builtin_cpu_init();
#if defined(__clang__) && __clang_major__ < 18
  // Older clang rejects the "f16c" feature name; every AVX2 CPU has F16C.
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
         __builtin_cpu_supports("f16c");
#endif
}

// F/BW/VL/DQ + VNNI: VPDPBUSD for int8 Q·Kᵀ (Cascade Lake, Ice Lake, Zen 4 and later).
bool cpu_has_avx512() {
  __builtin_cpu_init();
  return cpu_has_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512vnni");
}

// + BF16: VDPBF16PS for fp8 P·V and fp8 Q·Kᵀ over exact codes (Cooper Lake, Sapphire
// Rapids, Zen 4 and later).
bool cpu_has_avx512_bf16() { return cpu_has_avx512() && __builtin_cpu_supports("avx512bf16"); }
#endif

const IsaInfo kIsas[] = {
#if defined(SAGEATTN_HAVE_X86_KERNELS)
    {Isa::kAvx512Bf16, "avx512_bf16", cpu_has_avx512_bf16, avx512_bf16_tile_ops, avx512_quant_ops},
    {Isa::kAvx512, "avx512", cpu_has_avx512, avx512_tile_ops, avx512_quant_ops},
    {Isa::kAvx2, "avx2", cpu_has_avx2, avx2_tile_ops, avx2_quant_ops},
#endif
    {Isa::kScalar, "scalar", always, scalar_tile_ops, scalar_quant_ops},
};

}  // namespace

IsaTable isa_table() { return IsaTable{kIsas, sizeof kIsas / sizeof kIsas[0]}; }

}  // namespace sageattn
