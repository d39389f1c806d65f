// ISA choice over the table of csrc/core/isa_table.cc: lookup, override, best available.
#include "sageattn/isa.h"

#include <atomic>
#include <cstdlib>
#include <mutex>

#include "sageattn/error.h"

namespace sageattn {
namespace {

std::string known_names() {
  std::string s;
  for (const IsaInfo& e : isa_table()) s += std::string(e.name) + ", ";
  return s + "or auto";
}

Isa parse_isa(const std::string& name) {
  for (const IsaInfo& e : isa_table())
    if (name == e.name) return e.isa;
  throw Error(ErrorKind::kValue, "SAGEATTN_CPU_ISA: unknown ISA '" + name + "' (expected " + known_names() + ")");
}

Isa best_isa() {
  for (const IsaInfo& e : isa_table())
    if (e.available()) return e.isa;
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

const IsaInfo* find(Isa isa) {
  for (const IsaInfo& e : isa_table())
    if (e.isa == isa) return &e;
  return nullptr;
}

}  // namespace

const IsaInfo& isa_info(Isa isa) {
  const IsaInfo* e = find(isa);
  if (!e) throw Error(ErrorKind::kValue, "ISA " + std::to_string(static_cast<int>(isa)) + " is not in this build");
  return *e;
}

const char* isa_name(Isa isa) {
  const IsaInfo* e = find(isa);
  return e ? e->name : "unknown";
}

bool isa_available(Isa isa) {
  const IsaInfo* e = find(isa);
  return e != nullptr && e->available();
}

const TileOps& tile_ops_for(Isa isa) { return isa_info(isa).tile_ops(); }
const QuantOps& quant_ops_for(Isa isa) { return isa_info(isa).quant_ops(); }

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
