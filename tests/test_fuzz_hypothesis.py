"""Property-based fuzzing of the public API against the fp32 reference (hardening, issue 5
item 5a).

Random small problems: shapes (including empty and Dv != D), layouts, dtypes, strides
(contiguous, transposed, sliced along D or N, stride-0 broadcasts), the four recipes,
int8/fp8 Q·Kᵀ, smoothing, causal, GQA ratios, bool / additive / broadcast masks, sm_scale
(default, positive, negative, zero), fp8 output; and packed varlen splits.

The reference (tests/reference.py) quantize-dequantizes Q, K, V by the same recipe and
computes exact fp32 attention. What remains between the two is the kernel's fp8 P
(``fp8(448·p)``) and the output rounding, which gives a rigorous per-element bound that
holds for ANY shape, however tiny (the docs/CONTRACT.md §5 statistics need many rows and keys):

    |out - ref| <= (2^-4 + Nk·2^-10/448 + 2^-10) · max|v̂| + 2^-8·|ref| + 1e-5

(e4m3 rounds 448·p within a relative 2^-4, or an absolute 2^-10 in its subnormal range;
the row sum l >= 1 uses the unquantized p; 2^-10 covers score rounding differences; the
output is rounded once to bf16/fp16). max|v̂| is taken per (b, kv head). A wrong key,
head, batch, mask or layout moves outputs by O(max|v̂|), far outside this bound. Where
the shapes are large enough for statistics (Nk >= 128 and >= 128 query rows, no fully
masked rows) the docs/CONTRACT.md §5 bars apply as well: cosine > 0.997 and relative L1 < 0.04.
LSE: natural log over visible keys incl. additive mask values, plus the smoothing shift.

Examples: a short deterministic run by default (conftest's derandomized profile); set
SAGEATTN_FUZZ_EXAMPLES=N for a longer, randomized run.
"""
from __future__ import annotations

import math
import os
from typing import Any

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
import reference as ref
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import sageattention
from sageattention import sageattn, sageattn_qk_int8_pv_fp16_triton, sageattn_varlen

_ENV_EXAMPLES = os.environ.get("SAGEATTN_FUZZ_EXAMPLES")


