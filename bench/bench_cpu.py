#!/usr/bin/env python3
"""CPU benchmark: ``sageattention.sageattn`` against ``torch`` SDPA in bf16 and fp32.

Run ``python bench/bench_cpu.py --help``; bench/README.md explains every column and how
the peak is derived. Everything runs in one process with one thread count
(``torch.set_num_threads``), except the peak-memory probe, which runs each call in a
fresh subprocess so that its RSS high-water mark belongs to that call alone.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import importlib.metadata
import json
import math
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import torch.nn.functional as F

# ---------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
BATCH = 1
HEADS = 8
HEAD_DIMS = (64, 128)
SEQ_LENS = (1024, 4096, 8192)
LARGE_SEQ_LENS = (16384, 32768)
QUICK_SEQ_LENS = (1024,)
CAUSAL_MODES = (False, True)

SCALING_N, SCALING_N_QUICK, SCALING_D = 8192, 4096, 128
MEMORY_N, MEMORY_H, MEMORY_D = 65536, 1, 128
MEMORY_CHILD_TIMEOUT_S = 900

# Figure quoted in DEVELOPERS.md for a 2-core Zen 4 with AVX-512 (VNNI + BF16), in
# effective giga-ops per second. Shown for comparison only.
NOMINAL_ZEN4_AVX512_2CORE_GOPS = 600.0

# Probe names exposed by sageattention._lib (include/sageattn/peak_probe.h).
PROBE_AVX512_INT8 = "avx512_vpdpbusd"
PROBE_AVX512_BF16 = "avx512_vdpbf16ps"
PROBE_AVX_VNNI = "avx_vnni_vpdpbusd"
PROBE_AVX2_INT8 = "avx2_maddubs_i8"
PROBE_AVX2_FP32 = "avx2_fma_fp32"

# Other processes using more than this many cores on average make the run "noisy".
NOISY_FOREIGN_CORES = 0.1

RELEVANT_CPU_FLAGS_PREFIXES = ("avx2", "fma", "f16c", "avx512", "avx_vnni", "amx")


# ---------------------------------------------------------------------------
# Data model
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    batch: int
    heads: int
    seq_len: int
    head_dim: int
    causal: bool

    def effective_ops(self) -> float:
        """4·B·H·Nq·Nk·D (QKᵀ and P·V, a multiply-add counted as 2), halved when causal."""
        ops = 4.0 * self.batch * self.heads * self.seq_len * self.seq_len * self.head_dim
        return ops / 2.0 if self.causal else ops

    def label(self) -> str:
        return (f"B={self.batch} H={self.heads} N={self.seq_len} D={self.head_dim}"
                f"{' causal' if self.causal else ''}")


@dataclass
class Timing:
    median_s: float
    min_s: float
    samples_s: list[float]
    warmup_s: list[float]

    def tops(self, shape: Shape) -> float:
        return shape.effective_ops() / self.median_s / 1e12


@dataclass
class RowResult:
    shape: Shape
    threads: int
    ours: Timing | None
    sdpa_bf16: Timing
    sdpa_fp32: Timing
    cos_ours_vs_fp32: float | None
    cos_sdpa_bf16_vs_fp32: float


@dataclass
class ProbeResult:
    kind: str
    supported: bool
    gops_by_threads: dict[int, float] = field(default_factory=dict)


@dataclass
class PeakModel:
    """The recipe's peak: QKᵀ on the int8 probe, P·V on the fp8-as-bf16 probe."""

    isa_path: str
    qk_probe: str | None
    pv_probe: str | None
    note: str
    peak_gops_by_threads: dict[int, float] = field(default_factory=dict)


@dataclass
class ScalingResult:
    shape: Shape
    timings: dict[str, dict[int, Timing]]  # impl -> threads -> timing


@dataclass
class MemoryResult:
    impl: str
    ok: bool
    extra_bytes: int | None
    detail: dict[str, Any]


@dataclass
class Settings:
    threads: int
    quick: bool
    large: bool
    out_dir: Path
    probe_seconds: float
    min_reps: int
    max_reps: int
    budget_s: float
    long_run_s: float
    sdpa_only: bool
    no_memory: bool
    seed: int


# ---------------------------------------------------------------------------
# Progress
# ---------------------------------------------------------------------------


class Progress:
    """tqdm when installed, else a plain text bar on stderr."""

    def __init__(self, total: int) -> None:
        self.total = max(total, 1)
        self.done = 0
        self._tqdm: Any = None
        try:
            from tqdm import tqdm  # type: ignore[import-not-found]

            self._tqdm = tqdm(total=self.total, unit="step", file=sys.stderr, dynamic_ncols=True)
        except ImportError:
            self._tqdm = None

    def describe(self, text: str) -> None:
        if self._tqdm is not None:
            self._tqdm.set_description_str(text)
        else:
            self._draw(text)

    def step(self) -> None:
        self.done += 1
        if self._tqdm is not None:
            self._tqdm.update(1)
        else:
            self._draw("")

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
        else:
            sys.stderr.write("\n")

    def _draw(self, text: str) -> None:
        width = 30
        filled = int(width * self.done / self.total)
        bar = "#" * filled + "-" * (width - filled)
        sys.stderr.write(f"\r[{bar}] {self.done}/{self.total} {text[:60]:<60}")
        sys.stderr.flush()


