"""The Triton backend (issue 9), on a CUDA/ROCm GPU or in Triton's interpreter on CPU
tensors (TRITON_INTERPRET=1; SAGEATTN_BACKEND=triton is set per test).

Checked against the C++ CPU backend (quantizer codes and scales bit for bit, outputs
within the accuracy bars) and against the independent fp32 reference (tests/reference.py).
Shapes are small: the interpreter runs each program in numpy.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from typing import Any, Callable

import pytest
import torch

import reference as ref

triton = pytest.importorskip("triton", reason="the Triton backend tests need the `triton` package")
import triton.language as tl  # noqa: E402

import sageattention  # noqa: E402
from sageattention import ops  # noqa: E402
from sageattention._backends import get_backend  # noqa: E402
from sageattention._backends.triton.numerics import (fp8_e4m3_bits, fp8_e4m3_value, half_bits,  # noqa: E402
                                                     int8_code)

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
ON_GPU = torch.cuda.is_available() and not INTERPRET
pytestmark = pytest.mark.skipif(
    not (INTERPRET or ON_GPU),
    reason="the Triton backend runs on a CUDA/ROCm GPU, or on CPU in Triton's interpreter (TRITON_INTERPRET=1)")
DEVICE = torch.device("cuda" if ON_GPU else "cpu")

COS_REF = 0.99  # vs the fp32 reference: the bar of tests/test_shapes.py for small shapes
COS_CPU = 0.9999  # vs the C++ backend: same codes, same P rounding; summation order differs
LSE_ATOL = 2e-2
FP8 = torch.float8_e4m3fn


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.uint8) if t.dtype == FP8 else t


def _as_tuple(x: Any) -> tuple[Any, ...]:
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _on(backend: str, fn: Callable[[], Any]) -> Any:
    """Run fn with SAGEATTN_BACKEND=backend (the switch is read on every call)."""
    old = os.environ.get("SAGEATTN_BACKEND")
    os.environ["SAGEATTN_BACKEND"] = backend
    try:
        return fn()
    finally:
        if old is None:
            del os.environ["SAGEATTN_BACKEND"]
        else:
            os.environ["SAGEATTN_BACKEND"] = old


def _cpu(x: Any) -> Any:
    return x.cpu() if isinstance(x, torch.Tensor) else x


def _both(fn: Callable[..., Any], *tensors: Any) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """fn on the Triton backend (on DEVICE) and on the C++ backend (the same values on CPU)."""
    dev = tuple(t.to(DEVICE) if isinstance(t, torch.Tensor) else t for t in tensors)
    got = _on("triton", lambda: fn(*dev))
    want = _on("cpu", lambda: fn(*(_cpu(t) for t in tensors)))
    return tuple(_cpu(x) for x in _as_tuple(got)), _as_tuple(want)


def _qkv(B: int = 1, Hq: int = 4, Hkv: int = 2, Nq: int = 150, Nk: int = 170, D: int = 64, Dv: int | None = None,
         layout: str = "HND", dtype: torch.dtype = torch.bfloat16, seed: int = 0) -> tuple[torch.Tensor, ...]:
    Dv = D if Dv is None else Dv
    q = ref.randn(ref.layout_shape(B, Hq, Nq, D, layout), dtype=dtype, seed=seed + 1)
    # K with a per-channel offset, so smoothing matters.
    k = ref.randn(ref.layout_shape(B, Hkv, Nk, D, layout), dtype=dtype, seed=seed + 2, scale=2.0, shift=0.5)
    v = ref.randn(ref.layout_shape(B, Hkv, Nk, Dv, layout), dtype=dtype, seed=seed + 3)
    return q, k, v


# --------------------------------------------------------------------------- #
# Backend choice                                                                #
# --------------------------------------------------------------------------- #
def test_cuda_device_gets_the_triton_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAGEATTN_BACKEND", raising=False)
    assert type(get_backend(torch.device("cuda"))).__name__ == "TritonBackend"
    assert type(get_backend(torch.device("cpu"))).__name__ == "CpuBackend"
    monkeypatch.setenv("SAGEATTN_BACKEND", "triton")
    assert type(get_backend(torch.device("cpu"))).__name__ == "TritonBackend"
    monkeypatch.setenv("SAGEATTN_BACKEND", "no-such-backend")
    with pytest.raises(ValueError, match="SAGEATTN_BACKEND"):
        get_backend(torch.device("cpu"))


def test_forced_on_cpu_without_interpreter_raises() -> None:
    code = textwrap.dedent(
        """
        import os, torch, sageattention
        os.environ.pop("TRITON_INTERPRET", None)
        os.environ["SAGEATTN_BACKEND"] = "triton"
        q = torch.randn(1, 2, 16, 32, dtype=torch.bfloat16)
        try:
            sageattention.sageattn(q, q, q)
        except ValueError as e:
            assert "TRITON_INTERPRET" in str(e), str(e)
            print("OK")
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env,
                         check=False)
    assert res.returncode == 0 and "OK" in res.stdout, res.stdout + res.stderr


