#!/usr/bin/env python3
"""CPU benchmark: ``sageattention.sageattn`` against ``torch`` SDPA in bf16 and fp32.

Run ``python bench/bench_cpu.py --help``; bench/README.md explains every column and how
each path's ceiling is derived. Everything runs in one process with one thread count
(``torch.set_num_threads``), except the peak-memory probe (bench/memory.py, one fresh
subprocess per call). Timing, op counts and cosine come from ``sageattention._timing``,
the code ``python -m sageattention bench`` uses too.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import shlex
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import torch.nn.functional as F

import ceilings
import machine as machine_mod
import memory
import native
import stages
from sageattention._timing import Progress, RepPolicy, Shape, Timing, cosine, make_inputs, measure

# ---------------------------------------------------------------------------
# What is measured
# ---------------------------------------------------------------------------

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
BATCH = 1
HEADS = 8
HEAD_DIMS = (64, 128)
SEQ_LENS = (1024, 4096, 8192)
LARGE_SEQ_LENS = (16384, 32768)
QUICK_SEQ_LENS = (1024,)
CAUSAL_MODES = (False, True)
# P·V modes, each a row of the main table: the fp8 default and the opt-in int8 mode
# (sageattn(..., pv_quant_dtype="int8")); a mode this build lacks is shown as n/a.
PV_MODES = ("fp8", "int8")

SCALING_N, SCALING_N_QUICK, SCALING_D = 8192, 4096, 128
# Shapes whose time is split into stages (quantize, pack, Q·K, softmax, P·V).
STAGE_SHAPES = ((8192, 128), (8192, 64))
STAGE_SHAPES_QUICK = ((1024, 64),)
TILE_HARNESS_ITERS, TILE_HARNESS_ITERS_QUICK = 200, 20


# ---------------------------------------------------------------------------
# Data model
# ---------------------------------------------------------------------------


@dataclass
class RowResult:
    shape: Shape
    threads: int
    ours: dict[str, Timing]  # P·V mode -> timing; modes this build lacks are absent
    sdpa_bf16: Timing
    sdpa_fp32: Timing
    cos_ours_vs_fp32: dict[str, float]
    cos_sdpa_bf16_vs_fp32: float


@dataclass
class ScalingResult:
    shape: Shape
    timings: dict[str, dict[int, Timing]]  # impl -> threads -> timing


@dataclass
class Settings:
    threads: int
    quick: bool
    large: bool
    out_dir: Path
    probe_seconds: float
    probe_repeats: int
    min_reps: int
    max_reps: int
    budget_s: float
    long_run_s: float
    sdpa_only: bool
    no_memory: bool
    no_stages: bool
    seed: int

    def policy(self) -> RepPolicy:
        return RepPolicy(min_reps=self.min_reps, max_reps=self.max_reps, budget_s=self.budget_s,
                         long_run_s=self.long_run_s, single=self.quick)


@dataclass
class PvSupport:
    """Which P·V modes this build of sageattention runs, and why not where it does not."""

    keyword: bool  # sageattn takes pv_quant_dtype
    missing: dict[str, str] = field(default_factory=dict)  # mode -> reason

    def modes(self) -> list[str]:
        return [m for m in PV_MODES if m not in self.missing]


# ---------------------------------------------------------------------------
# Implementations under test
# ---------------------------------------------------------------------------


def run_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal)


def ours_call(sage: ModuleType, support: PvSupport, pv_mode: str, q: torch.Tensor, k: torch.Tensor,
              v: torch.Tensor, causal: bool) -> Callable[[], torch.Tensor]:
    # The mode is passed explicitly when the build knows the keyword, so that a
    # SAGEATTN_CPU_PV in the environment cannot relabel a row.
    extra = {"pv_quant_dtype": pv_mode} if support.keyword else {}
    return lambda: sage.sageattn(q, k, v, tensor_layout="HND", is_causal=causal, **extra)


def detect_pv_support(sage: ModuleType | None) -> PvSupport:
    """An option of ours with a bad value raises, while an unknown option is ignored (as
    upstream): so a bogus pv_quant_dtype tells whether this build has the keyword."""
    if sage is None:
        return PvSupport(False, {m: "sageattention not loaded (--sdpa-only)" for m in PV_MODES})
    x = torch.randn((1, 1, 64, 64)).to(torch.bfloat16)
    try:
        sage.sageattn(x, x, x, pv_quant_dtype="not-a-mode")
    except (ValueError, TypeError):
        keyword = True
    else:
        return PvSupport(False, {m: "this build has no pv_quant_dtype keyword" for m in PV_MODES if m != "fp8"})
    support = PvSupport(keyword)
    for mode in PV_MODES:
        try:
            sage.sageattn(x, x, x, pv_quant_dtype=mode)
        except Exception as exc:  # report, do not abort the benchmark
            support.missing[mode] = f"pv_quant_dtype={mode!r} failed: {exc}"
    return support


def impl_name(pv_mode: str) -> str:
    return f"ours_{pv_mode}"


def row_timing(row: RowResult, impl: str) -> Timing | None:
    if impl.startswith("ours_"):
        return row.ours.get(impl[len("ours_"):])
    return {"sdpa_bf16": row.sdpa_bf16, "sdpa_fp32": row.sdpa_fp32}[impl]


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


def bench_shape(shape: Shape, settings: Settings, sage: ModuleType | None, support: PvSupport,
                earlier: Sequence[RowResult], progress: Progress) -> RowResult:
    q, k, v = make_inputs(shape, settings.seed)
    q32, k32, v32 = q.float(), k.float(), v.float()
    box: dict[str, torch.Tensor] = {}

    def timed(impl: str, fn: Callable[[], torch.Tensor]) -> Timing:
        progress.describe(f"{impl} {shape.label()}")
        timing = measure(lambda: box.__setitem__(impl, fn()), settings.policy(),
                         predict_seconds(impl, shape, earlier))
        progress.step()
        return timing

    ours: dict[str, Timing] = {}
    if sage is not None:
        for mode in support.modes():
            ours[mode] = timed(impl_name(mode), ours_call(sage, support, mode, q, k, v, shape.causal))
    bf16_timing = timed("sdpa_bf16", lambda: run_sdpa(q, k, v, shape.causal))
    fp32_timing = timed("sdpa_fp32", lambda: run_sdpa(q32, k32, v32, shape.causal))

    reference = box["sdpa_fp32"]
    return RowResult(
        shape=shape, threads=torch.get_num_threads(), ours=ours, sdpa_bf16=bf16_timing,
        sdpa_fp32=fp32_timing,
        cos_ours_vs_fp32={mode: cosine(box[impl_name(mode)], reference) for mode in ours},
        cos_sdpa_bf16_vs_fp32=cosine(box["sdpa_bf16"], reference),
    )


# ---------------------------------------------------------------------------
# Thread scaling
# ---------------------------------------------------------------------------


def bench_scaling(shape: Shape, thread_counts: Sequence[int], settings: Settings,
                  sage: ModuleType | None, support: PvSupport, rows: Sequence[RowResult],
                  progress: Progress) -> ScalingResult:
    """Times `shape` at each thread count; reuses the main table's figures where it has them."""
    reused = next((r for r in rows if r.shape == shape), None)
    q, k, v = make_inputs(shape, settings.seed)
    q32, k32, v32 = q.float(), k.float(), v.float()
    impls: dict[str, Callable[[], Any]] = {}
    if sage is not None:
        for mode in support.modes():
            impls[impl_name(mode)] = ours_call(sage, support, mode, q, k, v, shape.causal)
    impls["sdpa_bf16"] = lambda: run_sdpa(q, k, v, shape.causal)
    impls["sdpa_fp32"] = lambda: run_sdpa(q32, k32, v32, shape.causal)
    timings: dict[str, dict[int, Timing]] = {name: {} for name in impls}
    saved_threads = torch.get_num_threads()
    try:
        for threads in thread_counts:
            torch.set_num_threads(threads)
            for name, fn in impls.items():
                progress.describe(f"scaling {name} x{threads}")
                known = row_timing(reused, name) if reused else None
                if threads == settings.threads and known is not None:
                    timings[name][threads] = known
                else:
                    # Assumes linear scaling, which is what decides "long" anyway.
                    predicted = known.median_s * settings.threads / threads if known else None
                    timings[name][threads] = measure(fn, settings.policy(), predicted)
                progress.step()
    finally:
        torch.set_num_threads(saved_threads)
    return ScalingResult(shape=shape, timings=timings)


