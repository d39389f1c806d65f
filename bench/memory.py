"""Peak extra memory of one attention call, each implementation in a fresh subprocess.

Run by bench_cpu.py; the child is this file: ``python bench/memory.py IMPL THREADS``.
"""
from __future__ import annotations

import importlib
import json
import os
import resource
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from sageattention._timing import Progress, Shape, make_inputs

MEMORY_N, MEMORY_H, MEMORY_D = 65536, 1, 128
MEMORY_CHILD_TIMEOUT_S = 900
IMPLS = ("ours", "sdpa_bf16")


@dataclass
class MemoryResult:
    impl: str
    ok: bool
    extra_bytes: int | None
    detail: dict[str, Any]


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
    if impl not in IMPLS:
        raise ValueError(f"unknown memory impl {impl!r}")
    sage = importlib.import_module("sageattention") if impl == "ours" else None

    def call(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if sage is not None:
            return sage.sageattn(q, k, v, tensor_layout="HND", is_causal=False)
        return F.scaled_dot_product_attention(q, k, v)

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
    cmd = [sys.executable, str(Path(__file__).resolve()), impl, str(threads)]
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


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in IMPLS or not argv[1].isdigit() or int(argv[1]) < 1:
        print(f"usage: python bench/memory.py {{{','.join(IMPLS)}}} THREADS", file=sys.stderr)
        return 2
    print(json.dumps(memory_child(argv[0], MEMORY_N, MEMORY_H, MEMORY_D, int(argv[1]))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
