// Run-time choice of the kernel set. Every ISA path has its own translation unit built
// with its own target flags; nothing here executes an instruction the CPU lacks.
//
// The supported ISAs are ONE table (csrc/core/isa_table.cc): name, availability check,
// tile operations and quantizer kernels. Everything that picks, names or lists an ISA
// (tile-op and quantizer lookup, the FFI's cpu_isa_names / cpu_isa_available, CI's
// per-ISA loop through cpu_isa_names) reads that table.
#pragma once
#include <cstddef>
#include <string>

namespace sageattn {

struct TileOps;
struct QuantOps;

enum class Isa { kScalar = 0, kAvx2 = 1, kAvx512 = 2, kAvx512Bf16 = 3 };

struct IsaInfo {
  Isa isa;
  const char* name;                  // what SAGEATTN_CPU_ISA and set_cpu_isa accept
  bool (*available)();               // this CPU can execute the kernels
  const TileOps& (*tile_ops)();
  const QuantOps& (*quant_ops)();
};

// The ISAs this build contains, most capable first: automatic choice takes the first
// available one.
struct IsaTable {
  const IsaInfo* entries;
  size_t size;
  const IsaInfo* begin() const { return entries; }
  const IsaInfo* end() const { return entries + size; }
};
IsaTable isa_table();

// The table row of `isa`; throws (kValue) when this build does not contain it.
const IsaInfo& isa_info(Isa isa);
const char* isa_name(Isa isa);

// Whether this build contains the kernels for `isa` and the running CPU can execute them.
bool isa_available(Isa isa);

// The best available ISA, unless SAGEATTN_CPU_ISA=<a table name> (read once) or
// set_isa_override() says otherwise. Asking for an unavailable ISA is an error, not a
// silent fallback: a test that forces a path must really run that path.
Isa active_isa();

// Override for tests and benchmarks; "" or "auto" returns to automatic choice.
void set_isa_override(const std::string& name);

// The kernels of an ISA (isa_info(isa).tile_ops() / .quant_ops()).
const TileOps& tile_ops_for(Isa isa);
const QuantOps& quant_ops_for(Isa isa);

}  // namespace sageattn