# ---------------------------------------------------------------------------
# Stage split
# ---------------------------------------------------------------------------


def quantize_call(sage: ModuleType, pv_mode: str, q: torch.Tensor, k: torch.Tensor,
                  v: torch.Tensor) -> Callable[[], Any] | None:
    """The package's quantizers on the call's inputs, or None when this build cannot
    quantize V for `pv_mode` through ops.quantize_v."""
    qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))  # HND -> the (B, N, H, D) ops take
    v_kwargs: dict[str, Any] = {} if pv_mode == "fp8" else {"dtype": pv_mode}
    try:
        sage.ops.quantize_v(vt[:, :1], **v_kwargs)
    except (TypeError, ValueError, NotImplementedError):
        return None

    def run() -> None:
        sage.ops.quantize_qk(qt, kt)
        sage.ops.quantize_v(vt, **v_kwargs)
    return run


def bench_stages(settings: Settings, sage: ModuleType, support: PvSupport, isa_path: str | None,
                 rows: Sequence[RowResult], progress: Progress
                 ) -> tuple[list[stages.StageSplit], dict[int, str], str | None]:
    """(splits, raw harness output per head dim, why the harness is unavailable)."""
    shapes = [Shape(BATCH, HEADS, n, d, False) for n, d in (STAGE_SHAPES_QUICK if settings.quick else STAGE_SHAPES)]
    progress.describe("building the C++ tile harness")
    harness = native.build_tile_harness()
    unavailable = harness.reason if isinstance(harness, native.Unavailable) else None
    raw: dict[int, str] = {}
    parsed: dict[int, dict[str, dict[str, float]]] = {}
    for d in sorted({s.head_dim for s in shapes}):
        if unavailable is None:
            progress.describe(f"tile harness D={d}")
            try:
                iters = TILE_HARNESS_ITERS_QUICK if settings.quick else TILE_HARNESS_ITERS
                raw[d], parsed[d] = native.run_tile_harness(harness, d, iters)  # type: ignore[arg-type]
            except (OSError, RuntimeError, ValueError) as exc:
                unavailable = f"tile harness failed: {exc}"
        progress.step()
    splits = []
    for shape in shapes:
        q, k, v = make_inputs(shape, settings.seed)
        reused = next((r for r in rows if r.shape == shape), None)
        for mode in support.modes():
            progress.describe(f"stages {mode} {shape.label()}")
            call = row_timing(reused, impl_name(mode)) if reused else None
            if call is None:
                call = measure(ours_call(sage, support, mode, q, k, v, shape.causal), settings.policy())
            quantize = quantize_call(sage, mode, q, k, v)
            quantize_ms = measure(quantize, settings.policy()).median_s * 1e3 if quantize else None
            tile = (stages.tile_costs(parsed[shape.head_dim], isa_path, shape.head_dim, mode)
                    if isa_path and shape.head_dim in parsed else None)
            splits.append(stages.StageSplit(shape.label(), shape.seq_len, mode, settings.threads, call.median_s * 1e3,
                                            quantize_ms, tile))
            progress.step()
    return splits, raw, unavailable