# --------------------------------------------------------------------------- #
# Element formats, bit for bit                                                  #
# --------------------------------------------------------------------------- #
def _format_probe_values() -> torch.Tensor:
    grid = ref.all_fp8_values().float()
    grid = grid[torch.isfinite(grid)].unique()
    mids = (grid[1:] + grid[:-1]) / 2
    edges = torch.tensor([448.0, 464.0, 480.0, 500.0, 1e6, 3e38, float("inf"), 127.7, 2.0 ** -10, 2.0 ** -12,
                          1e-45, 1e-40, 0.0])
    base = torch.cat([grid, mids, edges])
    base = torch.cat([base, -base]).view(torch.int32)
    near = torch.cat([(base + step).view(torch.float32) for step in (-2, -1, 0, 1, 2)])
    near = near[~torch.isnan(near)]  # bit steps past inf are NaNs: one NaN of each sign below
    g = torch.Generator().manual_seed(5)
    rand = torch.cat([torch.randn(20000, generator=g) * s for s in (1e-3, 1.0, 100.0, 1e4)])
    nans = torch.tensor([float("nan")]).repeat(2) * torch.tensor([1.0, -1.0])
    return torch.cat([near, rand, nans]).contiguous()


@triton.jit
def _formats_kernel(X, F8, F8V, I8, BF, FH, n, BLOCK: tl.constexpr):
    o = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = o < n
    x = tl.load(X + o, mask=ok, other=0.0)
    bits = fp8_e4m3_bits(x)
    tl.store(F8 + o, bits.to(tl.uint8), mask=ok)
    tl.store(F8V + o, fp8_e4m3_value(bits), mask=ok)
    tl.store(I8 + o, int8_code(x), mask=ok)
    tl.store(BF + o, half_bits(x, tl.bfloat16), mask=ok)
    tl.store(FH + o, half_bits(x, tl.float16), mask=ok)


def _element_formats(x: torch.Tensor) -> dict[str, torch.Tensor]:
    out = {"fp8": torch.empty(x.shape, dtype=torch.uint8, device=x.device), "fp8_value": torch.empty_like(x),
           "int8": torch.empty(x.shape, dtype=torch.int8, device=x.device),
           "bf16": torch.empty(x.shape, dtype=torch.int16, device=x.device),
           "fp16": torch.empty(x.shape, dtype=torch.int16, device=x.device)}
    _formats_kernel[(triton.cdiv(x.numel(), 4096),)](x, *out.values(), x.numel(), BLOCK=4096)
    out["bf16"] = out["bf16"].view(torch.bfloat16)
    out["fp16"] = out["fp16"].view(torch.float16)
    return out


def test_element_formats_bitwise() -> None:
    """fp8 e4m3fn codes vs torch's .to(float8_e4m3fn), fp8 decode, int8 codes vs
    round/clamp, bf16/fp16 rounding vs torch's casts: every value bit for bit."""
    x = _format_probe_values().to(DEVICE)
    got = {k: _cpu(v) for k, v in _element_formats(x).items()}
    xc = x.cpu()
    want_fp8 = xc.to(FP8).view(torch.uint8)
    assert torch.equal(got["fp8"], want_fp8), xc[got["fp8"] != want_fp8][:8]
    decoded = want_fp8.view(FP8).float()
    same = (got["fp8_value"] == decoded) | (torch.isnan(got["fp8_value"]) & torch.isnan(decoded))
    assert bool(same.all())
    want_i8 = torch.nan_to_num(torch.round(xc), nan=0.0).clamp(-127, 127).to(torch.int8)
    assert torch.equal(got["int8"], want_i8)
    for name, dt in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        w = xc.to(dt)
        eq = (got[name].view(torch.int16) == w.view(torch.int16)) | (torch.isnan(got[name]) & torch.isnan(w))
        assert bool(eq.all()), (name, xc[~eq][:8])


# --------------------------------------------------------------------------- #
# Quantizers, bit for bit with the C++ core                                     #
# --------------------------------------------------------------------------- #
RECIPES = list(ref.RECIPES.items())


