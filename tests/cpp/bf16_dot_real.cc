// The real VDPBF16PS, for checking the emulation of tests/cpp/emu512.h bit for bit.
// Built with the AVX-512 BF16 flags; runs the instruction only when the CPU has it.
#include <immintrin.h>

#include <cstdint>

namespace sageattn {
namespace simd_test {

// n a multiple of 16; false (nothing computed) when the CPU lacks AVX-512 BF16.
bool dpbf16_real(const float* acc, const uint32_t* a, const uint32_t* b, float* out, int n) {
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bf16")) return false;
  for (int i = 0; i + 16 <= n; i += 16) {
    const __m512i va = _mm512_loadu_si512(a + i), vb = _mm512_loadu_si512(b + i);
    const __m512 r = _mm512_dpbf16_ps(_mm512_loadu_ps(acc + i), reinterpret_cast<__m512bh>(va), reinterpret_cast<__m512bh>(vb));
    _mm512_storeu_ps(out + i, r);
  }
  return true;
}

}  // namespace simd_test
}  // namespace sageattn
