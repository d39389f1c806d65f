"""Timing helpers shared by ``python -m sageattention bench`` and ``bench/bench_cpu.py``.

One definition of how a call is timed (warm-up, adaptive repetitions, median), of the
effective op count, of the accuracy figure (cosine) and of the progress bar, so that the
quick answer the installed package gives and the committed benchmark measure the same way.
"""
from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional, Tuple

import torch


@dataclass(frozen=True)
class Shape:
    """An attention problem in the (B, H, N, D) layout, Nq = Nk = N."""

    batch: int
    heads: int
    seq_len: int
    head_dim: int
    causal: bool

    def effective_ops(self) -> float:
        """4·B·H·Nq·Nk·D (QKᵀ and P·V, a multiply-add counted as 2), halved when causal.

        The same count for every implementation, whatever arithmetic it really does.
        """
        ops = 4.0 * self.batch * self.heads * self.seq_len * self.seq_len * self.head_dim
        return ops / 2.0 if self.causal else ops

    def label(self) -> str:
        return (f"B={self.batch} H={self.heads} N={self.seq_len} D={self.head_dim}"
                f"{' causal' if self.causal else ''}")


@dataclass
class Timing:
    median_s: float
    min_s: float
    samples_s: List[float]
    warmup_s: List[float]

    def tops(self, shape: Shape) -> float:
        return shape.effective_ops() / self.median_s / 1e12


@dataclass(frozen=True)
class RepPolicy:
    """How many calls a figure is the median of.

    One warm-up call (two when it takes under a second, unless `single`), then enough
    calls to fill about `budget_s`, between `min_reps` and `max_reps`. `single`: one
    warm-up and one measured call (smoke runs). A call longer than `long_run_s` is
    measured once.
    """

    min_reps: int = 3
    max_reps: int = 10
    budget_s: float = 3.0
    long_run_s: float = 20.0
    single: bool = False

    def __post_init__(self) -> None:
        if self.min_reps < 1 or self.max_reps < self.min_reps:
            raise ValueError(f"RepPolicy: need 1 <= min_reps <= max_reps, got {self.min_reps}, {self.max_reps}")
        if not (self.budget_s > 0 and self.long_run_s > 0):
            raise ValueError("RepPolicy: budget_s and long_run_s must be positive")


def time_once(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(fn: Callable[[], Any], policy: RepPolicy, predicted_s: Optional[float] = None) -> Timing:
    """Median of several timed calls of `fn` after warm-up (see RepPolicy).

    When a smaller shape already predicts a call longer than `long_run_s`
    (`predicted_s`), the warm-up is skipped too: one-time costs are then negligible.
    """
    if predicted_s is not None and predicted_s > policy.long_run_s and not policy.single:
        sample = time_once(fn)
        return Timing(median_s=sample, min_s=sample, samples_s=[sample], warmup_s=[])
    warmups = [time_once(fn)]
    if warmups[0] < 1.0 and not policy.single:
        warmups.append(time_once(fn))
    estimate = min(warmups)
    if policy.single or estimate > policy.long_run_s:
        reps = 1
    else:
        reps = max(policy.min_reps, min(policy.max_reps, int(policy.budget_s / max(estimate, 1e-9))))
    samples = [time_once(fn) for _ in range(reps)]
    return Timing(median_s=statistics.median(samples), min_s=min(samples), samples_s=samples,
                  warmup_s=warmups)


def make_inputs(shape: Shape, seed: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v as (B, H, N, D) bf16 from randn; fp32 comparisons use exactly these values."""
    gen = torch.Generator().manual_seed(seed)
    dims = (shape.batch, shape.heads, shape.seq_len, shape.head_dim)
    q, k, v = (torch.randn(dims, generator=gen, dtype=torch.float32).to(torch.bfloat16) for _ in range(3))
    return q, k, v


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity of the flattened tensors, computed in float64."""
    a64 = a.reshape(-1).to(torch.float64)
    b64 = b.reshape(-1).to(torch.float64)
    denom = a64.norm() * b64.norm()
    return float((a64 @ b64) / denom) if float(denom) > 0 else float("nan")


@dataclass
class Progress:
    """A progress bar on stderr: tqdm when installed, else a plain text bar."""

    total: int
    done: int = 0
    _tqdm: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.total = max(self.total, 1)
        try:
            from tqdm import tqdm  # type: ignore[import-not-found]
        except ImportError:
            return
        self._tqdm = tqdm(total=self.total, unit="step", file=sys.stderr, dynamic_ncols=True)

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
            sys.stderr.flush()

    def _draw(self, text: str) -> None:
        width = 30
        filled = int(width * min(self.done, self.total) / self.total)
        bar = "#" * filled + "-" * (width - filled)
        sys.stderr.write(f"\r[{bar}] {self.done}/{self.total} {text[:50]:<50}")
        sys.stderr.flush()