# ---------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------


def time_once(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(fn: Callable[[], Any], settings: Settings,
            predicted_s: float | None = None) -> Timing:
    """Median of several timed calls after warm-up, with adaptive repetition.

    One warm-up call (two when it is under a second). Then enough calls to fill about
    `budget_s`, at least `min_reps` and at most `max_reps`. A call longer than
    `long_run_s` gets a single measured call; when a smaller shape already predicts
    that (`predicted_s`), the warm-up is skipped too, since one-time costs are then
    negligible next to the call.
    """
    if predicted_s is not None and predicted_s > settings.long_run_s and not settings.quick:
        sample = time_once(fn)
        return Timing(median_s=sample, min_s=sample, samples_s=[sample], warmup_s=[])
    warmups = [time_once(fn)]
    if warmups[0] < 1.0 and not settings.quick:
        warmups.append(time_once(fn))
    estimate = min(warmups)
    if settings.quick:
        reps = 1
    elif estimate > settings.long_run_s:
        reps = 1
    else:
        reps = int(settings.budget_s / max(estimate, 1e-9))
        reps = max(settings.min_reps, min(settings.max_reps, reps))
    samples = [time_once(fn) for _ in range(reps)]
    return Timing(median_s=statistics.median(samples), min_s=min(samples), samples_s=samples,
                  warmup_s=warmups)


# ---------------------------------------------------------------------------
# Implementations under test
# ---------------------------------------------------------------------------


def make_inputs(shape: Shape, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v as (B, H, N, D) bf16; the fp32 runs use exactly these values upcast."""
    gen = torch.Generator().manual_seed(seed)
    dims = (shape.batch, shape.heads, shape.seq_len, shape.head_dim)
    return tuple(  # type: ignore[return-value]
        torch.randn(dims, generator=gen, dtype=torch.float32).to(torch.bfloat16) for _ in range(3)
    )


def run_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal)


def run_ours(sage: ModuleType, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
             causal: bool) -> torch.Tensor:
    return sage.sageattn(q, k, v, tensor_layout="HND", is_causal=causal)


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a64 = a.reshape(-1).to(torch.float64)
    b64 = b.reshape(-1).to(torch.float64)
    denom = a64.norm() * b64.norm()
    return float((a64 @ b64) / denom) if float(denom) > 0 else float("nan")


def predict_seconds(impl: str, shape: Shape, rows: Sequence[RowResult]) -> float | None:
    """Time of `impl` on `shape` extrapolated (∝ N²) from the largest smaller N measured."""
    best: tuple[int, float] | None = None
    for row in rows:
        same_kind = (row.shape.head_dim, row.shape.causal, row.shape.batch, row.shape.heads) == (
            shape.head_dim, shape.causal, shape.batch, shape.heads)
        timing = row_timing(row, impl)
        if same_kind and timing and row.shape.seq_len < shape.seq_len:
            if best is None or row.shape.seq_len > best[0]:
                best = (row.shape.seq_len, timing.median_s)
    return None if best is None else best[1] * (shape.seq_len / best[0]) ** 2


def row_timing(row: RowResult, impl: str) -> Timing | None:
    return {"ours": row.ours, "sdpa_bf16": row.sdpa_bf16, "sdpa_fp32": row.sdpa_fp32}[impl]


def bench_shape(shape: Shape, settings: Settings, sage: ModuleType | None,
                earlier: Sequence[RowResult], progress: Progress) -> RowResult:
    q, k, v = make_inputs(shape, settings.seed)
    q32, k32, v32 = q.float(), k.float(), v.float()
    box: dict[str, torch.Tensor] = {}

    def timed(impl: str, fn: Callable[[], torch.Tensor]) -> Timing:
        progress.describe(f"{impl} {shape.label()}")
        timing = measure(lambda: box.__setitem__(impl, fn()), settings,
                         predict_seconds(impl, shape, earlier))
        progress.step()
        return timing

    ours_timing: Timing | None = None
    if sage is not None:
        ours_timing = timed("ours", lambda: run_ours(sage, q, k, v, shape.causal))
    bf16_timing = timed("sdpa_bf16", lambda: run_sdpa(q, k, v, shape.causal))
    fp32_timing = timed("sdpa_fp32", lambda: run_sdpa(q32, k32, v32, shape.causal))

    reference = box["sdpa_fp32"]
    return RowResult(
        shape=shape,
        threads=torch.get_num_threads(),
        ours=ours_timing,
        sdpa_bf16=bf16_timing,
        sdpa_fp32=fp32_timing,
        cos_ours_vs_fp32=cosine(box["ours"], reference) if "ours" in box else None,
        cos_sdpa_bf16_vs_fp32=cosine(box["sdpa_bf16"], reference),
    )


# ---------------------------------------------------------------------------
# Peak probes
# ---------------------------------------------------------------------------


def probe_api(lib: ModuleType | None) -> ModuleType | None:
    needed = ("peak_probe_kinds", "peak_probe_supported", "measure_peak_gops")
    if lib is None or not all(hasattr(lib, name) for name in needed):
        return None
    return lib


def query_isa(lib: ModuleType | None) -> str | None:
    fn = getattr(lib, "cpu_isa", None) if lib is not None else None
    if fn is None:
        return None
    try:
        return str(fn())
    except Exception as exc:  # report, do not abort the benchmark
        return f"error: {exc}"


def choose_peak_model(supported: dict[str, bool], isa: str | None) -> PeakModel:
    """Pick the probes that match the kernels this CPU runs.

    AVX-512 kernels: QKᵀ with VPDPBUSD zmm, P·V with VDPBF16PS zmm. AVX2 kernels: QKᵀ with
    AVX-VNNI VPDPBUSD ymm when present, else the VPMADDUBSW idiom; P·V as fp32 FMA on
    exactly-decoded fp8 values.
    """
    isa_text = (isa or "").lower()
    kernels_allow_512 = isa is None or "512" in isa_text
    if kernels_allow_512 and supported.get(PROBE_AVX512_INT8) and supported.get(PROBE_AVX512_BF16):
        return PeakModel("avx512", PROBE_AVX512_INT8, PROBE_AVX512_BF16,
                         "AVX-512 path: int8 VPDPBUSD zmm for QK, VDPBF16PS zmm for PV")
    if supported.get(PROBE_AVX2_INT8) and supported.get(PROBE_AVX2_FP32):
        qk = PROBE_AVX_VNNI if supported.get(PROBE_AVX_VNNI) else PROBE_AVX2_INT8
        note = ("AVX2 path: QK on " + ("AVX-VNNI VPDPBUSD ymm" if qk == PROBE_AVX_VNNI
                                       else "VPMADDUBSW+VPMADDWD+VPADDD ymm")
                + ", PV as fp32 FMA ymm on exactly-decoded fp8")
        if isa is not None and "avx2" not in isa_text:
            note += f" (kernels report ISA '{isa}', peak shown for the AVX2 path)"
        return PeakModel("avx2", qk, PROBE_AVX2_FP32, note)
    return PeakModel("none", None, None, "no supported probe pair: % of peak unavailable")


def harmonic_peak(p_qk: float, p_pv: float) -> float:
    """QK and PV have equal op counts, so time = W/P_qk + W/P_pv for 2W ops."""
    return 2.0 / (1.0 / p_qk + 1.0 / p_pv)


def run_probes(lib: ModuleType, thread_counts: Sequence[int], seconds: float,
               progress: Progress) -> list[ProbeResult]:
    results = []
    for kind in lib.peak_probe_kinds():
        result = ProbeResult(kind=kind, supported=bool(lib.peak_probe_supported(kind)))
        for threads in thread_counts:
            if result.supported:
                progress.describe(f"probe {kind} x{threads}")
                result.gops_by_threads[threads] = float(lib.measure_peak_gops(kind, threads, seconds))
            progress.step()
        results.append(result)
    return results


def fill_peaks(model: PeakModel, probes: Sequence[ProbeResult]) -> None:
    if model.qk_probe is None or model.pv_probe is None:
        return
    by_kind = {p.kind: p for p in probes}
    for threads, p_qk in by_kind[model.qk_probe].gops_by_threads.items():
        p_pv = by_kind[model.pv_probe].gops_by_threads.get(threads)
        if p_pv:
            model.peak_gops_by_threads[threads] = harmonic_peak(p_qk, p_pv)


# ---------------------------------------------------------------------------
# Thread scaling
# ---------------------------------------------------------------------------


def reuse_from_rows(shape: Shape, rows: Sequence[RowResult]) -> dict[str, Timing]:
    """Timings of `shape` already measured in the main table (at the main thread count)."""
    for row in rows:
        if row.shape == shape:
            found = {"sdpa_bf16": row.sdpa_bf16, "sdpa_fp32": row.sdpa_fp32}
            return {"ours": row.ours, **found} if row.ours else found
    return {}


def bench_scaling(shape: Shape, thread_counts: Sequence[int], settings: Settings,
                  sage: ModuleType | None, rows: Sequence[RowResult],
                  progress: Progress) -> ScalingResult:
    """Times `shape` at each thread count; reuses the main table's figures where it has them."""
    reused = reuse_from_rows(shape, rows)
    q, k, v = make_inputs(shape, settings.seed)
    q32, k32, v32 = q.float(), k.float(), v.float()
    impls: dict[str, Callable[[], Any]] = {
        "sdpa_bf16": lambda: run_sdpa(q, k, v, shape.causal),
        "sdpa_fp32": lambda: run_sdpa(q32, k32, v32, shape.causal),
    }
    if sage is not None:
        impls = {"ours": lambda: run_ours(sage, q, k, v, shape.causal), **impls}
    timings: dict[str, dict[int, Timing]] = {name: {} for name in impls}
    saved_threads = torch.get_num_threads()
    try:
        for threads in thread_counts:
            torch.set_num_threads(threads)
            for name, fn in impls.items():
                progress.describe(f"scaling {name} x{threads}")
                if threads == settings.threads and name in reused:
                    timings[name][threads] = reused[name]
                else:
                    known = reused.get(name)
                    # Assumes linear scaling, which is what decides "long" anyway.
                    predicted = known.median_s * settings.threads / threads if known else None
                    timings[name][threads] = measure(fn, settings, predicted)
                progress.step()
    finally:
        torch.set_num_threads(saved_threads)
    return ScalingResult(shape=shape, timings=timings)


# ---------------------------------------------------------------------------
# Peak extra memory (fresh subprocess per implementation)
# ---------------------------------------------------------------------------

MEMORY_METHOD = (
    "Each implementation runs once in a fresh subprocess. After a small warm-up call "
    "(loads libraries and thread pools), the child allocates q, k, v (B,H,N,D) bf16 "
    "and an output-size buffer, touches them, and reads its RSS (the baseline); it then "
    "frees the buffer and makes one call. Peak = max(RSS high-water mark from "
    "getrusage(RUSAGE_SELF).ru_maxrss after the call, RSS polled every 1 ms from "
    "/proc/self/statm during the call). Extra = peak - baseline, i.e. memory beyond "
    "inputs and output. The high-water mark is used only when it rose during the call."
)


def current_rss_bytes() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return max_rss_bytes()


def max_rss_bytes() -> int:
    # Linux reports kilobytes, macOS bytes.
    scale = 1 if sys.platform == "darwin" else 1024
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * scale


class RssPoller:
    """Samples the current RSS on a background thread while the call runs."""

    def __init__(self, interval_s: float = 0.001) -> None:
        self.interval_s = interval_s
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, current_rss_bytes())
            self.samples += 1
            self._stop.wait(self.interval_s)


def memory_child(impl: str, n: int, heads: int, head_dim: int, threads: int) -> dict[str, Any]:
    """Body of the subprocess: one call of `impl`, memory accounted as in MEMORY_METHOD."""
    torch.set_num_threads(threads)
    if impl not in ("ours", "sdpa_bf16"):
        raise ValueError(f"unknown memory impl {impl!r}")
    sage = importlib.import_module("sageattention") if impl == "ours" else None

    def call(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return run_ours(sage, q, k, v, False) if sage is not None else run_sdpa(q, k, v, False)

    small = make_inputs(Shape(1, heads, 256, head_dim, False), seed=1)
    call(*small)
    del small

    dims = (1, heads, n, head_dim)
    q, k, v = (torch.randn(dims, dtype=torch.bfloat16) for _ in range(3))
    out_buffer = torch.ones(dims, dtype=torch.bfloat16)
    baseline = current_rss_bytes()
    hwm_before = max_rss_bytes()
    del out_buffer

    with RssPoller() as poller:
        start = time.perf_counter()
        out = call(q, k, v)
        elapsed = time.perf_counter() - start
    hwm_after = max_rss_bytes()

    peak = poller.peak
    hwm_rose = hwm_after > hwm_before
    if hwm_rose:
        peak = max(peak, hwm_after)
    return {
        "impl": impl,
        "shape": {"B": 1, "H": heads, "N": n, "D": head_dim},
        "threads": threads,
        "seconds": elapsed,
        "baseline_rss_bytes": baseline,
        "hwm_before_bytes": hwm_before,
        "hwm_after_bytes": hwm_after,
        "hwm_rose_during_call": hwm_rose,
        "polled_peak_bytes": poller.peak,
        "poll_samples": poller.samples,
        "peak_bytes": peak,
        "extra_bytes": max(0, peak - baseline),
        "inputs_bytes": 3 * q.numel() * q.element_size(),
        "output_bytes": out.numel() * out.element_size(),
    }


def bench_memory(impl: str, threads: int, progress: Progress) -> MemoryResult:
    progress.describe(f"memory {impl} N={MEMORY_N}")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_memory-child", impl,
           "--threads", str(threads)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=MEMORY_CHILD_TIMEOUT_S,
                              check=False)
    except subprocess.TimeoutExpired:
        progress.step()
        return MemoryResult(impl, False, None, {"error": f"timed out after {MEMORY_CHILD_TIMEOUT_S}s"})
    progress.step()
    last_line = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    if proc.returncode != 0 or not last_line.startswith("{"):
        return MemoryResult(impl, False, None, {
            "error": f"exit code {proc.returncode}", "stderr_tail": proc.stderr[-2000:]})
    detail = json.loads(last_line)
    return MemoryResult(impl, True, int(detail["extra_bytes"]), detail)


# ---------------------------------------------------------------------------
# Environment
# ---------------------------------------------------------------------------


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


def machine_info(lib: ModuleType | None, sage: ModuleType | None) -> dict[str, Any]:
    cpuinfo = read_cpuinfo()
    flags = cpuinfo.get("flags", "").split()
    relevant = sorted(f for f in flags if f.startswith(RELEVANT_CPU_FLAGS_PREFIXES))
    physical: int | None = None
    try:
        import psutil  # type: ignore[import-untyped]

        physical = psutil.cpu_count(logical=False)
    except ImportError:
        pass
    return {
        "cpu_model": cpuinfo.get("model name", platform.processor() or platform.machine()),
        "cpu_family_model": f"family {cpuinfo.get('cpu family', '?')} model {cpuinfo.get('model', '?')}",
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


# ---------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------


def fmt(value: float | None, spec: str = ".3f", na: str = "n/a") -> str:
    return na if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def row_metrics(row: RowResult, peak_gops: float | None) -> dict[str, float | None]:
    ours_tops = row.ours.tops(row.shape) if row.ours else None
    bf16_tops = row.sdpa_bf16.tops(row.shape)
    fp32_tops = row.sdpa_fp32.tops(row.shape)
    return {
        "ours_ms": row.ours.median_s * 1e3 if row.ours else None,
        "sdpa_bf16_ms": row.sdpa_bf16.median_s * 1e3,
        "sdpa_fp32_ms": row.sdpa_fp32.median_s * 1e3,
        "ours_tops": ours_tops,
        "sdpa_bf16_tops": bf16_tops,
        "sdpa_fp32_tops": fp32_tops,
        "speedup_vs_bf16": row.sdpa_bf16.median_s / row.ours.median_s if row.ours else None,
        "speedup_vs_fp32": row.sdpa_fp32.median_s / row.ours.median_s if row.ours else None,
        "pct_of_peak": (100.0 * ours_tops * 1e3 / peak_gops) if ours_tops and peak_gops else None,
        "cos_ours_vs_fp32": row.cos_ours_vs_fp32,
        "cos_sdpa_bf16_vs_fp32": row.cos_sdpa_bf16_vs_fp32,
    }


def results_table(rows: Sequence[RowResult], peak_gops: float | None) -> list[str]:
    header = ("| N | D | causal | ours ms | SDPA bf16 ms | SDPA fp32 ms | ours TOPS | "
              "SDPA bf16 TOPS | SDPA fp32 TOPS | × vs bf16 | × vs fp32 | % peak | "
              "cos ours | cos SDPA bf16 | reps |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for row in rows:
        m = row_metrics(row, peak_gops)
        reps = "/".join(str(len(t.samples_s)) for t in (row.ours, row.sdpa_bf16, row.sdpa_fp32) if t)
        lines.append(
            f"| {row.shape.seq_len} | {row.shape.head_dim} | {'yes' if row.shape.causal else 'no'} | "
            f"{fmt(m['ours_ms'], '.1f')} | {fmt(m['sdpa_bf16_ms'], '.1f')} | "
            f"{fmt(m['sdpa_fp32_ms'], '.1f')} | {fmt(m['ours_tops'], '.4f')} | "
            f"{fmt(m['sdpa_bf16_tops'], '.4f')} | {fmt(m['sdpa_fp32_tops'], '.4f')} | "
            f"{fmt(m['speedup_vs_bf16'], '.2f')} | {fmt(m['speedup_vs_fp32'], '.2f')} | "
            f"{fmt(m['pct_of_peak'], '.1f')} | {fmt(m['cos_ours_vs_fp32'], '.6f')} | "
            f"{fmt(m['cos_sdpa_bf16_vs_fp32'], '.6f')} | {reps} |")
    return lines


def peak_section(probes: Sequence[ProbeResult], model: PeakModel, machine: dict[str, Any],
                 threads: int) -> list[str]:
    thread_counts = sorted({t for p in probes for t in p.gops_by_threads})
    lines = ["## Peak (measured in this run)", ""]
    if not probes:
        lines += ["Peak probes unavailable (sageattention._lib lacks the probe API).", ""]
    else:
        head = "| probe | supported | " + " | ".join(f"GOPS x{t}" for t in thread_counts) + " |"
        lines += [head, "|" + "---|" * (2 + len(thread_counts))]
        for p in probes:
            cells = " | ".join(fmt(p.gops_by_threads.get(t), ".1f", "-") for t in thread_counts)
            lines.append(f"| `{p.kind}` | {'yes' if p.supported else 'no'} | {cells} |")
        lines.append("")
    lines.append(f"- Kernel path: **{model.isa_path}** ({model.note}).")
    if model.qk_probe and model.pv_probe:
        lines.append(f"- Probes used: QK = `{model.qk_probe}`, PV = `{model.pv_probe}`; recipe peak "
                     "= 2 / (1/P_qk + 1/P_pv).")
        for t, gops in sorted(model.peak_gops_by_threads.items()):
            lines.append(f"- Recipe peak with {t} thread(s): **{gops:.1f} GOPS** ({gops / 1e3:.4f} TOPS).")
    lines.append(f"- For comparison, DEVELOPERS.md nominal (Zen 4, AVX-512 VNNI+BF16, 2 cores): "
                 f"~{NOMINAL_ZEN4_AVX512_2CORE_GOPS:.0f} effective GOPS "
                 f"({NOMINAL_ZEN4_AVX512_2CORE_GOPS / 1e3:.1f} TOPS).")
    if not machine["has_avx512"]:
        lines.append("- **This machine has no AVX-512**: the nominal figure above does not apply "
                     "here; % of peak uses the probes measured on this machine.")
    lines.append(f"- Main table ran with {threads} thread(s).")
    return lines + [""]


def scaling_section(scaling: ScalingResult | None, peaks: dict[int, float]) -> list[str]:
    if scaling is None:
        return []
    shape = scaling.shape
    counts = sorted({t for per in scaling.timings.values() for t in per})
    lines = [f"## Thread scaling ({shape.label()})", "",
             "| impl | " + " | ".join(f"ms x{t}" for t in counts) + " | "
             + " | ".join(f"TOPS x{t}" for t in counts) + f" | speed-up x{counts[-1]} / x{counts[0]} |",
             "|" + "---|" * (2 + 2 * len(counts))]
    for name, per in scaling.timings.items():
        ms = " | ".join(fmt(per[t].median_s * 1e3, ".1f") for t in counts)
        tops = " | ".join(fmt(per[t].tops(shape), ".4f") for t in counts)
        ratio = per[counts[0]].median_s / per[counts[-1]].median_s
        lines.append(f"| {name} | {ms} | {tops} | {ratio:.2f} |")
    ours = scaling.timings.get("ours")
    if ours:
        pcts = [f"x{t}: {100 * ours[t].tops(shape) * 1e3 / peaks[t]:.1f}%" for t in counts if t in peaks]
        if pcts:
            lines += ["", "Ours, % of recipe peak at the same thread count: " + ", ".join(pcts) + "."]
    return lines + [""]


def memory_section(memory: Sequence[MemoryResult]) -> list[str]:
    if not memory:
        return []
    mib = 1024.0 * 1024.0
    lines = [f"## Peak extra memory (B=1, H={MEMORY_H}, N={MEMORY_N}, D={MEMORY_D}, non-causal)", "",
             "| impl | extra MiB | inputs MiB | output MiB | call s | note |", "|---|---|---|---|---|---|"]
    for m in memory:
        if not m.ok:
            lines.append(f"| {m.impl} | failed | | | | {m.detail.get('error', '')} |")
            continue
        d = m.detail
        note = "hwm rose" if d["hwm_rose_during_call"] else "polled only"
        lines.append(f"| {m.impl} | {d['extra_bytes'] / mib:.1f} | {d['inputs_bytes'] / mib:.1f} | "
                     f"{d['output_bytes'] / mib:.1f} | {d['seconds']:.2f} | {note} |")
    return lines + ["", f"Method: {MEMORY_METHOD}", ""]


def noise_line(noise: dict[str, Any] | None) -> str:
    if not noise:
        return "- Other load: not measured"
    cores = noise["foreign_busy_cores"]
    verdict = ("**noisy: timings unreliable**" if cores > NOISY_FOREIGN_CORES else "quiet")
    load = noise.get("loadavg_start")
    load_text = f"; load average at start {load[0]:.2f}" if load else ""
    return (f"- Other load: other processes used {cores:.2f} cores on average during the "
            f"{noise['wall_s']:.0f} s run ({verdict}){load_text}")


def write_markdown(path: Path, command: str, machine: dict[str, Any], settings: Settings,
                   rows: Sequence[RowResult], probes: Sequence[ProbeResult], model: PeakModel,
                   scaling: ScalingResult | None, memory: Sequence[MemoryResult]) -> None:
    peak = model.peak_gops_by_threads.get(settings.threads)
    lines = [
        "# sageattention CPU benchmark", "",
        f"- Date: {_dt.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- Command: `{command}`",
        f"- CPU: {machine['cpu_model']} ({machine['cpu_family_model']}), "
        f"{machine['logical_cpus']} logical CPUs, {machine['physical_cores'] or '?'} physical cores",
        f"- Relevant CPU flags: {', '.join(machine['cpu_flags_relevant']) or 'none'}"
        f"{'' if machine['has_avx512'] else ' (no AVX-512)'}",
        f"- torch {machine['torch']}, sageattention {machine['sageattention'] or 'not loaded'}, "
        f"Python {machine['python']}",
        f"- sageattention ISA path: {machine['isa_path'] or 'n/a (cpu_isa() not exposed)'}",
        f"- Threads: {settings.threads} (torch.set_num_threads; sageattn follows torch.get_num_threads())",
        noise_line(machine.get("noise")),
        "",
        *peak_section(probes, model, machine, settings.threads),
        f"## Attention (B={BATCH}, H={HEADS}; effective TOPS = 4·B·H·N²·D / time, halved when causal)", "",
        *results_table(rows, peak),
        "",
        "Times are medians after warm-up; `reps` = measured calls for ours/SDPA bf16/SDPA fp32. "
        "`cos` = cosine similarity against SDPA fp32 on the same (bf16-valued) inputs.",
        "",
        *scaling_section(scaling, model.peak_gops_by_threads),
        *memory_section(memory),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_json(path: Path, command: str, machine: dict[str, Any], settings: Settings,
               rows: Sequence[RowResult], probes: Sequence[ProbeResult], model: PeakModel,
               scaling: ScalingResult | None, memory: Sequence[MemoryResult]) -> None:
    peak = model.peak_gops_by_threads.get(settings.threads)
    payload = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": command,
        "machine": machine,
        "settings": {**asdict(settings), "out_dir": str(settings.out_dir)},
        "nominal_zen4_avx512_2core_gops": NOMINAL_ZEN4_AVX512_2CORE_GOPS,
        "probes": [asdict(p) for p in probes],
        "peak_model": asdict(model),
        "rows": [{"shape": asdict(r.shape), "threads": r.threads, "effective_ops": r.shape.effective_ops(),
                  "ours": asdict(r.ours) if r.ours else None, "sdpa_bf16": asdict(r.sdpa_bf16),
                  "sdpa_fp32": asdict(r.sdpa_fp32), **row_metrics(r, peak)} for r in rows],
        "scaling": None if scaling is None else {
            "shape": asdict(scaling.shape),
            "timings": {name: {str(t): asdict(tm) for t, tm in per.items()}
                        for name, per in scaling.timings.items()}},
        "memory": {"method": MEMORY_METHOD, "results": [asdict(m) for m in memory]},
    }
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


def write_plot(path: Path, rows: Sequence[RowResult], settings: Settings) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("warning: matplotlib is not installed; skipping the plot", file=sys.stderr)
        return False
    combos = [(d, c) for d in HEAD_DIMS for c in CAUSAL_MODES]
    fig, axes = plt.subplots(len(HEAD_DIMS), len(CAUSAL_MODES), figsize=(11, 8), squeeze=False)
    series = (("ours (sageattn, bf16 in)", lambda r: r.ours.tops(r.shape) if r.ours else None),
              ("SDPA bf16", lambda r: r.sdpa_bf16.tops(r.shape)),
              ("SDPA fp32", lambda r: r.sdpa_fp32.tops(r.shape)))
    for (d, causal), ax in zip(combos, axes.flat, strict=False):
        subset = sorted((r for r in rows if r.shape.head_dim == d and r.shape.causal == causal),
                        key=lambda r: r.shape.seq_len)
        for label, getter in series:
            points = [(r.shape.seq_len, getter(r)) for r in subset if getter(r) is not None]
            if points:
                xs, ys = zip(*points, strict=False)
                ax.plot(xs, ys, marker="o", label=label)
        ax.set_xscale("log", base=2)
        ax.set_title(f"D={d}, {'causal' if causal else 'non-causal'}")
        ax.set_xlabel("N (sequence length)")
        ax.set_ylabel("effective TOPS")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"CPU attention, B={BATCH} H={HEADS}, {settings.threads} thread(s)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


# ---------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: N=1024 only, 1 rep, no memory probe")
    parser.add_argument("--large", action="store_true", help="also N=16384 and N=32768 (slow)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default bench/results)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="threads for the main table (default: all logical CPUs)")
    parser.add_argument("--probe-seconds", type=float, default=None,
                        help="seconds per peak probe (default 1.0, --quick 0.25)")
    parser.add_argument("--min-reps", type=int, default=3, help="minimum measured calls per figure")
    parser.add_argument("--max-reps", type=int, default=10, help="maximum measured calls per figure")
    parser.add_argument("--budget", type=float, default=3.0,
                        help="target seconds of measured calls per figure (more reps for fast shapes)")
    parser.add_argument("--long-run", type=float, default=20.0,
                        help="calls longer than this many seconds are measured once after warm-up")
    parser.add_argument("--sdpa-only", action="store_true",
                        help="time SDPA only (no sageattention import); for checking the harness")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--_memory-child", dest="memory_child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error("--threads must be >= 1")
    if args.min_reps < 1 or args.max_reps < args.min_reps:
        parser.error("need 1 <= --min-reps <= --max-reps")
    return args


def settings_from(args: argparse.Namespace) -> Settings:
    probe_seconds = args.probe_seconds if args.probe_seconds is not None else (0.25 if args.quick else 1.0)
    return Settings(threads=args.threads, quick=args.quick, large=args.large, out_dir=args.out,
                    probe_seconds=probe_seconds, min_reps=args.min_reps, max_reps=args.max_reps,
                    budget_s=args.budget, long_run_s=args.long_run, sdpa_only=args.sdpa_only,
                    no_memory=args.no_memory, seed=args.seed)


def main_shapes(settings: Settings) -> list[Shape]:
    if settings.quick:
        seq_lens: tuple[int, ...] = QUICK_SEQ_LENS
    else:
        seq_lens = SEQ_LENS + (LARGE_SEQ_LENS if settings.large else ())
    return [Shape(BATCH, HEADS, n, d, c) for d in HEAD_DIMS for c in CAUSAL_MODES for n in seq_lens]


def load_package(settings: Settings) -> tuple[ModuleType | None, ModuleType | None]:
    """(sageattention, sageattention._lib); both None with --sdpa-only."""
    if settings.sdpa_only:
        return None, None
    import sageattention as sage

    lib: ModuleType | None
    try:
        from sageattention import _lib as lib
    except ImportError:
        lib = None
    return sage, lib


def thread_counts_for(settings: Settings) -> list[int]:
    return sorted({1, settings.threads})


def run(settings: Settings, command: str) -> int:
    sage, lib = load_package(settings)
    probe_lib = probe_api(lib)
    if probe_lib is None and not settings.sdpa_only:
        warnings.warn("sageattention._lib has no peak-probe API; % of peak will be n/a", stacklevel=1)
    torch.set_num_threads(settings.threads)
    shapes = main_shapes(settings)
    thread_counts = thread_counts_for(settings)
    impls_per_shape = 2 + (sage is not None)
    memory_impls: list[str] = []
    if not (settings.quick or settings.no_memory):
        memory_impls = (["ours"] if sage is not None else []) + ["sdpa_bf16"]
    n_probe_steps = len(probe_lib.peak_probe_kinds()) * len(thread_counts) if probe_lib else 0
    total = (n_probe_steps + len(shapes) * impls_per_shape
             + len(thread_counts) * impls_per_shape + len(memory_impls))
    progress = Progress(total)
    cpu_start = CpuSnapshot.take()
    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None

    machine = machine_info(lib, sage)
    probes = run_probes(probe_lib, thread_counts, settings.probe_seconds, progress) if probe_lib else []
    supported = {p.kind: p.supported for p in probes}
    model = choose_peak_model(supported, machine["isa_path"])
    fill_peaks(model, probes)

    rows: list[RowResult] = []
    for shape in shapes:
        rows.append(bench_shape(shape, settings, sage, rows, progress))
    scaling_n = SCALING_N_QUICK if settings.quick else SCALING_N
    scaling = bench_scaling(Shape(BATCH, HEADS, scaling_n, SCALING_D, False), thread_counts,
                            settings, sage, rows, progress)
    memory = [bench_memory(impl, settings.threads, progress) for impl in memory_impls]
    progress.close()
    machine["noise"] = {**foreign_cpu_load(cpu_start, CpuSnapshot.take()),
                        "loadavg_start": load_start,
                        "loadavg_end": os.getloadavg() if hasattr(os, "getloadavg") else None}
    if machine["noise"]["foreign_busy_cores"] > NOISY_FOREIGN_CORES:
        print(f"warning: other processes kept {machine['noise']['foreign_busy_cores']:.2f} cores busy "
              "on average during the run; timings are unreliable", file=sys.stderr)

    settings.out_dir.mkdir(parents=True, exist_ok=True)
    md_path = settings.out_dir / "cpu.md"
    json_path = settings.out_dir / "cpu.json"
    png_path = settings.out_dir / "cpu_tops.png"
    args = (command, machine, settings, rows, probes, model, scaling, memory)
    write_markdown(md_path, *args)
    write_json(json_path, *args)
    plotted = write_plot(png_path, rows, settings)
    print(md_path.read_text(encoding="utf-8"))
    print(f"wrote {md_path}, {json_path}" + (f", {png_path}" if plotted else ""), file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child, MEMORY_N, MEMORY_H, MEMORY_D, args.threads)))
        return 0
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    return run(settings_from(args), command)


if __name__ == "__main__":
    sys.exit(main())