@pytest.mark.parametrize("qk_dtype", ["int8", "fp8"])
@pytest.mark.parametrize("name,recipe", RECIPES, ids=[n for n, _ in RECIPES])
def test_quantizers_bitwise(name: str, recipe: ref.Recipe, qk_dtype: str) -> None:
    dtype = torch.bfloat16 if qk_dtype == "int8" else torch.float16
    q, k, v = (x.transpose(1, 2) for x in _qkv(B=2, Nq=200, Nk=140, D=40, Dv=24, dtype=dtype))  # strided views
    tiny = 1e-39 if dtype == torch.bfloat16 else 1e-6  # subnormal inputs in one head
    q, k, v = (torch.cat([x[:, :, :1] * tiny, x[:, :, 1:]], dim=2) for x in (q, k, v))
    got, want = _both(lambda q, k: tuple(ops.quantize_qk(q, k, quant_recipe=recipe, qk_quant_dtype=qk_dtype)),
                      q, k)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.dtype == w.dtype and g.shape == w.shape, i
        assert torch.equal(_bits(g), _bits(w)), f"output {i} of quantize_qk differs"
    got, want = _both(lambda v: tuple(ops.quantize_v(v, quant_recipe=recipe)), v)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.dtype == w.dtype and g.shape == w.shape, i
        assert torch.equal(_bits(g), _bits(w)), f"output {i} of quantize_v differs"


@pytest.mark.parametrize("gran", ["per_warp", "per_thread"])
def test_named_granularities_bitwise(gran: str) -> None:
    """The upstream-named variants' groupings (Q per 32 tokens, K per 64) through the
    backend's own quantize_qk."""
    from sageattention._recipes import resolve_named

    recipe = resolve_named(gran)
    q, k, _ = (x.transpose(1, 2) for x in _qkv(Nq=130, Nk=100, D=32))
    got, want = _both(lambda q, k: tuple(get_backend(q.device).quantize_qk(
        q, k, quant_recipe=recipe, qk_quant_dtype="int8", smooth_k=True)), q, k)
    for g, w in zip(got, want):
        assert torch.equal(_bits(g), _bits(w))


# --------------------------------------------------------------------------- #
# Attention through the public API                                              #
# --------------------------------------------------------------------------- #
def _bool_mask() -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    m = torch.rand(1, 1, 150, 170, generator=g) > 0.3
    m[..., 3, :] = False  # one fully masked row: output 0, LSE -inf
    return m


def _float_mask() -> torch.Tensor:
    g = torch.Generator().manual_seed(4)
    m = torch.randn(4, 150, 1, generator=g).expand(4, 150, 170).clone()
    m[:, :, 5:9] = torch.finfo(torch.float32).min  # SDPA's "masked" value: stays finite
    m[:, 7, :] = -torch.finfo(torch.bfloat16).max  # a whole row on the floor: the mean of V, as SDPA
    return m


# name -> (kwargs of sageattn, reference settings)
ATTENTION_CASES: dict[str, dict[str, Any]] = {
    "default": {},
    "causal_lse": dict(is_causal=True, return_lse=True),
    "nhd": dict(tensor_layout="NHD"),
    "fp8_qk": dict(qk_quant_dtype="fp8", return_lse=True),
    "per_tensor": dict(quant_recipe=ref.PER_TENSOR),
    "per_block": dict(quant_recipe=ref.PER_BLOCK, return_lse=True),
    "per_block_v": dict(quant_recipe=ref.PER_BLOCK_V),
    "no_smooth_k": dict(smooth_k=False, return_lse=True),
    "fp8_output": dict(fp8_output=True, return_lse=True),
    "bool_mask": dict(attn_mask=_bool_mask(), return_lse=True),
    "float_mask": dict(attn_mask=_float_mask()),
}


def _layout_of(kw: dict[str, Any]) -> str:
    return kw.get("tensor_layout", "HND")


def _inputs_for(kw: dict[str, Any], **shape: Any) -> tuple[torch.Tensor, ...]:
    return _qkv(layout=_layout_of(kw), **shape)


def _compare(got: tuple[Any, ...], want: tuple[Any, ...], fp8_output: bool = False) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
    if fp8_output:
        got = (got[0].float() * got[1],) + got[2:]
        want = (want[0].float() * want[1],) + want[2:]
    assert ref.cosine(got[0], want[0]) > COS_CPU
    assert ref.max_abs(got[0], want[0]) < 0.02
    if len(got) > 1 and not fp8_output or len(got) > 2:
        lse_g, lse_w = got[-1], want[-1]
        assert torch.equal(torch.isinf(lse_g), torch.isinf(lse_w))
        fin = torch.isfinite(lse_w)
        assert ref.max_abs(lse_g[fin], lse_w[fin]) < 1e-3


