// Run-time choice of the kernel set. Every ISA path has its own translation unit built
// with its own target flags; nothing here executes an instruction the CPU lacks.
#pragma once
#include <string>

namespace sageattn {

enum class Isa { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };

const char* isa_name(Isa isa);

// Whether this build contains the kernels for `isa` and the running CPU can execute them.
bool isa_available(Isa isa);

// The best available ISA, unless SAGEATTN_CPU_ISA=scalar|avx2|avx512 (read once) or
// set_isa_override() says otherwise. Asking for an unavailable ISA is an error, not a
// silent fallback: a test that forces a path must really run that path.
Isa active_isa();

// Override for tests and benchmarks; "" or "auto" returns to automatic choice.
void set_isa_override(const std::string& name);

}  // namespace sageattn
