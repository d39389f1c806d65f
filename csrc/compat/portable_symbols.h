// Force-included into every translation unit of a GCC build on x86-64 Linux
// (CMakeLists.txt, SAGEATTN_PORTABLE_SYMBOLS), so that the library loads on distributions
// older than the build machine. README.md ("Wheel compatibility") states the manylinux
// floor this gives, as `auditwheel show` reports it.
#pragma once

// 1. Bind two references to the oldest symbol version that is the same function:
//    pthread_mutex_trylock@GLIBC_2.34 is the 2.2.5 entry point moved into libc proper
//    (one address, two versions), and condition_variable::wait@GLIBCXX_3.4.30 differs
//    from the 3.4.11 one only in how it reacts to thread cancellation, which the
//    library never uses. (exp2f/log2f stay at GLIBC_2.27: older versions are other
//    implementations, and the softmax's results would depend on the machine.)
__asm__(".symver pthread_mutex_trylock,pthread_mutex_trylock@GLIBC_2.2.5");
__asm__(".symver _ZNSt18condition_variable4waitERSt11unique_lockISt5mutexE,"
        "_ZNSt18condition_variable4waitERSt11unique_lockISt5mutexE@GLIBCXX_3.4.11");

// 2. Instantiate libstdc++'s class templates (strings, string streams) in our own hidden
//    code instead of importing the instances the build machine's libstdc++ exports, some
//    of which carry versions that older releases lack (ostringstream's default
//    constructor, used by TVM-FFI's error paths, is GLIBCXX_3.4.26).
#ifdef __cplusplus
#include <bits/c++config.h>
#undef _GLIBCXX_EXTERN_TEMPLATE
#define _GLIBCXX_EXTERN_TEMPLATE 0
#endif
