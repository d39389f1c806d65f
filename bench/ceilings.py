"""Per-path ceilings: what the units a kernel path really uses can do on this CPU.

A path is (ISA path of the kernels, P·V mode). Its ceiling combines the measured peak of
the unit its Q·Kᵀ runs on and of the unit its P·V runs on, probed in the same run
(bench/probe/). bench/README.md explains the harmonic combination.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

# (ISA path, P·V mode) -> (probe of the Q·Kᵀ unit, probe of the P·V unit), for the
# benchmark's recipe (int8 Q·Kᵀ, the default). THE place to edit when a path moves to
# another unit, e.g. fp8 P·V onto VDPBF16PS: ("avx512", "fp8"): (..., "avx512_vdpbf16ps").
CEILING_UNITS: dict[tuple[str, str], tuple[str, str]] = {
    # Q·Kᵀ: VPDPBUSD zmm. P·V: VDPBF16PS zmm over fp8 P and V codes held exactly in bf16.
    ("avx512_bf16", "fp8"): ("avx512_vpdpbusd", "avx512_vdpbf16ps"),
    ("avx512_bf16", "int8"): ("avx512_vpdpbusd", "avx512_vpdpbusd"),
    # Q·Kᵀ: VPDPBUSD zmm. P·V: fp32 FMA zmm over V decoded from fp8 (AVX-512 without BF16).
    ("avx512", "fp8"): ("avx512_vpdpbusd", "avx512_fma_fp32"),
    # P·V: u8 P codes × s8 V codes, VPDPBUSD zmm.
    ("avx512", "int8"): ("avx512_vpdpbusd", "avx512_vpdpbusd"),
    # Q·Kᵀ: Q and K codes widened to int16 pairs, VPMADDWD + VPADDD ymm (also on CPUs
    # with AVX-VNNI: the AVX2 kernels do not use it). P·V: fp32 FMA ymm over V decoded
    # from fp8.
    ("avx2", "fp8"): ("avx2_vpmaddwd", "avx2_fma_fp32"),
    # P·V: P and V widened to int16, VPMADDWD + VPADDD ymm (VPMADDUBSW's saturating
    # int16 pair sum cannot hold 255·127 twice).
    ("avx2", "int8"): ("avx2_vpmaddwd", "avx2_vpmaddwd"),
}


class Probes(Protocol):
    def kinds(self) -> list[str]: ...
    def supported(self, kind: str) -> bool: ...
    def measure_gops(self, kind: str, threads: int, seconds: float) -> float: ...


@dataclass
class ProbeResult:
    kind: str
    supported: bool
    # threads -> every repeat's GOPS; the figure used is the maximum (a busy machine only
    # ever makes a probe read low).
    samples_by_threads: dict[int, list[float]] = field(default_factory=dict)
    error: str | None = None

    def gops(self, threads: int) -> float | None:
        samples = self.samples_by_threads.get(threads)
        return max(samples) if samples else None


@dataclass
class Ceiling:
    isa_path: str
    pv_mode: str
    qk_probe: str | None
    pv_probe: str | None
    gops_by_threads: dict[int, float] = field(default_factory=dict)
    note: str = ""


def harmonic_ceiling(p_qk: float, p_pv: float) -> float:
    """Q·Kᵀ and P·V have equal op counts W, so 2W ops take W/P_qk + W/P_pv."""
    return 2.0 / (1.0 / p_qk + 1.0 / p_pv)


def probes_needed(isa_path: str, pv_modes: Sequence[str]) -> list[str]:
    kinds: list[str] = []
    for mode in pv_modes:
        for kind in CEILING_UNITS.get((isa_path, mode), ()):
            if kind not in kinds:
                kinds.append(kind)
    return kinds


def run_probes(probes: Probes, thread_counts: Sequence[int], seconds: float, repeats: int,
               on_step: Callable[[str], None] = lambda text: None) -> list[ProbeResult]:
    """Every probe at every thread count, `repeats` times, round-robin so that a burst of
    foreign load costs one sample of several probes rather than every sample of one."""
    results = [ProbeResult(kind, probes.supported(kind)) for kind in probes.kinds()]
    for rep in range(repeats):
        for result in results:
            for threads in thread_counts:
                on_step(f"probe {result.kind} x{threads} ({rep + 1}/{repeats})")
                if not result.supported or result.error:
                    continue
                try:
                    gops = probes.measure_gops(result.kind, threads, seconds)
                except RuntimeError as exc:
                    result.error = str(exc)
                    continue
                result.samples_by_threads.setdefault(threads, []).append(gops)
    return results


def ceilings_for(isa_path: str, pv_modes: Sequence[str], probes: Sequence[ProbeResult]) -> dict[str, Ceiling]:
    """The ceiling of each P·V mode on `isa_path`, at every thread count probed."""
    by_kind = {p.kind: p for p in probes}
    out: dict[str, Ceiling] = {}
    for mode in pv_modes:
        units = CEILING_UNITS.get((isa_path, mode))
        if units is None:
            out[mode] = Ceiling(isa_path, mode, None, None, note=f"no ceiling entry for ({isa_path}, {mode})")
            continue
        qk, pv = units
        ceiling = Ceiling(isa_path, mode, qk, pv, note=f"Q·Kᵀ on `{qk}`, P·V on `{pv}`")
        missing = [k for k in (qk, pv) if k not in by_kind or not by_kind[k].supported]
        if missing:
            ceiling.note += f"; not measured ({', '.join(missing)} unavailable)"
        else:
            for threads, _ in by_kind[qk].samples_by_threads.items():
                p_qk, p_pv = by_kind[qk].gops(threads), by_kind[pv].gops(threads)
                if p_qk and p_pv:
                    ceiling.gops_by_threads[threads] = harmonic_ceiling(p_qk, p_pv)
        out[mode] = ceiling
    return out