@pytest.mark.parametrize("case", list(ATTENTION_CASES))
def test_sageattn_matches_cpu_and_reference(case: str) -> None:
    kw = ATTENTION_CASES[case]
    q, k, v = _inputs_for(kw)
    got, want = _both(lambda q, k, v: sageattention.sageattn(q, k, v, **kw), q, k, v)
    _compare(got, want, kw.get("fp8_output", False))
    if "attn_mask" in kw:
        return  # the fp32 reference has no masks; the CPU backend's own mask tests cover them
    out = got[0].float() * got[1] if kw.get("fp8_output") else got[0]
    want_ref = ref.reference_sageattn(q, k, v, _layout_of(kw), kw.get("is_causal", False), None,
                                      kw.get("quant_recipe", ref.PER_THREAD), kw.get("qk_quant_dtype", "int8"),
                                      kw.get("smooth_k", True))
    assert ref.cosine(out, want_ref.out) > COS_REF
    assert ref.max_abs(out, want_ref.out) < 0.1
    if kw.get("return_lse"):
        assert ref.max_abs(got[-1], want_ref.lse) < LSE_ATOL


def test_fully_masked_row() -> None:
    q, k, v = _qkv()
    out, lse = _on("triton", lambda: sageattention.sageattn(q.to(DEVICE), k.to(DEVICE), v.to(DEVICE),
                                                             attn_mask=_bool_mask().to(DEVICE), return_lse=True))
    assert torch.all(_cpu(out)[:, :, 3] == 0) and torch.all(torch.isneginf(_cpu(lse)[:, :, 3]))


@pytest.mark.parametrize("fp8_dot", ["1", "0"], ids=["fp8_dot", "fp16_dot"])
def test_pv_dot_modes_agree(fp8_dot: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """fp8 P·V through an fp8 dot and through the exact 16-bit dot (GPUs without an OCP
    e4m3 dot) give the C++ backend's result; fp8 Q·Kᵀ likewise."""
    monkeypatch.setenv("SAGEATTN_TRITON_FP8_DOT", fp8_dot)
    q, k, v = _qkv(Nq=70, Nk=90)
    got, want = _both(lambda q, k, v: sageattention.sageattn(q, k, v, qk_quant_dtype="fp8", return_lse=True),
                      q, k, v)
    _compare(got, want)


@pytest.mark.parametrize("shape", [
    dict(B=2, Hq=4, Hkv=1, Nq=33, Nk=200, D=24, Dv=40),  # MQA, Nq != Nk, odd head dims
    dict(B=1, Hq=2, Hkv=2, Nq=64, Nk=20, D=256, Dv=128),  # the largest head dim, Nk < one tile
    dict(B=1, Hq=3, Hkv=3, Nq=200, Nk=100, D=128, Dv=96),  # causal with Nq > Nk below
], ids=["mqa_odd_dims", "d256", "nq_gt_nk"])
def test_shapes_match_cpu(shape: dict[str, int]) -> None:
    q, k, v = _qkv(**shape)
    got, want = _both(lambda q, k, v: sageattention.sageattn(q, k, v, is_causal=True, return_lse=True), q, k, v)
    _compare(got, want)


# upstream-named entry points, each with its own per-function options
NAMED_CASES: dict[str, Callable[..., Any]] = {
    "fp16_triton": lambda q, k, v: sageattention.sageattn_qk_int8_pv_fp16_triton(q, k, v, is_causal=True,
                                                                                 return_lse=True),
    "fp16_cuda_smooth_v": lambda q, k, v: sageattention.sageattn_qk_int8_pv_fp16_cuda(
        q, k, v, qk_quant_gran="per_warp", pv_accum_dtype="fp16+fp32", smooth_v=True),
    "fp8_cuda_smooth_v": lambda q, k, v: sageattention.sageattn_qk_int8_pv_fp8_cuda(
        q, k, v, pv_accum_dtype="fp32+fp32", smooth_v=True, return_lse=True),
    "fp8_cuda_sm90": lambda q, k, v: sageattention.sageattn_qk_int8_pv_fp8_cuda_sm90(q, k, v, "HND", True),
}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("case", list(NAMED_CASES))
def test_named_variants_match_cpu(case: str, dtype: torch.dtype) -> None:
    q, k, v = _qkv(Nq=100, Nk=130, dtype=dtype)
    got, want = _both(NAMED_CASES[case], q, k, v)
    _compare(got, want)


def test_varlen_matches_cpu() -> None:
    lengths_q, lengths_k = [7, 70, 0, 33], [11, 90, 5, 40]
    q = ref.randn((sum(lengths_q), 4, 32), seed=4)
    k = ref.randn((sum(lengths_k), 2, 32), seed=5)
    v = ref.randn((sum(lengths_k), 2, 48), seed=6)
    cu_q = torch.tensor([0, 7, 77, 77, 110], dtype=torch.int32)
    cu_k = torch.tensor([0, 11, 101, 106, 146], dtype=torch.int32)
    got, want = _both(lambda q, k, v, cq, ck: sageattention.sageattn_varlen(q, k, v, cq, ck, 70, 90,
                                                                            is_causal=True), q, k, v, cu_q, cu_k)
    _compare(got, want)


def test_low_level_out_buffers_and_fp8_output() -> None:
    """attention_quantized with caller buffers for out and out_scale, HND results."""
    q, k, v = (x.transpose(1, 2) for x in _qkv(Nq=40, Nk=50))

    def run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, ...]:
        qk = ops.quantize_qk(q, k)
        vq = ops.quantize_v(v)
        b, n, h, _ = q.shape
        out = torch.empty((b, h, n, v.shape[3]), dtype=FP8, device=q.device).transpose(1, 2)
        out_scale = torch.empty((b, n, h, 1), dtype=torch.float32, device=q.device)
        res = ops.attention_quantized(qk.q_codes, qk.k_codes, vq.v_codes, qk.q_scale, qk.k_scale, vq.v_scale,
                                      None, fp8_output=True, k_mean=qk.k_mean, out=out, out_scale=out_scale,
                                      return_lse=True)
        assert res[0] is out and res[1] is out_scale
        return tuple(res)

    got, want = _both(run, q, k, v)
    _compare(got, want, fp8_output=True)