# ---------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------


def fmt(value: float | None, spec: str = ".3f", na: str = "n/a") -> str:
    return na if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def ceiling_at(path_ceilings: dict[str, ceilings.Ceiling], mode: str, threads: int) -> float | None:
    ceiling = path_ceilings.get(mode)
    return ceiling.gops_by_threads.get(threads) if ceiling else None


def row_metrics(row: RowResult, mode: str, ceiling_gops: float | None) -> dict[str, float | None]:
    ours = row.ours.get(mode)
    ours_tops = ours.tops(row.shape) if ours else None
    return {
        "ours_ms": ours.median_s * 1e3 if ours else None,
        "sdpa_bf16_ms": row.sdpa_bf16.median_s * 1e3,
        "sdpa_fp32_ms": row.sdpa_fp32.median_s * 1e3,
        "ours_tops": ours_tops,
        "sdpa_bf16_tops": row.sdpa_bf16.tops(row.shape),
        "sdpa_fp32_tops": row.sdpa_fp32.tops(row.shape),
        "speedup_vs_bf16": row.sdpa_bf16.median_s / ours.median_s if ours else None,
        "speedup_vs_fp32": row.sdpa_fp32.median_s / ours.median_s if ours else None,
        "ceiling_gops": ceiling_gops,
        "pct_of_ceiling": (100.0 * ours_tops * 1e3 / ceiling_gops) if ours_tops and ceiling_gops else None,
        "cos_ours_vs_fp32": row.cos_ours_vs_fp32.get(mode),
        "cos_sdpa_bf16_vs_fp32": row.cos_sdpa_bf16_vs_fp32,
    }