def _settings(default: int) -> settings:
    if _ENV_EXAMPLES:
        return settings(max_examples=int(_ENV_EXAMPLES), deadline=None, derandomize=False,
                        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    return settings(max_examples=default, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


RECIPES = [ref.PER_THREAD, ref.PER_BLOCK, ref.PER_BLOCK_V, ref.PER_TENSOR]
HEAD_DIMS = [1, 3, 8, 16, 32, 48, 64, 100, 128, 256]
STRIDES = ["contiguous", "transposed", "slice_d", "slice_n", "broadcast"]
MASKS = ["none", "bool", "bool_empty_rows", "additive", "additive_neg_inf", "bool_keys_only", "bool_per_batch"]


# --------------------------------------------------------------------------- #
# Building inputs                                                              #
# --------------------------------------------------------------------------- #


def _make(shape_nhd: tuple[int, int, int, int], layout: str, kind: str, dtype: torch.dtype, g: torch.Generator,
          scale: float, shift: float) -> torch.Tensor:
    """A tensor of the public layout whose values are `randn*scale+shift`, stored with the
    requested stride pattern (values do not depend on the pattern)."""
    b, n, h, d = shape_nhd
    public = (b, h, n, d) if layout == "HND" else (b, n, h, d)
    if kind == "broadcast":  # stride 0 along the head axis (and batch)
        one = (1, 1, n, d) if layout == "HND" else (1, n, 1, d)
        return (torch.randn(one, generator=g) * scale + shift).to(dtype).expand(public)
    x = (torch.randn(public, generator=g) * scale + shift).to(dtype)
    if kind == "contiguous":
        return x
    if kind == "transposed":  # stored in the other layout, viewed in this one
        return x.transpose(1, 2).contiguous().transpose(1, 2)
    if kind == "slice_d":  # D stride 2
        wide = torch.zeros(public[:-1] + (2 * d,), dtype=dtype)
        wide[..., ::2] = x
        return wide[..., ::2]
    # slice_n: an offset window of a longer sequence
    ax = 2 if layout == "HND" else 1
    big_shape = list(public)
    big_shape[ax] += 5
    big = torch.zeros(big_shape, dtype=dtype)
    big.narrow(ax, 3, public[ax]).copy_(x)
    return big.narrow(ax, 3, public[ax])


def _mask(kind: str, B: int, Hq: int, Nq: int, Nk: int, g: torch.Generator) -> torch.Tensor | None:
    if kind == "none":
        return None
    if kind == "bool":
        return torch.rand(Nq, Nk, generator=g) > 0.4
    if kind == "bool_empty_rows":
        m = torch.rand(1, Hq, Nq, Nk, generator=g) > 0.5
        m[:, :, ::3] = False  # every third row sees no key: output 0, LSE -inf
        return m
    if kind == "additive":
        return torch.randn(B, 1, Nq, Nk, generator=g) * 2.0
    if kind == "additive_neg_inf":
        m = torch.randn(Nq, Nk, generator=g)
        m[torch.rand(Nq, Nk, generator=g) > 0.6] = -math.inf
        return m.to(torch.bfloat16)  # converted to float32 by the API
    if kind == "bool_keys_only":
        return (torch.rand(Nk, generator=g) > 0.3).expand(Nq, Nk)  # stride-0 rows
    return torch.rand(B, 1, 1, Nk, generator=g) > 0.5  # bool_per_batch


def _bias(mask: torch.Tensor | None, causal: bool, B: int, Hq: int, Nq: int, Nk: int) -> torch.Tensor:
    """Additive score bias (B, Hq, Nq, Nk) in natural-log units."""
    bias = torch.zeros(B, Hq, Nq, Nk)
    if causal:
        bias = bias.masked_fill(~torch.ones(Nq, Nk, dtype=torch.bool).tril(), -math.inf)
    if mask is not None:
        m = mask
        while m.dim() < 4:
            m = m.unsqueeze(0)
        m = m.expand(B, Hq, Nq, Nk)
        bias = bias + (torch.where(m, 0.0, -math.inf) if m.dtype == torch.bool else m.float())
    return bias


# --------------------------------------------------------------------------- #
# Reference with masks                                                         #
# --------------------------------------------------------------------------- #


def _reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: str, sm_scale: float, recipe: Any,
               qk_dtype: str, smooth_k: bool, bias: torch.Tensor) -> dict[str, torch.Tensor]:
    """Quantize-dequantize by the recipe (tests/reference.py), then exact fp32 attention
    with the additive bias. Returns out (B, Hq, Nq, Dv), lse (B, Hq, Nq), vmax (B, Hq),
    lse_mag (B, Hq, Nq): a magnitude for the LSE's rounding tolerance."""
    qn, kn, vn = (ref.to_nhd(x, layout).contiguous() for x in (q, k, v))
    r = ref.reference_sageattn(qn, kn, vn, "NHD", False, sm_scale, recipe, qk_dtype, smooth_k)
    B, Nq, Hq, D = qn.shape
    Nk, Hkv = kn.shape[1], kn.shape[2]
    rep = Hq // Hkv
    qh = r.q_hat.permute(0, 2, 1, 3)  # (B, Hq, Nq, D)
    kh = r.k_hat.permute(0, 2, 1, 3).repeat_interleave(rep, dim=1)  # (B, Hq, Nk, D)
    vh = r.v_hat.permute(0, 2, 1, 3).repeat_interleave(rep, dim=1)
    s = torch.matmul(qh, kh.transpose(-1, -2)) * sm_scale + bias
    m = s.amax(dim=-1, keepdim=True) if Nk else s.new_full((B, Hq, Nq, 1), -math.inf)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    p = torch.exp(s - m)
    den = p.sum(dim=-1, keepdim=True)
    out = torch.where(den > 0, torch.matmul(p, vh) / torch.where(den > 0, den, torch.ones_like(den)),
                      torch.zeros(B, Hq, Nq, vh.shape[-1]))
    lse = (m + torch.log(den)).squeeze(-1)
    kabs = kh.abs().amax(dim=2) if Nk else torch.zeros(B, Hq, D)  # (B, Hq, D)
    if smooth_k and Nk:
        mean = ref.k_mean_reference(kn).repeat_interleave(rep, dim=1)  # (B, Hq, D)
        lse = lse + torch.einsum("bhnd,bhd->bhn", qh, mean) * sm_scale
        kabs = kabs + mean.abs()
    bias_mag = bias.abs().nan_to_num(0, 0, 0).amax(-1) if Nk else torch.zeros(B, Hq, Nq)
    lse_mag = abs(sm_scale) * torch.einsum("bhnd,bhd->bhn", qh.abs(), kabs) + bias_mag
    vmax = vh.abs().amax(dim=(2, 3)) if Nk and vh.shape[-1] else torch.zeros(B, Hq)
    return {"out": out, "lse": lse, "vmax": vmax, "lse_mag": lse_mag, "den": den.squeeze(-1)}


def _bound(want: dict[str, torch.Tensor], Nk: int, dtype: torch.dtype) -> torch.Tensor:
    rnd = 2.0 ** -8 if dtype == torch.bfloat16 else 2.0 ** -11
    vmax = want["vmax"][:, :, None, None]
    return (2.0 ** -4 + Nk * 2.0 ** -10 / 448 + 2.0 ** -10) * vmax + rnd * want["out"].abs() + 1e-5


# --------------------------------------------------------------------------- #
# The property                                                                 #
# --------------------------------------------------------------------------- #


@st.composite
def problems(draw: Any) -> dict[str, Any]:
    p: dict[str, Any] = {
        "layout": draw(st.sampled_from(["HND", "NHD"])),
        "B": draw(st.integers(1, 2)),
        "Hkv": draw(st.integers(1, 2)),
        "rep": draw(st.sampled_from([1, 2, 3])),
        "Nq": draw(st.integers(0, 150)),
        "Nk": draw(st.integers(0, 200)),
        "D": draw(st.sampled_from(HEAD_DIMS)),
        "dtype": draw(st.sampled_from([torch.bfloat16, torch.float16])),
        "recipe": draw(st.sampled_from(RECIPES)),
        "qk_dtype": draw(st.sampled_from(["int8", "fp8"])),
        "smooth_k": draw(st.booleans()),
        "sm_scale": draw(st.sampled_from([None, None, 0.3, -0.2, 0.0])),
        "fp8_output": draw(st.booleans()),
        "strides": tuple(draw(st.sampled_from(STRIDES)) for _ in range(3)),
        "scale": draw(st.sampled_from([1.0, 1.0, 8.0])),
        "k_shift": draw(st.sampled_from([0.0, 0.0, 3.0])),
        "seed": draw(st.integers(0, 2 ** 31 - 1)),
    }
    p["Dv"] = p["D"] if draw(st.booleans()) else draw(st.sampled_from(HEAD_DIMS))
    p["mask"] = draw(st.sampled_from(MASKS))
    p["causal"] = p["mask"] == "none" and draw(st.booleans())
    return p


@_settings(100)
@given(problems())
def test_sageattn_matches_reference(p: dict[str, Any]) -> None:
    B, Hkv, Hq, Nq, Nk, D, Dv = p["B"], p["Hkv"], p["Hkv"] * p["rep"], p["Nq"], p["Nk"], p["D"], p["Dv"]
    assume(Nq * Nk * max(D, Dv) * Hq * B <= 3_000_000)  # keep each example well under a second
    g = torch.Generator().manual_seed(p["seed"])
    layout, dtype = p["layout"], p["dtype"]
    q = _make((B, Nq, Hq, D), layout, p["strides"][0], dtype, g, p["scale"], 0.0)
    k = _make((B, Nk, Hkv, D), layout, p["strides"][1], dtype, g, p["scale"], p["k_shift"])
    v = _make((B, Nk, Hkv, Dv), layout, p["strides"][2], dtype, g, 1.0, 0.0)
    mask = _mask(p["mask"], B, Hq, Nq, Nk, g)
    sm_scale = p["sm_scale"]
    res = sageattn(q, k, v, tensor_layout=layout, is_causal=p["causal"], sm_scale=sm_scale, return_lse=True,
                   quant_recipe=p["recipe"], qk_quant_dtype=p["qk_dtype"], smooth_k=p["smooth_k"],
                   fp8_output=p["fp8_output"], attn_mask=mask)
    out_shape = (B, Hq, Nq, Dv) if layout == "HND" else (B, Nq, Hq, Dv)
    assert res[0].shape == out_shape and res[-1].shape == (B, Hq, Nq)
    if B * Hq * Nq * Dv == 0:
        return
    scale = 1.0 / math.sqrt(D) if sm_scale is None else sm_scale
    want = _reference(q, k, v, layout, scale, p["recipe"], p["qk_dtype"], p["smooth_k"],
                      _bias(mask, p["causal"], B, Hq, Nq, Nk))
    to_bhnd = (lambda t: t) if layout == "HND" else (lambda t: t.transpose(1, 2))
    bound = _bound(want, Nk, dtype)
    if p["fp8_output"]:
        out_fp8, out_scale, lse = res
        assert out_fp8.dtype == torch.float8_e4m3fn and out_scale.shape == out_shape[:-1] + (1,)
        sc = to_bhnd(out_scale)
        got = to_bhnd(out_fp8).float() * sc
        # the fp8 encoding of the row: relative 2^-4 of the value, absolute 2^-10 of its scale
        bound = bound + 2.0 ** -4 * want["out"].abs() + 2.0 ** -10 * sc
        bound = bound - (2.0 ** -8 if dtype == torch.bfloat16 else 2.0 ** -11) * want["out"].abs()  # no 16-bit rounding
        amax_ref = want["out"].abs().amax(dim=-1, keepdim=True)
        row_tol = bound.amax(dim=-1, keepdim=True)
        assert bool(((sc * 448 - amax_ref).abs() <= row_tol + 1e-12 * 448 + 1e-6).all()), "out_scale"
    else:
        out, lse = res
        assert out.dtype == dtype
        got = to_bhnd(out).float()
    err = (got - want["out"]).abs()
    assert bool((err <= bound).all()), f"max err {float(err.max())}, bound there {float(bound.flatten()[err.argmax()])}"
    # LSE: -inf exactly where no key is visible, else close to the reference
    empty = want["den"] == 0
    assert bool((lse[empty] == -math.inf).all())
    lse_tol = 1e-4 * (1.0 + want["lse"].abs()) + 4e-6 * want["lse_mag"] + 1e-5
    lerr = (lse - want["lse"]).abs()
    assert bool((lerr[~empty] <= lse_tol[~empty]).all()), f"lse err {float(lerr[~empty].max())}"
    # docs/CONTRACT.md §5 bars where the statistics are meaningful
    if Nk >= 128 and B * Hq * Nq >= 128 and not bool(empty.any()) and Dv >= 8 and sm_scale is None and p["scale"] == 1:
        assert ref.cosine(got, want["out"]) > 0.997
        assert ref.rel_l1(got, want["out"]) < 0.04


# --------------------------------------------------------------------------- #
# varlen                                                                       #
# --------------------------------------------------------------------------- #


@st.composite
def varlen_problems(draw: Any) -> dict[str, Any]:
    nseq = draw(st.integers(1, 4))
    lens_q = [draw(st.integers(0, 90)) for _ in range(nseq)]
    lens_k = lens_q if draw(st.booleans()) else [draw(st.integers(0, 90)) for _ in range(nseq)]
    return {"lens_q": lens_q, "lens_k": lens_k, "Hkv": draw(st.integers(1, 2)), "rep": draw(st.sampled_from([1, 2])),
            "D": draw(st.sampled_from([8, 16, 64, 128])), "dtype": draw(st.sampled_from([torch.bfloat16, torch.float16])),
            "causal": draw(st.booleans()), "smooth_k": draw(st.booleans()), "seed": draw(st.integers(0, 2 ** 31 - 1)),
            "cu_dtype": draw(st.sampled_from([torch.int32, torch.int64])), "strided": draw(st.booleans())}


@_settings(40)
@given(varlen_problems())
def test_varlen_matches_per_sequence(p: dict[str, Any]) -> None:
    """Each packed sequence equals the upstream Triton entry (same recipe, 16-bit P·V) on
    that sequence alone, bitwise; and is close to exact fp32 attention."""
    g = torch.Generator().manual_seed(p["seed"])
    Hkv, Hq, D, dtype = p["Hkv"], p["Hkv"] * p["rep"], p["D"], p["dtype"]
    tq, tk = sum(p["lens_q"]), sum(p["lens_k"])

    def packed(total: int, h: int) -> torch.Tensor:
        x = torch.randn(total, h, D, generator=g).to(dtype)
        return x.transpose(0, 1).contiguous().transpose(0, 1) if p["strided"] else x

    q, k, v = packed(tq, Hq), packed(tk, Hkv), packed(tk, Hkv)
    cu_q = torch.tensor([0] + list(torch.tensor(p["lens_q"]).cumsum(0).tolist()), dtype=p["cu_dtype"])
    cu_k = torch.tensor([0] + list(torch.tensor(p["lens_k"]).cumsum(0).tolist()), dtype=p["cu_dtype"])
    out = sageattn_varlen(q, k, v, cu_q, cu_k, max(p["lens_q"]), max(p["lens_k"]), is_causal=p["causal"],
                          smooth_k=p["smooth_k"])
    assert out.shape == (tq, Hq, D) and out.dtype == dtype
    for i in range(len(p["lens_q"])):
        q0, q1, k0, k1 = int(cu_q[i]), int(cu_q[i + 1]), int(cu_k[i]), int(cu_k[i + 1])
        if q1 == q0:
            continue
        if k1 == k0:
            assert bool((out[q0:q1] == 0).all())
            continue
        one = sageattn_qk_int8_pv_fp16_triton(q[None, q0:q1], k[None, k0:k1], v[None, k0:k1], tensor_layout="NHD",
                                              is_causal=p["causal"], smooth_k=p["smooth_k"])
        assert torch.equal(out[q0:q1], one[0])
        # sanity against exact attention on the unquantized sequence: int8 Q·Kᵀ noise only
        exact = ref.unquantized_attention(q[None, q0:q1], k[None, k0:k1], v[None, k0:k1], "NHD", p["causal"])[0]
        vmax = float(v[k0:k1].abs().max())
        assert float((out[q0:q1].float() - exact).abs().max()) <= 0.15 * vmax + 1e-3