def test_compile_fullgraph_on_triton() -> None:
    """torch.compile(fullgraph=True) traces the Triton ops through their fake kernels."""
    torch._dynamo.reset()
    q, k, v = (x.to(DEVICE) for x in _qkv(Nq=40, Nk=50))

    def fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> Any:
        return sageattention.sageattn(q, k, v, is_causal=True, return_lse=True)

    try:
        compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
        got = _on("triton", lambda: compiled(q, k, v))
        eager = _on("triton", lambda: fn(q, k, v))
    finally:
        torch._dynamo.reset()
    for g, w in zip(got, eager):
        assert torch.equal(g, w)


@pytest.mark.skipif(not ON_GPU, reason="CUDA graph capture needs a CUDA/ROCm GPU")
def test_cuda_graph_capture() -> None:
    """No host synchronisation inside a call: it can be captured and replayed."""
    q, k, v = (x.to(DEVICE) for x in _qkv(Nq=256, Nk=256))
    want = sageattention.sageattn(q, k, v, is_causal=True)
    torch.cuda.synchronize()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        sageattention.sageattn(q, k, v, is_causal=True)  # warm-up: JIT compile outside the capture
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = sageattention.sageattn(q, k, v, is_causal=True)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, want)


@pytest.mark.parametrize("scale", [1e36, -1e36, 3e38])
@pytest.mark.parametrize("entry", ["sageattn", "sageattn_qk_int8_pv_fp16_cuda"])
def test_huge_sm_scale_is_finite_and_matches_cpu(scale: float, entry: str) -> None:
    """docs/CONTRACT.md §3.4: the score scale is split as on the CPU (a power of two on K's
    side), and scores, and the LSE, beyond float's range saturate. Below the limit the
    result is the CPU backend's (at ±1e36 the one-hot softmax; these gave NaN before);
    at 3e38, where which scores saturate depends on the order of the products, finite."""
    q, k, v = _qkv(Nq=40, Nk=150)
    fn = getattr(sageattention, entry)
    got, want = _both(lambda q, k, v: fn(q, k, v, sm_scale=scale, return_lse=True), q, k, v)
    assert all(torch.isfinite(x).all() for x in got), "output or LSE not finite"
    if abs(scale) < 1e38:
        assert ref.max_abs(got[0], want[0]) < 0.02
        torch.testing.assert_close(got[1], want[1], rtol=0.0, atol=1e-5 * want[1].abs().max().item())
