"""A huge finite sm_scale is honoured (docs/CONTRACT.md §3.4): any finite scale is
accepted (§3.1), and at 1e36, where SDPA in float32 still gives the (one-hot) softmax,
the core gave NaN: q_scale·sm_scale·log2(e) times the code dot overflowed float before
k_scale brought it back. The core now moves a power of two of the score scale onto K's
side (exact: powers of two change no rounding) and saturates a score that still leaves
float's range at ±FLT_MAX, as finite mask values are (§8.6); the LSE saturates too.

Checked on every SIMD path against the scalar one, for each P·V mode and both Q·Kᵀ code
types, against a float64 reference on the quantize-dequantized operands; beyond float's
range (3e38, where SDPA in float32 is NaN) the result is finite.
"""
from __future__ import annotations

import pytest
import reference as ref
import torch

import sageattention
import sageattention._lib as _lib

B, H, NQ, NK, D = 1, 2, 40, 150, 64  # NK spans a full and a partial 128-key tile
FLT_MAX = torch.finfo(torch.float32).max

# entry name -> (call, the reference's qk code type, V code type or None for 16-bit V)
CASES = {
    "fp8_pv": (lambda *a, **kw: sageattention.sageattn(*a, **kw), "int8", "fp8"),
    "fp8_pv_qk_fp8": (lambda *a, **kw: sageattention.sageattn(*a, qk_quant_dtype="fp8", **kw), "fp8", "fp8"),
    "int8_pv": (lambda *a, **kw: sageattention.sageattn(*a, pv_quant_dtype="int8", **kw), "int8", "int8"),
    "16bit_pv": (lambda *a, **kw: sageattention.sageattn_qk_int8_pv_fp16_cuda(*a, **kw), "int8", None),
}


def _inputs() -> tuple[torch.Tensor, ...]:
    return tuple(ref.randn((B, H, n, D), seed=s) for s, n in ((1, NQ), (2, NK), (3, NK)))


def _run(case: str, isa: str, scale: float, causal: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    call = CASES[case][0]
    _lib.set_cpu_isa(isa)
    try:
        return call(*_inputs(), sm_scale=scale, is_causal=causal, return_lse=True)
    finally:
        _lib.set_cpu_isa("auto")


def _float64_reference(case: str, scale: float, causal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact attention in float64 on the same quantize-dequantized operands, and the LSE
    of the original (unsmoothed) K."""
    _, qk_dtype, v_dtype = CASES[case]
    q, k, v = _inputs()
    r = ref.reference_sageattn(q, k, v, sm_scale=1.0, qk_dtype=qk_dtype, v_dtype=v_dtype or "fp8")
    qh, kh = (x.double().permute(0, 2, 1, 3) for x in (r.q_hat, r.k_hat))
    vh = (r.v_hat if v_dtype else ref.to_nhd(v, "HND")).double().permute(0, 2, 1, 3)
    s = qh @ kh.transpose(-1, -2) * scale
    if causal:
        s = s.masked_fill(~torch.ones(NQ, NK, dtype=torch.bool).tril(), float("-inf"))
    out = torch.softmax(s, dim=-1) @ vh
    # r.lse (non-causal, sm_scale 1) is logsumexp(q̂·k̂) + q̂·mean_k: the smoothing term,
    # which scales with sm_scale
    shift = r.lse.double() - torch.logsumexp(qh @ kh.transpose(-1, -2), dim=-1)
    return out, torch.logsumexp(s, dim=-1) + scale * shift


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("scale", [1e36, -1e36, 3e38])
def test_huge_scale_is_finite_and_simd_agrees_with_scalar(isa: str, case: str, scale: float) -> None:
    """Finite on every path. Below float's range the paths agree as tests/test_isa_paths.py
    asks (one bf16 step in the output, fp32 reassociation in the LSE); at 3e38 which
    scores saturate depends on the order a path multiplies in, so only finiteness is
    common to all paths."""
    out, lse = _run(case, isa, scale)
    assert torch.isfinite(out).all(), "output"
    assert torch.isfinite(lse).all(), "lse"
    if isa != "scalar" and abs(scale) < 1e38:
        want_out, want_lse = _run(case, "scalar", scale)
        assert ref.max_abs(out.float(), want_out.float()) <= 2.0 ** -7 * want_out.float().abs().max().item()
        torch.testing.assert_close(lse, want_lse, rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("scale", [1e36, -1e36, 2.0 ** 40])
def test_huge_scale_matches_float64(case: str, scale: float, causal: bool) -> None:
    """Within float's range the scores are those of the unsplit product, so the result
    is the float64 one: at ±1e36 a one-hot softmax (the V row of each row's best key)."""
    out, lse = _run(case, "scalar", scale, causal)
    want_out, want_lse = _float64_reference(case, scale, causal)
    assert ref.max_abs(out.float(), want_out.float()) < 2e-2
    # max score and smoothing term are each ~|scale|·q·k and may cancel: relative to the largest
    torch.testing.assert_close(lse.double(), want_lse, rtol=0.0, atol=1e-5 * want_lse.abs().max().item())


def test_beyond_float_range_saturates() -> None:
    """At 3e38 scores leave float's range (SDPA in float32 is NaN there): they saturate,
    so each row is a softmax over its saturated best scores and its LSE is finite, at
    most FLT_MAX."""
    out, lse = _run("fp8_pv", "scalar", 3e38)
    sdpa = torch.nn.functional.scaled_dot_product_attention(*_inputs(), scale=3e38)
    assert torch.isnan(sdpa).any()  # what SDPA does in float32 with this scale
    assert torch.isfinite(out).all() and (lse.abs() <= FLT_MAX).all()
