"""The benchmark's native helpers, built on demand into bench/.build/ (git-ignored).

- ``libsageattn_probe.so`` (bench/probe/): instruction-throughput probes, loaded with
  ctypes. They are not part of the shipped library.
- ``bench_tile_ops`` (tests/cpp/): the C++ tile harness, the cost of each tile stage
  (pack, Q·K, softmax, P·V) for every ISA path this CPU runs.

Each loader returns the helper or the reason it is unavailable; the benchmark then prints
that reason and carries on without it.
"""
from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
BUILD_DIR = BENCH_DIR / ".build"
BUILD_TIMEOUT_S = 1800


@dataclass(frozen=True)
class Unavailable:
    reason: str


def _cmake_generator() -> List[str]:
    return ["-G", "Ninja"] if shutil.which("ninja") else []


def _build(source: Path, build: Path, targets: List[str], defines: List[str]) -> Optional[str]:
    """Configure and build `targets`; None on success, else why not (with the log's tail)."""
    cmake = shutil.which("cmake")
    if cmake is None:
        return "cmake is not installed (pip install cmake ninja)"
    configure = [cmake, "-S", str(source), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
                 *_cmake_generator(), *defines]
    steps = [configure, [cmake, "--build", str(build), "--target", *targets, "-j", str(os.cpu_count() or 1)]]
    for cmd in steps:
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"`{' '.join(cmd)}` failed: {exc}"
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
            return f"`{' '.join(cmd)}` exited {proc.returncode}: " + " | ".join(tail)
    return None


class ProbeLib:
    """ctypes view of bench/probe/peak_probe.cc's C ABI."""

    def __init__(self, path: Path) -> None:
        self.path = path
        lib = ctypes.CDLL(str(path))
        lib.sageattn_probe_count.restype = ctypes.c_int
        lib.sageattn_probe_kind.argtypes = [ctypes.c_int]
        lib.sageattn_probe_kind.restype = ctypes.c_char_p
        lib.sageattn_probe_supported.argtypes = [ctypes.c_char_p]
        lib.sageattn_probe_supported.restype = ctypes.c_int
        lib.sageattn_probe_measure.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_double,
                                               ctypes.POINTER(ctypes.c_double), ctypes.c_char_p, ctypes.c_int]
        lib.sageattn_probe_measure.restype = ctypes.c_int
        self._lib = lib

    def kinds(self) -> List[str]:
        return [self._lib.sageattn_probe_kind(i).decode() for i in range(self._lib.sageattn_probe_count())]

    def supported(self, kind: str) -> bool:
        return bool(self._lib.sageattn_probe_supported(kind.encode()))

    def measure_gops(self, kind: str, threads: int, seconds: float) -> float:
        """Giga-ops per second of `kind` on `threads` threads (a multiply-add is 2 ops)."""
        gops = ctypes.c_double(0.0)
        error = ctypes.create_string_buffer(512)
        rc = self._lib.sageattn_probe_measure(kind.encode(), int(threads), float(seconds), ctypes.byref(gops),
                                              error, len(error))
        if rc != 0:
            raise RuntimeError(error.value.decode(errors="replace"))
        return gops.value


def load_probes(build: Path = BUILD_DIR / "probe") -> Union[ProbeLib, Unavailable]:
    failure = _build(BENCH_DIR / "probe", build, ["sageattn_probe"], [])
    if failure:
        return Unavailable(f"peak probes not built: {failure}")
    path = build / "libsageattn_probe.so"
    try:
        return ProbeLib(path)
    except (OSError, AttributeError) as exc:
        return Unavailable(f"peak probes not loadable from {path}: {exc}")


def build_tile_harness() -> Union[Path, Unavailable]:
    """tests/cpp/bench_tile_ops, built from this checkout's C++ core."""
    build = BUILD_DIR / "core"
    failure = _build(ROOT, build, ["bench_tile_ops"],
                     ["-DSAGEATTN_BUILD_TESTS=ON", f"-DPython_EXECUTABLE={sys.executable}"])
    if failure:
        return Unavailable(f"tile harness not built: {failure}")
    path = build / "tests" / "cpp" / "bench_tile_ops"
    return path if path.exists() else Unavailable(f"tile harness not found at {path}")


# One "<name> <value> us" pair of the harness's output, e.g. "qk   8.31 us".
_STAGE_COST = re.compile(r"([A-Za-z_][\w()]*)\s+(-?\d+(?:\.\d+)?)\s*us")


def run_tile_harness(path: Path, head_dim: int, iters: int, timeout_s: float = 900.0
                     ) -> Tuple[str, Dict[str, Dict[str, float]]]:
    """Raw output of `bench_tile_ops D D iters` and, per output line's label (text before
    its first ':'), the microseconds of each stage that line names."""
    proc = subprocess.run([str(path), str(head_dim), str(head_dim), str(iters)], capture_output=True,
                          text=True, timeout=timeout_s, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{path.name} exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    parsed: Dict[str, Dict[str, float]] = {}
    for line in proc.stdout.splitlines():
        label, sep, rest = line.partition(":")
        if not sep:
            continue
        costs = {name: float(value) for name, value in _STAGE_COST.findall(rest)}
        if costs:
            parsed.setdefault(" ".join(label.split()), {}).update(costs)
    return proc.stdout, parsed