def results_table(rows: Sequence[RowResult], path_ceilings: dict[str, ceilings.Ceiling],
                  support: PvSupport, threads: int) -> list[str]:
    header = ("| N | D | causal | P·V | ours ms | SDPA bf16 ms | SDPA fp32 ms | ours TOPS | "
              "SDPA bf16 TOPS | SDPA fp32 TOPS | × vs bf16 | × vs fp32 | % ceiling | "
              "cos ours | cos SDPA bf16 | reps |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for row in rows:
        for mode in PV_MODES:
            s = row.shape
            lead = f"| {s.seq_len} | {s.head_dim} | {'yes' if s.causal else 'no'} | {mode} |"
            m = row_metrics(row, mode, ceiling_at(path_ceilings, mode, threads))
            reps = "/".join(str(len(t.samples_s)) for t in (row.ours.get(mode), row.sdpa_bf16, row.sdpa_fp32) if t)
            lines.append(
                f"{lead} {fmt(m['ours_ms'], '.1f')} | {fmt(m['sdpa_bf16_ms'], '.1f')} | "
                f"{fmt(m['sdpa_fp32_ms'], '.1f')} | {fmt(m['ours_tops'], '.4f')} | "
                f"{fmt(m['sdpa_bf16_tops'], '.4f')} | {fmt(m['sdpa_fp32_tops'], '.4f')} | "
                f"{fmt(m['speedup_vs_bf16'], '.2f')} | {fmt(m['speedup_vs_fp32'], '.2f')} | "
                f"{fmt(m['pct_of_ceiling'], '.1f')} | {fmt(m['cos_ours_vs_fp32'], '.6f')} | "
                f"{fmt(m['cos_sdpa_bf16_vs_fp32'], '.6f')} | {reps} |")
    notes = [f"- P·V {mode}: n/a, {why}." for mode, why in support.missing.items()]
    return lines + ([""] + notes if notes else [])


def ceiling_section(probes: Sequence[ceilings.ProbeResult], probe_problem: str | None,
                    path_ceilings: dict[str, ceilings.Ceiling], isa_path: str | None,
                    settings: Settings) -> list[str]:
    thread_counts = sorted({t for p in probes for t in p.samples_by_threads})
    lines = ["## Ceilings (probed in this run)", ""]
    if probe_problem:
        lines += [f"Peak probes unavailable: {probe_problem}. % ceiling is n/a.", ""]
    else:
        lines += [f"Each probe ran {settings.probe_repeats}× for {settings.probe_seconds:g} s at each "
                  "thread count, round-robin; the figure is the best run (a busy machine only reads low).",
                  "",
                  "| probe | supported | " + " | ".join(f"GOPS x{t}" for t in thread_counts) + " | runs |",
                  "|" + "---|" * (3 + len(thread_counts))]
        for p in probes:
            cells = " | ".join(fmt(p.gops(t), ".1f", "-") for t in thread_counts)
            runs = "; ".join("x{}: {}".format(t, ", ".join(f"{g:.0f}" for g in p.samples_by_threads[t]))
                             for t in thread_counts if t in p.samples_by_threads)
            status = "yes" if p.supported else "no"
            if p.error:
                status += f" (error: {p.error})"
            lines.append(f"| `{p.kind}` | {status} | {cells} | {runs} |")
        lines.append("")
    lines.append(f"Kernel ISA path: **{isa_path or 'unknown'}**. A path's ceiling = 2 / (1/P_qk + 1/P_pv), "
                 "P_qk and P_pv the probes of the units its Q·Kᵀ and P·V run on (bench/ceilings.py):")
    lines += ["", "| P·V mode | Q·Kᵀ unit | P·V unit | " + " | ".join(f"ceiling GOPS x{t}" for t in thread_counts) + " |",
              "|" + "---|" * (3 + len(thread_counts))]
    for mode, c in path_ceilings.items():
        cells = " | ".join(fmt(c.gops_by_threads.get(t), ".1f") for t in thread_counts)
        lines.append(f"| {mode} | {f'`{c.qk_probe}`' if c.qk_probe else 'n/a'} | "
                     f"{f'`{c.pv_probe}`' if c.pv_probe else 'n/a'} | {cells} |")
    notes = [f"- {mode}: {c.note}." for mode, c in path_ceilings.items() if not c.gops_by_threads]
    return lines + ([""] + notes if notes else []) + [""]


def scaling_section(scaling: ScalingResult | None, path_ceilings: dict[str, ceilings.Ceiling]) -> list[str]:
    if scaling is None:
        return []
    shape = scaling.shape
    counts = sorted({t for per in scaling.timings.values() for t in per})
    lines = [f"## Thread scaling ({shape.label()})", "",
             "| impl | " + " | ".join(f"ms x{t}" for t in counts) + " | "
             + " | ".join(f"TOPS x{t}" for t in counts) + f" | speed-up x{counts[-1]} / x{counts[0]} | "
             + " | ".join(f"% ceiling x{t}" for t in counts) + " |",
             "|" + "---|" * (2 + 3 * len(counts))]
    for name, per in scaling.timings.items():
        ms = " | ".join(fmt(per[t].median_s * 1e3, ".1f") for t in counts)
        tops = " | ".join(fmt(per[t].tops(shape), ".4f") for t in counts)
        ratio = per[counts[0]].median_s / per[counts[-1]].median_s
        ceiling = path_ceilings.get(name[len("ours_"):]) if name.startswith("ours_") else None
        pct = " | ".join(
            fmt(100 * per[t].tops(shape) * 1e3 / ceiling.gops_by_threads[t], ".1f")
            if ceiling and t in ceiling.gops_by_threads else "" for t in counts)
        lines.append(f"| {name} | {ms} | {tops} | {ratio:.2f} | {pct} |")
    return lines + [""]


def stage_section(splits: Sequence[stages.StageSplit], raw: dict[int, str], problem: str | None,
                  isa_path: str | None) -> list[str]:
    if not splits and not problem:
        return []
    lines = ["## Where the time goes", "",
             "quantize: measured (`sageattention.ops` quantizers on the call's inputs). The rest of "
             "the call is split by the per-tile costs of the C++ tile harness "
             f"(`tests/cpp/bench_tile_ops.cc`, {isa_path or '?'} path, one thread, thread CPU time): "
             "pack = K and V tile packing, weighted by how often the loop packs them "
             f"(once per {stages.QUERY_ROWS_PER_KV_PACK or 'all'} query rows, bench/stages.py), "
             "then Q·K, softmax, P·V. ms at the main table's thread count; a model, not a profile.",
             ""]
    if problem:
        lines += [f"Tile harness unavailable: {problem}; only quantize is split out.", ""]
    head = "| shape | P·V | call ms | " + " | ".join(f"{s} ms (%)" for s in ("quantize", *stages.TILE_STAGES)) + " |"
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for sp in splits:
        parts = sp.split_ms()
        cells = " | ".join(
            f"{v:.1f} ({100 * v / sp.call_ms:.0f}%)" if v is not None else "n/a" for v in parts.values())
        lines.append(f"| {sp.label} | {sp.pv_mode} | {sp.call_ms:.1f} | {cells} |")
    lines.append("")
    tiles = [sp.tile for sp in splits if sp.tile]
    if tiles:
        lines += ["Per 128×128 tile step (µs, one thread; pack = one K and one V tile, unweighted):", "",
                  "| D | P·V | " + " | ".join(stages.TILE_STAGES) + " |", "|" + "---|" * (2 + len(stages.TILE_STAGES))]
        seen = set()
        for t in tiles:
            if (t.head_dim, t.pv_mode) in seen:
                continue
            seen.add((t.head_dim, t.pv_mode))
            lines.append(f"| {t.head_dim} | {t.pv_mode} | " + " | ".join(f"{t.us[s]:.2f}" for s in stages.TILE_STAGES) + " |")
        lines.append("")
    for d, text in sorted(raw.items()):
        lines += [f"<details><summary>tile harness output, D={d}</summary>", "", "```", text.rstrip(), "```",
                  "", "</details>", ""]
    return lines


def memory_section(results: Sequence[memory.MemoryResult]) -> list[str]:
    if not results:
        return []
    mib = 1024.0 * 1024.0
    lines = [f"## Peak extra memory (B=1, H={memory.MEMORY_H}, N={memory.MEMORY_N}, D={memory.MEMORY_D}, "
             "non-causal)", "",
             "| impl | extra MiB | inputs MiB | output MiB | call s | note |", "|---|---|---|---|---|---|"]
    for m in results:
        if not m.ok:
            lines.append(f"| {m.impl} | failed | | | | {m.detail.get('error', '')} |")
            continue
        d = m.detail
        note = "hwm rose" if d["hwm_rose_during_call"] else "polled only"
        lines.append(f"| {m.impl} | {d['extra_bytes'] / mib:.1f} | {d['inputs_bytes'] / mib:.1f} | "
                     f"{d['output_bytes'] / mib:.1f} | {d['seconds']:.2f} | {note} |")
    return lines + ["", f"Method: {memory.MEMORY_METHOD}", ""]


def noise_line(noise: dict[str, Any] | None) -> str:
    if not noise:
        return "- Other load: not measured"
    cores = noise["foreign_busy_cores"]
    verdict = ("**noisy: timings unreliable**" if cores > machine_mod.NOISY_FOREIGN_CORES else "quiet")
    load = noise.get("loadavg_start")
    load_text = f"; load average at start {load[0]:.2f}" if load else ""
    return (f"- Other load: other processes used {cores:.2f} cores on average during the "
            f"{noise['wall_s']:.0f} s run ({verdict}){load_text}")


@dataclass
class Report:
    command: str
    machine: dict[str, Any]
    settings: Settings
    support: PvSupport
    rows: list[RowResult]
    probes: list[ceilings.ProbeResult]
    probe_problem: str | None
    path_ceilings: dict[str, ceilings.Ceiling]
    scaling: ScalingResult | None
    splits: list[stages.StageSplit]
    harness_raw: dict[int, str]
    harness_problem: str | None
    memory: list[memory.MemoryResult]


def cpu_identity(m: dict[str, Any]) -> str:
    """"Zen 4, family 25 model 17": the microarchitecture where it is known."""
    arch = m.get("cpu_microarch")
    return f"{arch}, {m['cpu_family_model']}" if arch else m["cpu_family_model"]


def write_markdown(path: Path, r: Report) -> None:
    m, s = r.machine, r.settings
    lines = [
        "# sageattention CPU benchmark", "",
        f"- Date: {_dt.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- Command: `{r.command}`",
        f"- CPU: {m['cpu_model']} ({cpu_identity(m)}), "
        f"{m['logical_cpus']} logical CPUs, {m['physical_cores'] or '?'} physical cores",
        f"- ISA flags: {', '.join(m['cpu_flags_relevant']) or 'none'}"
        f"{'' if m['has_avx512'] else ' (no AVX-512)'}",
        f"- torch {m['torch']}, sageattention {m['sageattention'] or 'not loaded'}, Python {m['python']}",
        f"- sageattention ISA path: {m['isa_path'] or 'n/a'}",
        f"- Threads: {s.threads} (torch.set_num_threads; sageattn follows torch.get_num_threads())",
        f"- P·V modes: {', '.join(r.support.modes()) or 'none'}"
        + (f" (n/a: {', '.join(r.support.missing)})" if r.support.missing else ""),
        noise_line(m.get("noise")),
        "",
        *ceiling_section(r.probes, r.probe_problem, r.path_ceilings, m["isa_path"], s),
        f"## Attention (B={BATCH}, H={HEADS}; effective TOPS = 4·B·H·N²·D / time, halved when causal)", "",
        *results_table(r.rows, r.path_ceilings, r.support, s.threads),
        "",
        "Times are medians after warm-up; `reps` = measured calls for ours/SDPA bf16/SDPA fp32. "
        "`cos` = cosine similarity against SDPA fp32 on the same (bf16-valued) inputs. "
        "`% ceiling` = ours as a share of its own path's ceiling at the same thread count.",
        "",
        *scaling_section(r.scaling, r.path_ceilings),
        *stage_section(r.splits, r.harness_raw, r.harness_problem, m["isa_path"]),
        *memory_section(r.memory),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_json(path: Path, r: Report) -> None:
    threads = r.settings.threads
    payload = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": r.command,
        "machine": r.machine,
        "settings": {**asdict(r.settings), "out_dir": str(r.settings.out_dir)},
        "pv_support": asdict(r.support),
        "probes": [asdict(p) for p in r.probes],
        "probe_problem": r.probe_problem,
        "ceiling_units": {f"{isa},{mode}": list(units) for (isa, mode), units in ceilings.CEILING_UNITS.items()},
        "ceilings": {mode: asdict(c) for mode, c in r.path_ceilings.items()},
        "rows": [{"shape": asdict(row.shape), "threads": row.threads, "effective_ops": row.shape.effective_ops(),
                  "ours": {mode: asdict(t) for mode, t in row.ours.items()},
                  "sdpa_bf16": asdict(row.sdpa_bf16), "sdpa_fp32": asdict(row.sdpa_fp32),
                  "metrics": {mode: row_metrics(row, mode, ceiling_at(r.path_ceilings, mode, threads))
                              for mode in row.ours}} for row in r.rows],
        "scaling": None if r.scaling is None else {
            "shape": asdict(r.scaling.shape),
            "timings": {name: {str(t): asdict(tm) for t, tm in per.items()}
                        for name, per in r.scaling.timings.items()}},
        "stages": [{**asdict(sp), "split_ms": sp.split_ms()} for sp in r.splits],
        "tile_harness": {"raw": {str(d): t for d, t in r.harness_raw.items()}, "problem": r.harness_problem},
        "memory": {"method": memory.MEMORY_METHOD, "results": [asdict(m) for m in r.memory]},
    }
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


def write_plot(path: Path, rows: Sequence[RowResult], threads: int, cpu: str) -> bool:
    """The TOPS figure; its title names the CPU the rows were measured on."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("warning: matplotlib is not installed; skipping the plot", file=sys.stderr)
        return False
    combos = [(d, c) for d in HEAD_DIMS for c in CAUSAL_MODES]
    fig, axes = plt.subplots(len(HEAD_DIMS), len(CAUSAL_MODES), figsize=(11, 8), squeeze=False)
    series: list[tuple[str, Callable[[RowResult], float | None]]] = [
        (f"ours, P·V {mode} (bf16 in)", lambda r, mode=mode: r.ours[mode].tops(r.shape) if mode in r.ours else None)
        for mode in PV_MODES]
    series += [("SDPA bf16", lambda r: r.sdpa_bf16.tops(r.shape)),
               ("SDPA fp32", lambda r: r.sdpa_fp32.tops(r.shape))]
    for (d, causal), ax in zip(combos, axes.flat):
        subset = sorted((r for r in rows if r.shape.head_dim == d and r.shape.causal == causal),
                        key=lambda r: r.shape.seq_len)
        for label, getter in series:
            points = [(r.shape.seq_len, getter(r)) for r in subset if getter(r) is not None]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, marker="o", label=label)
        ax.set_xscale("log", base=2)
        ax.set_title(f"D={d}, {'causal' if causal else 'non-causal'}")
        ax.set_xlabel("N (sequence length)")
        ax.set_ylabel("effective TOPS")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"CPU attention on {cpu}, B={BATCH} H={HEADS}, {threads} thread(s)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


# ---------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: N=1024 only, 1 rep, probes once for 0.25 s, no memory probe")
    parser.add_argument("--large", action="store_true", help="also N=16384 and N=32768 (slow)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default bench/results)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="threads for the main table (default: all logical CPUs)")
    parser.add_argument("--probe-seconds", type=float, default=None,
                        help="seconds per peak probe run (default 1.0, --quick 0.25)")
    parser.add_argument("--probe-repeats", type=int, default=None,
                        help="runs per probe and thread count, best kept (default 3, --quick 1)")
    parser.add_argument("--min-reps", type=int, default=3, help="minimum measured calls per figure")
    parser.add_argument("--max-reps", type=int, default=10, help="maximum measured calls per figure")
    parser.add_argument("--budget", type=float, default=3.0,
                        help="target seconds of measured calls per figure (more reps for fast shapes)")
    parser.add_argument("--long-run", type=float, default=20.0,
                        help="calls longer than this many seconds are measured once after warm-up")
    parser.add_argument("--sdpa-only", action="store_true",
                        help="time SDPA only (sageattn is not called); for checking the harness")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--no-stages", action="store_true",
                        help="skip the stage split (and the build of the C++ tile harness)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error("--threads must be >= 1")
    if args.min_reps < 1 or args.max_reps < args.min_reps:
        parser.error("need 1 <= --min-reps <= --max-reps")
    if args.probe_seconds is not None and not 0 < args.probe_seconds <= 60:
        parser.error("--probe-seconds must be in (0, 60]")
    if args.probe_repeats is not None and args.probe_repeats < 1:
        parser.error("--probe-repeats must be >= 1")
    if not (args.budget > 0 and args.long_run > 0):
        parser.error("--budget and --long-run must be positive")
    return args


def settings_from(args: argparse.Namespace) -> Settings:
    probe_seconds = args.probe_seconds if args.probe_seconds is not None else (0.25 if args.quick else 1.0)
    probe_repeats = args.probe_repeats if args.probe_repeats is not None else (1 if args.quick else 3)
    return Settings(threads=args.threads, quick=args.quick, large=args.large, out_dir=args.out,
                    probe_seconds=probe_seconds, probe_repeats=probe_repeats, min_reps=args.min_reps,
                    max_reps=args.max_reps, budget_s=args.budget, long_run_s=args.long_run,
                    sdpa_only=args.sdpa_only, no_memory=args.no_memory, no_stages=args.no_stages,
                    seed=args.seed)


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
    from sageattention import _lib as lib

    return sage, lib


def run(settings: Settings, command: str) -> int:
    sage, lib = load_package(settings)
    torch.set_num_threads(settings.threads)
    support = detect_pv_support(sage)
    machine = machine_mod.machine_info(lib, sage)
    isa_path = machine["isa_path"]
    thread_counts = sorted({1, settings.threads})

    probe_lib = native.load_probes()
    probe_problem = probe_lib.reason if isinstance(probe_lib, native.Unavailable) else None
    if probe_problem:
        warnings.warn(f"{probe_problem}; % ceiling will be n/a", stacklevel=1)

    shapes = main_shapes(settings)
    impls_per_shape = 2 + len(support.modes())
    memory_impls: list[str] = []
    if not (settings.quick or settings.no_memory):
        memory_impls = (["ours"] if sage is not None else []) + ["sdpa_bf16"]
    stage_shapes = STAGE_SHAPES_QUICK if settings.quick else STAGE_SHAPES
    run_stages = sage is not None and not settings.no_stages
    n_probe_steps = 0 if probe_problem else (
        len(probe_lib.kinds()) * len(thread_counts) * settings.probe_repeats)  # type: ignore[union-attr]
    n_stage_steps = (len({d for _, d in stage_shapes}) + len(stage_shapes) * len(support.modes())) if run_stages else 0
    total = (n_probe_steps + len(shapes) * impls_per_shape + len(thread_counts) * impls_per_shape
             + n_stage_steps + len(memory_impls))
    progress = Progress(total)
    cpu_start = machine_mod.CpuSnapshot.take()
    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None

    def probe_step(text: str) -> None:
        progress.describe(text)
        progress.step()

    probes = [] if probe_problem else ceilings.run_probes(
        probe_lib, thread_counts, settings.probe_seconds, settings.probe_repeats, probe_step)  # type: ignore[arg-type]
    path_ceilings = ceilings.ceilings_for(isa_path or "unknown", PV_MODES, probes)

    rows: list[RowResult] = []
    for shape in shapes:
        rows.append(bench_shape(shape, settings, sage, support, rows, progress))
    scaling_n = SCALING_N_QUICK if settings.quick else SCALING_N
    scaling = bench_scaling(Shape(BATCH, HEADS, scaling_n, SCALING_D, False), thread_counts,
                            settings, sage, support, rows, progress)
    splits: list[stages.StageSplit] = []
    harness_raw: dict[int, str] = {}
    harness_problem: str | None = None if run_stages else "skipped (--no-stages or --sdpa-only)"
    if run_stages:
        splits, harness_raw, harness_problem = bench_stages(settings, sage, support, isa_path, rows, progress)  # type: ignore[arg-type]
    memory_results = [memory.bench_memory(impl, settings.threads, progress) for impl in memory_impls]
    progress.close()
    machine["noise"] = {**machine_mod.foreign_cpu_load(cpu_start, machine_mod.CpuSnapshot.take()),
                        "loadavg_start": load_start,
                        "loadavg_end": os.getloadavg() if hasattr(os, "getloadavg") else None}
    if machine["noise"]["foreign_busy_cores"] > machine_mod.NOISY_FOREIGN_CORES:
        print(f"warning: other processes kept {machine['noise']['foreign_busy_cores']:.2f} cores busy "
              "on average during the run; timings are unreliable", file=sys.stderr)

    report = Report(command, machine, settings, support, rows, probes, probe_problem, path_ceilings, scaling,
                    splits, harness_raw, harness_problem, memory_results)
    settings.out_dir.mkdir(parents=True, exist_ok=True)
    md_path = settings.out_dir / "cpu.md"
    json_path = settings.out_dir / "cpu.json"
    png_path = settings.out_dir / "cpu_tops.png"
    write_markdown(md_path, report)
    write_json(json_path, report)
    plotted = write_plot(png_path, rows, settings.threads, f"{machine['cpu_model']} ({cpu_identity(machine)})")
    print(md_path.read_text(encoding="utf-8"))
    print(f"wrote {md_path}, {json_path}" + (f", {png_path}" if plotted else ""), file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    return run(settings_from(args), command)


if __name__ == "__main__":
    sys.exit(main())
