"""`python -m sageattention bench`: is sageattn faster than torch SDPA on this CPU?

Times ``sageattn`` (bf16 inputs, quantization included) against torch's
``scaled_dot_product_attention`` on the same bf16 inputs and on the same values upcast to
fp32, for a few shapes, and prints one table: times, effective TOPS, speed-up and cosine
against SDPA fp32. The timing code is the one ``bench/bench_cpu.py`` (the full benchmark
with committed results) uses: ``sageattention._timing``.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import torch
import torch.nn.functional as F

from ._timing import Progress, RepPolicy, Shape, Timing, cosine, make_inputs, measure

BATCH = 1
HEADS = 8
# (seq lens, head dims, causal modes) per mode. --quick stays well under a minute on two
# cores, import and first call included.
QUICK_SHAPES = ((1024, 2048), (64, 128), (False,))
DEFAULT_SHAPES = ((1024, 4096), (64, 128), (False, True))
QUICK_POLICY = RepPolicy(min_reps=3, max_reps=5, budget_s=0.5)
DEFAULT_POLICY = RepPolicy(min_reps=3, max_reps=10, budget_s=2.0)
SEED = 0


@dataclass
class Row:
    shape: Shape
    ours: Timing
    sdpa_bf16: Timing
    sdpa_fp32: Timing
    cos_ours: float
    cos_sdpa_bf16: float


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="N=1024 and 2048, D=64 and 128, non-causal, fewer calls (well under a minute)")
    parser.add_argument("--threads", type=_positive_int, default=None,
                        help="thread count for ours and SDPA alike (default: torch.get_num_threads())")
    parser.add_argument("--seq-len", type=_positive_int, nargs="+", default=None, metavar="N",
                        help="sequence lengths to time instead of the defaults")
    parser.add_argument("--head-dim", type=_positive_int, nargs="+", default=None, metavar="D",
                        help="head dims to time instead of the defaults (at most 256)")
    parser.add_argument("--heads", type=_positive_int, default=HEADS, help=f"heads H (default {HEADS})")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def shapes_from(args: argparse.Namespace) -> List[Shape]:
    seq_lens, head_dims, causal_modes = QUICK_SHAPES if args.quick else DEFAULT_SHAPES
    seq_lens = tuple(args.seq_len) if args.seq_len else seq_lens
    head_dims = tuple(args.head_dim) if args.head_dim else head_dims
    return [Shape(BATCH, args.heads, n, d, c) for c in causal_modes for d in head_dims for n in seq_lens]


def run(args: argparse.Namespace, print_fn: Callable[[str], None] = print) -> int:
    from . import __version__, _lib
    from ._diagnostics import _cpu_model
    from .core import sageattn

    if args.head_dim and max(args.head_dim) > 256:
        raise SystemExit("python -m sageattention bench: error: --head-dim: at most 256")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    policy = QUICK_POLICY if args.quick else DEFAULT_POLICY
    shapes = shapes_from(args)
    progress = Progress(3 * len(shapes))
    rows = []
    try:
        for shape in shapes:
            rows.append(_bench_shape(shape, policy, sageattn, progress))
    finally:
        progress.close()
    print_fn(f"sageattention {__version__} bench on {_cpu_model()}")
    print_fn(f"ISA path: {_lib.cpu_isa()}, threads: {torch.get_num_threads()}, torch {torch.__version__}; "
             "bf16 inputs, quantization included")
    for line in format_table(rows):
        print_fn(line)
    print_fn("TOPS: effective, 4·B·H·N²·D / time (halved when causal). speed-up: SDPA time / our time. "
             "cos: cosine similarity against SDPA fp32 on the same values.")
    print_fn("Full benchmark with per-path ceilings: python bench/bench_cpu.py (in a source checkout).")
    return 0


def _bench_shape(shape: Shape, policy: RepPolicy, sageattn: Callable[..., torch.Tensor],
                 progress: Progress) -> Row:
    q, k, v = make_inputs(shape, SEED)
    q32, k32, v32 = q.float(), k.float(), v.float()
    outputs: dict = {}

    def timed(name: str, fn: Callable[[], torch.Tensor]) -> Timing:
        progress.describe(f"{name} {shape.label()}")
        timing = measure(lambda: outputs.__setitem__(name, fn()), policy)
        progress.step()
        return timing

    ours = timed("sageattn", lambda: sageattn(q, k, v, tensor_layout="HND", is_causal=shape.causal))
    bf16 = timed("SDPA bf16", lambda: F.scaled_dot_product_attention(q, k, v, is_causal=shape.causal))
    fp32 = timed("SDPA fp32", lambda: F.scaled_dot_product_attention(q32, k32, v32, is_causal=shape.causal))
    reference = outputs["SDPA fp32"]
    return Row(shape, ours, bf16, fp32, cosine(outputs["sageattn"], reference),
               cosine(outputs["SDPA bf16"], reference))


def _ms(timing: Timing) -> str:
    ms = timing.median_s * 1e3
    return f"{ms:.1f}" if ms >= 1.0 else f"{ms:.3f}"


def format_table(rows: Sequence[Row]) -> List[str]:
    header = ("shape", "ours ms", "bf16 ms", "fp32 ms", "ours TOPS", "bf16 TOPS", "fp32 TOPS",
              "x bf16", "x fp32", "cos ours", "cos bf16")
    body = []
    for r in rows:
        s = r.shape
        body.append((
            f"N={s.seq_len} D={s.head_dim}{' causal' if s.causal else ''}",
            _ms(r.ours), _ms(r.sdpa_bf16), _ms(r.sdpa_fp32),
            f"{r.ours.tops(s):.3g}", f"{r.sdpa_bf16.tops(s):.3g}", f"{r.sdpa_fp32.tops(s):.3g}",
            f"{r.sdpa_bf16.median_s / r.ours.median_s:.2f}", f"{r.sdpa_fp32.median_s / r.ours.median_s:.2f}",
            f"{r.cos_ours:.5f}", f"{r.cos_sdpa_bf16:.5f}",
        ))
    widths = [max(len(row[i]) for row in (header, *body)) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    heads_note: Optional[str] = f"(B={rows[0].shape.batch}, H={rows[0].shape.heads})" if rows else None
    out = [line(header), line(["-" * w for w in widths])] + [line(b) for b in body]
    return ([heads_note] if heads_note else []) + out
