// Instruction-throughput probes: what this CPU's multiply-accumulate units can do,
// measured in the same run as a benchmark so that "% of peak" is honest.
#pragma once
#include <string>
#include <vector>

namespace sageattn {

// Names of the probes this build knows, whether or not the CPU supports them.
std::vector<std::string> peak_probe_kinds();

// Whether the running CPU can execute the probe `kind`.
bool peak_probe_supported(const std::string& kind);

// Sustained throughput of `kind` in giga-operations per second (a multiply-add is two
// operations), summed over `num_threads` threads that each run for about `seconds`.
// Throws sageattn::Error (kValue) for an unknown or unsupported kind.
double measure_peak_gops(const std::string& kind, int num_threads, double seconds);

}  // namespace sageattn
