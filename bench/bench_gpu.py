"""sageattention on a GPU (Triton backend) against torch SDPA (flash), bf16.

For N in {4096, 16384}, D in {64, 128}, causal and not: time per call (quantization
included), TOPS (4·B·H·N²·D flops, halved when causal), the ratio to SDPA, and the
cosine of each against fp32 attention (on two heads). Then torch.compile(fullgraph=True)
and CUDA-graph replay of sageattn, checked against eager. Writes a markdown report.

    python bench/bench_gpu.py --out bench/results/gpu-<device>.md
"""
from __future__ import annotations

import argparse
import platform
import time
from typing import Callable

import torch
import torch.nn.functional as F

import sageattention

HEADS = {4096: 32, 16384: 16}  # B = 1; keeps each case well under a second


def _time(fn: Callable[[], object], iters: int) -> float:
    for _ in range(3):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1e3 / iters


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    return float(a @ b / (a.norm() * b.norm()))


def _sdpa_flash(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)


def bench_case(n: int, d: int, causal: bool) -> dict:
    h = HEADS[n]
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn((1, h, n, d), generator=g, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    flops = 4 * h * n * n * d / (2 if causal else 1)
    iters = 20 if n <= 4096 else 5
    t_sage = _time(lambda: sageattention.sageattn(q, k, v, is_causal=causal), iters)
    t_sdpa = _time(lambda: _sdpa_flash(q, k, v, causal), iters)
    ref = F.scaled_dot_product_attention(q[:, :2].float(), k[:, :2].float(), v[:, :2].float(), is_causal=causal)
    cos_sage = _cosine(sageattention.sageattn(q, k, v, is_causal=causal)[:, :2], ref)
    cos_sdpa = _cosine(_sdpa_flash(q, k, v, causal)[:, :2], ref)
    return dict(n=n, d=d, h=h, causal=causal, t_sage=t_sage, t_sdpa=t_sdpa, tops_sage=flops / t_sage / 1e12,
                tops_sdpa=flops / t_sdpa / 1e12, cos_sage=cos_sage, cos_sdpa=cos_sdpa)


def compile_and_graph_check() -> list[str]:
    q, k, v = (torch.randn((1, 8, 1024, 128), device="cuda", dtype=torch.bfloat16) for _ in range(3))
    fn = lambda q, k, v: sageattention.sageattn(q, k, v, is_causal=True)  # noqa: E731
    eager = fn(q, k, v)
    lines = []
    try:
        compiled = torch.compile(fn, fullgraph=True)(q, k, v)
        lines.append(f"- torch.compile(fullgraph=True): ok, equal to eager: {torch.equal(compiled, eager)}")
    except Exception as e:  # report, do not hide
        lines.append(f"- torch.compile(fullgraph=True): FAILED: {type(e).__name__}: {e}")
    try:
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            fn(q, k, v)
        torch.cuda.current_stream().wait_stream(s)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = fn(q, k, v)
        graph.replay()
        torch.cuda.synchronize()
        t = _time(graph.replay, 50)
        lines.append(f"- CUDA graph capture: ok, replay equal to eager: {torch.equal(out, eager)}, "
                     f"{t * 1e6:.0f} us per replay (1x8x1024x128 causal)")
    except Exception as e:
        lines.append(f"- CUDA graph capture: FAILED: {type(e).__name__}: {e}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    import triton

    props = torch.cuda.get_device_properties(0)
    rows = []
    for n in (4096, 16384):
        for d in (64, 128):
            for causal in (False, True):
                t0 = time.time()
                r = bench_case(n, d, causal)
                rows.append(r)
                print(f"N={n} D={d} causal={causal}: sage {r['tops_sage']:.0f} TOPS, sdpa {r['tops_sdpa']:.0f} TOPS, "
                      f"ratio {r['t_sdpa'] / r['t_sage']:.2f}, cos {r['cos_sage']:.5f} / {r['cos_sdpa']:.5f} "
                      f"({time.time() - t0:.0f} s)", flush=True)
    checks = compile_and_graph_check()
    print("\n".join(checks))
    md = [f"# sageattention on {props.name} (Triton backend)", "",
          f"torch {torch.__version__}, triton {triton.__version__}, python {platform.python_version()}; "
          f"{props.multi_processor_count} SMs. bf16, B=1, quantization included in sageattn's time; SDPA with "
          "the flash backend. Cosine against fp32 attention on the first two heads.", "",
          "| N | D | H | causal | sageattn ms | TOPS | SDPA ms | TOPS | speed-up | cos sage | cos SDPA |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['n']} | {r['d']} | {r['h']} | {r['causal']} | {r['t_sage'] * 1e3:.3f} | {r['tops_sage']:.0f} | "
                  f"{r['t_sdpa'] * 1e3:.3f} | {r['tops_sdpa']:.0f} | {r['t_sdpa'] / r['t_sage']:.2f}x | "
                  f"{r['cos_sage']:.5f} | {r['cos_sdpa']:.5f} |")
    md += ["", *checks, ""]
    with open(args.out, "w") as f:
        f.write("\n".join(md))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
