// Force-included (-include) into every TU of the clang/libFuzzer build only
// (scripts/fuzz.sh --libfuzzer). Clang before 18 rejects some feature names the core
// passes to __builtin_cpu_supports ("f16c", "avxvnni": "invalid cpu feature string for
// builtin"), so csrc/core/isa.cc does not compile there.
// This replaces the builtin by a CPUID + XGETBV check with the same meaning (the feature
// bit, and that the OS saves the AVX / AVX-512 register state). A package-side fix is
// reported in SECURITY.md; GCC builds never see this file.
#pragma once
#if defined(__clang__) && __clang_major__ < 18 && (defined(__x86_64__) || defined(__i386__))
#include <cpuid.h>
#include <string.h>

static inline int sageattn_compat_cpu_supports(const char* f) {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
  const unsigned ecx1 = c;
  unsigned long long xcr0 = 0;
  if (ecx1 & (1u << 27)) {  // OSXSAVE
    unsigned lo = 0, hi = 0;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    xcr0 = ((unsigned long long)hi << 32) | lo;
  }
  const int avx_os = (xcr0 & 0x6) == 0x6 && (ecx1 & (1u << 28));
  const int avx512_os = avx_os && (xcr0 & 0xE0) == 0xE0;
  unsigned b7 = 0, c7 = 0, a71 = 0;
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
    b7 = b;
    c7 = c;
    if (a >= 1 && __get_cpuid_count(7, 1, &a, &b, &c, &d)) a71 = a;
  }
  if (!strcmp(f, "fma")) return avx_os && (ecx1 >> 12 & 1);
  if (!strcmp(f, "f16c")) return avx_os && (ecx1 >> 29 & 1);
  if (!strcmp(f, "avx")) return avx_os;
  if (!strcmp(f, "avx2")) return avx_os && (b7 >> 5 & 1);
  if (!strcmp(f, "avxvnni")) return avx_os && (a71 >> 4 & 1);
  if (!strcmp(f, "avx512f")) return avx512_os && (b7 >> 16 & 1);
  if (!strcmp(f, "avx512dq")) return avx512_os && (b7 >> 17 & 1);
  if (!strcmp(f, "avx512bw")) return avx512_os && (b7 >> 30 & 1);
  if (!strcmp(f, "avx512vl")) return avx512_os && (b7 >> 31 & 1);
  if (!strcmp(f, "avx512vnni")) return avx512_os && (c7 >> 11 & 1);
  if (!strcmp(f, "avx512bf16")) return avx512_os && (a71 >> 5 & 1);
  return 0;
}
#define __builtin_cpu_supports(feature) sageattn_compat_cpu_supports(feature)
#endif
