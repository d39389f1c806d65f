"""The machine a benchmark ran on, and how busy other processes kept it meanwhile."""
from __future__ import annotations

import importlib.metadata
import os
import platform
import resource
import time
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import torch

RELEVANT_CPU_FLAGS_PREFIXES = ("avx2", "fma", "f16c", "avx512", "avx_vnni", "amx")
# Other processes using more than this many cores on average make the run "noisy".
NOISY_FOREIGN_CORES = 0.1


@dataclass
class CpuSnapshot:
    """Machine-wide busy CPU time and this process's (plus children's) CPU time, seconds."""

    machine_busy_s: float
    own_s: float
    wall_s: float

    @staticmethod
    def take() -> CpuSnapshot:
        busy = float("nan")
        try:
            with open("/proc/stat", encoding="ascii") as fh:
                fields = [int(x) for x in fh.readline().split()[1:]]
            # user nice system idle iowait irq softirq steal ...: everything but idle/iowait.
            busy = (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            pass
        own = 0.0
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
            usage = resource.getrusage(who)
            own += usage.ru_utime + usage.ru_stime
        return CpuSnapshot(busy, own, time.perf_counter())


def foreign_cpu_load(start: CpuSnapshot, end: CpuSnapshot) -> dict[str, float]:
    """CPU used by other processes during the run, in average busy cores."""
    wall = max(end.wall_s - start.wall_s, 1e-9)
    foreign = (end.machine_busy_s - start.machine_busy_s) - (end.own_s - start.own_s)
    return {"wall_s": wall, "foreign_cpu_s": foreign, "foreign_busy_cores": max(foreign, 0.0) / wall}


def read_cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if not line.strip():
                    break  # first processor is enough
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return info


# AMD's family/model ranges of each Zen generation (x86 "cpu family" and "model" as
# /proc/cpuinfo gives them, in decimal). Unlisted pairs have no name: the report omits it.
_AMD_MICROARCH: tuple[tuple[int, range, str], ...] = (
    (25, range(0x00, 0x10), "Zen 3"),
    (25, range(0x10, 0x20), "Zen 4"),
    (25, range(0x20, 0x30), "Zen 3"),
    (25, range(0x40, 0x60), "Zen 3"),
    (25, range(0x60, 0x80), "Zen 4"),
    (25, range(0xA0, 0xB0), "Zen 4"),
    (26, range(0x00, 0x100), "Zen 5"),
)


def cpu_microarch(vendor: str, family: str, model: str) -> str | None:
    """The microarchitecture of an AMD CPU from /proc/cpuinfo's vendor_id, cpu family and
    model fields; None for other vendors and for pairs the table does not know."""
    if vendor != "AuthenticAMD" or not (family.isdigit() and model.isdigit()):
        return None
    fam, mod = int(family), int(model)
    return next((name for f, models, name in _AMD_MICROARCH if f == fam and mod in models), None)


def machine_info(lib: ModuleType | None, sage: ModuleType | None) -> dict[str, Any]:
    cpuinfo = read_cpuinfo()
    flags = cpuinfo.get("flags", "").split()
    relevant = sorted(f for f in flags if f.startswith(RELEVANT_CPU_FLAGS_PREFIXES))
    physical: int | None = None
    try:
        import psutil  # type: ignore[import-untyped]

        physical = psutil.cpu_count(logical=False)
    except ImportError:
        # /proc/cpuinfo's "cpu cores" counts one socket's cores; a multi-socket machine
        # without psutil reads low, which the report shows as given.
        cores = cpuinfo.get("cpu cores", "")
        physical = int(cores) if cores.isdigit() else None
    return {
        "cpu_model": cpuinfo.get("model name", platform.processor() or platform.machine()),
        "cpu_family_model": f"family {cpuinfo.get('cpu family', '?')} model {cpuinfo.get('model', '?')}",
        "cpu_microarch": cpu_microarch(cpuinfo.get("vendor_id", ""), cpuinfo.get("cpu family", ""),
                                       cpuinfo.get("model", "")),
        "cpu_flags_relevant": relevant,
        "has_avx512": any(f.startswith("avx512") for f in flags),
        "logical_cpus": os.cpu_count(),
        "physical_cores": physical,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "sageattention": package_version(sage),
        "isa_path": query_isa(lib),
    }


def package_version(sage: ModuleType | None) -> str | None:
    if sage is None:
        return None
    version = getattr(sage, "__version__", None)
    if version:
        return str(version)
    try:
        return importlib.metadata.version("sageattention")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def query_isa(lib: ModuleType | None) -> str | None:
    fn = getattr(lib, "cpu_isa", None) if lib is not None else None
    if fn is None:
        return None
    try:
        return str(fn())
    except Exception as exc:  # report, do not abort the benchmark
        return f"error: {exc}"
