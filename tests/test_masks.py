"""attn_mask on every entry point that takes one (issue 4): bool (True keeps) and additive
float masks in natural-log units as in SDPA, broadcast from 2-D/3-D/4-D shapes with size-1
dims; fully masked rows (zeros, LSE -inf, never NaN); the errors; and the low-level
``ops.attention_quantized(attn_mask=...)``."""

from __future__ import annotations

import math
from typing import Any, Callable

import pytest
import reference as ref
import torch

import sageattention
from sageattention import ops

MASKED = [
    "sageattn",
    "sageattn_qk_int8_pv_fp16_triton",
    "sageattn_qk_int8_pv_fp16_cuda",
    "sageattn_qk_int8_pv_fp8_cuda",
    "sageattn_qk_int8_pv_fp8_cuda_sm90",
]
FP16_PV = {"sageattn_qk_int8_pv_fp16_triton", "sageattn_qk_int8_pv_fp16_cuda"}

# docs/CONTRACT.md §5
COS_BAR, REL_L1_BAR, RMSE_BAR, LSE_COS_BAR = 0.997, 0.04, 0.02, 0.999

B, HQ, HKV, NQ, NK, D = 2, 4, 2, 72, 200, 64

# mask shapes (as given by the caller) that broadcast to (B, Hq, Nq, Nk)
MASK_SHAPES = {
    "2d_full": (NQ, NK),
    "2d_keys": (1, NK),
    "2d_rows": (NQ, 1),
    "3d_heads": (HQ, NQ, NK),
    "3d_heads_keys": (HQ, 1, NK),
    "3d_shared": (1, NQ, NK),
    "4d_full": (B, HQ, NQ, NK),
    "4d_padding": (B, 1, 1, NK),
    "4d_batch_rows": (B, 1, NQ, NK),
    "4d_heads": (1, HQ, NQ, NK),
}


def _fn(name: str) -> Callable[..., Any]:
    return getattr(sageattention, name)


def _inputs(b: int = B, hq: int = HQ, hkv: int = HKV, nq: int = NQ, nk: int = NK, d: int = D,
            layout: str = "HND", dtype: torch.dtype = torch.bfloat16, seed: int = 0
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    q = ref.randn(ref.layout_shape(b, hq, nq, d, layout), dtype=dtype, seed=seed + 1)
    k = ref.randn(ref.layout_shape(b, hkv, nk, d, layout), dtype=dtype, seed=seed + 2)
    v = ref.randn(ref.layout_shape(b, hkv, nk, d, layout), dtype=dtype, seed=seed + 3)
    return q, k, v


def _make_mask(shape: tuple[int, ...], kind: str, seed: int = 7) -> torch.Tensor:
    """bool: ~30% dropped, at least one key kept per row; float: natural-log additive bias
    with some -inf entries (never a whole row)."""
    g = torch.Generator().manual_seed(seed)
    keep = torch.rand(shape, generator=g) > 0.3
    keep[..., 0] = True
    if kind == "bool":
        return keep
    bias = torch.randn(shape, generator=g) * 1.5
    bias = bias.masked_fill(~keep, float("-inf"))
    return bias.to({"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[kind])


def _additive(mask: torch.Tensor) -> torch.Tensor:
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape).masked_fill(~mask, float("-inf"))
    return mask.float()


def _masked_attention(q_hat: torch.Tensor, k_hat: torch.Tensor, v_hat: torch.Tensor, sm_scale: float,
                      mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact fp32 attention on (B, N, H, D) operands with an SDPA-style mask.
    Returns out (B, Nq, Hq, Dv) and lse (B, Hq, Nq); fully masked rows: 0 and -inf."""
    qh, kh, vh = (x.float().permute(0, 2, 1, 3) for x in (q_hat, k_hat, v_hat))
    rep = qh.shape[1] // kh.shape[1]
    kh, vh = kh.repeat_interleave(rep, dim=1), vh.repeat_interleave(rep, dim=1)
    s = qh @ kh.transpose(-1, -2) * sm_scale
    if mask is not None:
        s = s + _additive(mask)
    lse = torch.logsumexp(s, dim=-1)
    m = s.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    p = torch.exp(s - m)
    den = p.sum(dim=-1, keepdim=True)
    out = torch.where(den > 0, (p @ vh) / den.clamp_min(1e-30), torch.zeros(()))
    return out.permute(0, 2, 1, 3), lse


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
          layout: str = "HND", sm_scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 attention on the unquantized inputs (out in q's layout, lse)."""
    qn, kn, vn = (ref.to_nhd(x, layout) for x in (q, k, v))
    scale = 1.0 / math.sqrt(qn.shape[-1]) if sm_scale is None else sm_scale
    out, lse = _masked_attention(qn, kn, vn, scale, mask)
    return ref.from_nhd(out, layout), lse


def _quant_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                     layout: str = "HND", pv16: bool = False,
                     k_grouping: tuple[int, int, int] = (128, 8, 8)) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize-dequantize reference (default recipe; or 16-bit P·V with the given K
    grouping), masked exact attention, LSE for the original K."""
    qn, kn, vn = (ref.to_nhd(x, layout) for x in (q, k, v))
    k_mean = ref.k_mean_reference(kn)
    qc, qs = ref.quantize_tokens(qn.float(), (128, 1, 128), "int8")
    kc, ks = ref.quantize_tokens(kn.float() - k_mean.unsqueeze(1), k_grouping, "int8")
    q_hat = ref.dequantize_tokens(qc, qs, (128, 1, 128))
    k_hat = ref.dequantize_tokens(kc, ks, k_grouping)
    if pv16:
        v_hat = vn.float()
    else:
        rv = ref.quantize_v_reference(vn, ref.PER_THREAD)
        v_hat = ref.dequantize_v(rv.v_codes, rv.v_scale, ref.PER_THREAD)
    scale = 1.0 / math.sqrt(qn.shape[-1])
    out, lse = _masked_attention(q_hat, k_hat, v_hat, scale, mask)
    mean = k_mean.repeat_interleave(qn.shape[2] // kn.shape[2], dim=1)
    lse = lse + torch.einsum("bnhd,bhd->bhn", q_hat, mean) * scale
    return ref.from_nhd(out, layout), lse


def _finite_rows(lse: torch.Tensor) -> torch.Tensor:
    return torch.isfinite(lse)


# --------------------------------------------------------------------------- #
# Broadcast shapes, bool and float, every entry point                           #
# --------------------------------------------------------------------------- #


# every shape and kind on sageattn; a spread of them on each named variant
_BROADCAST_CASES = [("sageattn", s, kd) for s in MASK_SHAPES for kd in ("bool", "float32")] + [
    (n, s, kd)
    for i, n in enumerate(MASKED[1:])
    for j, (s, kd) in enumerate([("2d_full", "bool"), ("3d_heads", "float32"), ("4d_padding", "bool"),
                                 ("4d_full", "float32"), ("3d_heads_keys", "bool"), ("2d_keys", "float32")])
    if (i + j) % 2 == 0 or s in ("4d_full", "3d_heads")
]


@pytest.mark.parametrize("name,shape_id,kind", _BROADCAST_CASES)
def test_mask_broadcast_vs_sdpa(name: str, shape_id: str, kind: str) -> None:
    layout = "NHD" if shape_id.startswith("3d") else "HND"  # both layouts take (B, H, Nq, Nk) masks
    q, k, v = _inputs(layout=layout)
    mask = _make_mask(MASK_SHAPES[shape_id], kind)
    out, lse = _fn(name)(q, k, v, tensor_layout=layout, attn_mask=mask, return_lse=True)
    assert out.shape == q.shape and out.dtype == q.dtype
    assert lse.shape == (B, HQ, NQ) and lse.dtype == torch.float32
    assert not torch.isnan(out).any() and not torch.isnan(lse).any()
    want, want_lse = _sdpa(q, k, v, mask, layout)
    c = ref.cosine(out, want)
    assert c > 0.99, f"cosine vs masked SDPA {c:.5f}"
    if name in FP16_PV:
        assert c > 0.9995, f"cosine vs masked SDPA {c:.5f} (16-bit P·V)"
    assert ref.max_abs(lse, want_lse) < 0.05
    if shape_id != "2d_rows":  # a per-row mask keeps whole rows or shifts them: no effect
        # the mask matters: far from the unmasked result
        unmasked, _ = _sdpa(q, k, v, None, layout)
        assert ref.rmse(out, want) < ref.rmse(unmasked, want) / 4


@pytest.mark.parametrize("kind", ["bfloat16", "float16", "float64"])
def test_other_float_mask_dtypes(kind: str) -> None:
    q, k, v = _inputs()
    mask = _make_mask((B, 1, NQ, NK), "float32").to(getattr(torch, kind))
    out = sageattention.sageattn(q, k, v, attn_mask=mask)
    want, _ = _sdpa(q, k, v, mask)
    assert ref.cosine(out, want) > 0.99
    assert torch.equal(out, sageattention.sageattn(q, k, v, attn_mask=mask.float()))


def test_triton_variant_takes_mask_positionally() -> None:
    """Upstream order: (q, k, v, tensor_layout, quantization_backend, is_causal, attn_mask, ...)."""
    q, k, v = _inputs()
    mask = _make_mask((B, HQ, NQ, NK), "bool")
    f = sageattention.sageattn_qk_int8_pv_fp16_triton
    assert torch.equal(f(q, k, v, "HND", "triton", False, mask), f(q, k, v, attn_mask=mask))


@pytest.mark.parametrize("name", MASKED)
def test_mask_with_empty_axes(name: str) -> None:
    q, k, v = _inputs(nk=0)
    for mask in (torch.ones(NQ, 0, dtype=torch.bool), torch.zeros(B, 1, NQ, 0)):
        out, lse = _fn(name)(q, k, v, attn_mask=mask, return_lse=True)
        assert out.shape == q.shape and torch.all(out == 0)
        assert torch.all(lse == float("-inf"))
    q, k, v = _inputs(nq=0)
    out, lse = _fn(name)(q, k, v, attn_mask=torch.ones(0, NK, dtype=torch.bool), return_lse=True)
    assert out.shape == q.shape and lse.shape == (B, HQ, 0)


@pytest.mark.parametrize("kind", ["bool", "float32"])
def test_mask_accuracy_bars_default_recipe(kind: str) -> None:
    """docs/CONTRACT.md §5 shape and bars, with a mask, against the masked fp32
    quantize-dequantize reference of the default recipe."""
    q = ref.randn((1, 2, 128, 128), seed=11)
    k = ref.randn((1, 2, 1024, 128), seed=12)
    v = ref.randn((1, 2, 1024, 128), seed=13)
    mask = _make_mask((1, 2, 128, 1024), kind, seed=3)
    out, lse = sageattention.sageattn(q, k, v, attn_mask=mask, return_lse=True)
    want, want_lse = _quant_reference(q, k, v, mask)
    c, l1, e = ref.cosine(out, want), ref.rel_l1(out, want), ref.rmse(out, want)
    assert c > COS_BAR and l1 < REL_L1_BAR and e < RMSE_BAR, (c, l1, e)
    assert ref.cosine(lse, want_lse) > LSE_COS_BAR
    sdpa, _ = _sdpa(q, k, v, mask)
    assert ref.cosine(out, sdpa) > 0.99


@pytest.mark.parametrize("name,k_grouping", [("sageattn_qk_int8_pv_fp16_triton", (64, 1, 64)),
                                             ("sageattn_qk_int8_pv_fp16_cuda", (128, 8, 8))])
def test_mask_fp16_pv_vs_reference(name: str, k_grouping: tuple[int, int, int]) -> None:
    q, k, v = _inputs(nq=150, nk=300)
    mask = _make_mask((B, 1, 150, 300), "float32")
    out, lse = _fn(name)(q, k, v, attn_mask=mask, return_lse=True)
    want, want_lse = _quant_reference(q, k, v, mask, pv16=True, k_grouping=k_grouping)
    assert ref.cosine(out, want) > 0.9999
    assert ref.max_abs(lse, want_lse) < 1e-3


def test_mask_natural_log_units() -> None:
    """A float mask adds to the scores in natural-log units: a constant c per row leaves
    the output unchanged and shifts the LSE by exactly c; log(2) on a key doubles its weight."""
    q, k, v = _inputs(b=1, hq=2, hkv=2, nq=64, nk=96)
    o0, l0 = sageattention.sageattn(q, k, v, return_lse=True)
    shift = torch.linspace(-4, 4, 64).view(64, 1)
    o1, l1 = sageattention.sageattn(q, k, v, attn_mask=shift, return_lse=True)
    assert ref.max_abs(o1, o0) < 1e-2
    assert ref.max_abs(l1, l0 + shift.view(1, 1, 64)) < 1e-4
    # duplicate key 0 == log(2) bias on key 0
    k2 = torch.cat([k[:, :, :1], k], dim=2)
    v2 = torch.cat([v[:, :, :1], v], dim=2)
    bias = torch.zeros(1, 96)
    bias[0, 0] = math.log(2.0)
    for name in ("sageattn_qk_int8_pv_fp16_triton", "sageattn"):
        ob, lb = _fn(name)(q, k, v, attn_mask=bias, return_lse=True)
        want, want_lse = _sdpa(q, k2, v2, None)
        assert ref.cosine(ob, want) > 0.999
        assert ref.max_abs(lb, want_lse) < 0.05


@pytest.mark.parametrize("name", MASKED)
def test_trivial_masks_equal_no_mask(name: str) -> None:
    q, k, v = _inputs(nq=40, nk=150)
    base = _fn(name)(q, k, v, return_lse=True)
    for mask in (torch.ones(NQ, 150, dtype=torch.bool)[:40], torch.zeros(40, 150),
                 torch.zeros(1, 1, 1, 1)):
        got = _fn(name)(q, k, v, attn_mask=mask, return_lse=True)
        assert torch.equal(got[0], base[0]) and torch.equal(got[1], base[1]), tuple(mask.shape)
    assert torch.equal(_fn(name)(q, k, v, attn_mask=None), base[0])


@pytest.mark.parametrize("name", MASKED)
def test_tril_mask_equals_causal(name: str) -> None:
    q, k, v = _inputs(nq=100, nk=180)
    causal = _fn(name)(q, k, v, is_causal=True)
    tril = torch.ones(100, 180, dtype=torch.bool).tril()
    assert ref.max_abs(_fn(name)(q, k, v, attn_mask=tril), causal) <= 1e-2
    neg = torch.zeros(100, 180).masked_fill(~tril, float("-inf"))
    assert ref.max_abs(_fn(name)(q, k, v, attn_mask=neg), causal) <= 1e-2


def test_expanded_and_strided_masks() -> None:
    q, k, v = _inputs()
    full = _make_mask((B, HQ, NQ, NK), "bool")
    want = sageattention.sageattn(q, k, v, attn_mask=full.contiguous())
    # a transposed (non-contiguous) view of the same values
    t = full.transpose(-1, -2).contiguous().transpose(-1, -2)
    assert not t.is_contiguous()
    assert torch.equal(sageattention.sageattn(q, k, v, attn_mask=t), want)
    # stride-0 broadcast views
    pad = _make_mask((B, 1, 1, NK), "float32")
    exp = pad.expand(B, HQ, NQ, NK)
    assert torch.equal(sageattention.sageattn(q, k, v, attn_mask=exp),
                       sageattention.sageattn(q, k, v, attn_mask=pad))
    assert torch.equal(sageattention.sageattn(q, k, v, attn_mask=exp),
                       sageattention.sageattn(q, k, v, attn_mask=exp.contiguous()))


# --------------------------------------------------------------------------- #
# Fully masked rows                                                             #
# --------------------------------------------------------------------------- #


def _mask_with_dead_rows(kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, Hq, Nq, Nk) mask with some rows fully masked; returns (mask, dead rows (B,Hq,Nq))."""
    keep = _make_mask((B, HQ, NQ, NK), "bool")
    dead = torch.zeros(B, HQ, NQ, dtype=torch.bool)
    dead[0, :, 3] = True  # every head of one row
    dead[1, 2, 10:20] = True  # a run of rows in one head
    dead[:, :, NQ - 1] = True  # the last row everywhere
    keep = keep & ~dead[..., None]
    if kind == "bool":
        return keep, dead
    bias = torch.randn(B, HQ, NQ, NK).masked_fill(~keep, float("-inf"))
    return bias, dead


@pytest.mark.parametrize("kind", ["bool", "float"])
@pytest.mark.parametrize("name", MASKED)
def test_fully_masked_rows(name: str, kind: str) -> None:
    layout = "NHD" if kind == "float" else "HND"
    q, k, v = _inputs(layout=layout)
    mask, dead = _mask_with_dead_rows(kind)
    out, lse = _fn(name)(q, k, v, tensor_layout=layout, attn_mask=mask, return_lse=True)
    assert not torch.isnan(out).any(), "NaN in output"
    assert not torch.isnan(lse).any(), "NaN in LSE"
    out_hnd = out if layout == "HND" else out.transpose(1, 2)
    assert torch.all(out_hnd[dead] == 0), "fully masked rows must be 0"
    assert torch.all(lse[dead] == float("-inf")), "fully masked rows must have LSE -inf"
    assert torch.isfinite(lse[~dead]).all()
    want, want_lse = _sdpa(q, k, v, mask, layout)
    assert ref.cosine(out, want) > 0.99
    assert ref.max_abs(lse[~dead], want_lse[~dead]) < 0.05


@pytest.mark.parametrize("kind", ["bool", "float"])
@pytest.mark.parametrize("name,accum", [
    ("sageattn_qk_int8_pv_fp8_cuda", "fp32+fp32"),
    ("sageattn_qk_int8_pv_fp16_cuda", "fp16+fp32"),
    ("sageattn_qk_int8_pv_fp8_cuda", "fp32+fp16"),  # smooth_v ignored here, as upstream
])
def test_fully_masked_rows_smooth_v(name: str, accum: str, kind: str) -> None:
    q, k, v = _inputs()
    v = (v.float() + 3.0).to(v.dtype)  # the case smooth_v is for: V with an offset
    mask, dead = _mask_with_dead_rows(kind)
    out, lse = _fn(name)(q, k, v, attn_mask=mask, pv_accum_dtype=accum, smooth_v=True, return_lse=True)
    assert torch.all(lse[dead] == float("-inf"))
    assert not torch.isnan(out).any()
    want, _ = _sdpa(q, k, v, mask)
    assert ref.cosine(out[~dead], want[~dead]) > 0.999
    assert torch.all(out[dead] == 0), "fully masked rows must be 0 with smooth_v=True too"


@pytest.mark.parametrize("kind", ["bool", "float"])
def test_fully_masked_rows_fp8_output(kind: str) -> None:
    q, k, v = _inputs()
    mask, dead = _mask_with_dead_rows(kind)
    out_fp8, out_scale, lse = sageattention.sageattn(q, k, v, attn_mask=mask, fp8_output=True, return_lse=True)
    assert out_fp8.dtype == torch.float8_e4m3fn
    deq = out_fp8.float() * out_scale
    assert not torch.isnan(deq).any()
    assert torch.all(deq[dead] == 0)
    assert torch.all(lse[dead] == float("-inf"))
    # e4m3 keeps 3 mantissa bits: relative error <= 2**-4, plus the kernel-vs-reference gap
    want, _ = _quant_reference(q, k, v, mask)
    err = (deq - want).abs()
    assert torch.all(err <= want.abs() * 0.0625 + 0.02), float((err - want.abs() * 0.0625).max())


@pytest.mark.parametrize("kind", ["bool", "float"])
@pytest.mark.parametrize("name", MASKED)
def test_everything_masked(name: str, kind: str) -> None:
    q, k, v = _inputs(nq=20, nk=70)
    mask = torch.zeros(20, 70, dtype=torch.bool) if kind == "bool" else torch.full((20, 70), float("-inf"))
    out, lse = _fn(name)(q, k, v, attn_mask=mask, return_lse=True)
    assert torch.all(out == 0) and not torch.isnan(out).any()
    assert torch.all(lse == float("-inf"))


# --------------------------------------------------------------------------- #
# Errors                                                                        #
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("name", MASKED)
def test_mask_with_is_causal_rejected(name: str) -> None:
    q, k, v = _inputs(nq=16, nk=16)
    for mask in (torch.ones(16, 16, dtype=torch.bool), torch.zeros(16, 16)):
        with pytest.raises(ValueError, match="attn_mask"):
            _fn(name)(q, k, v, attn_mask=mask, is_causal=True)


_BAD_SHAPES = [(NQ, NK + 1), (NQ + 1, NK), (3, NQ, NK), (B + 1, 1, NQ, NK), (1, HKV, NQ, NK),
               (HKV, NQ, NK), (1, 1, 1, NQ, NK), (NQ, NK, 1), (NQ,)]


@pytest.mark.parametrize("name", MASKED)
def test_mask_wrong_shape(name: str) -> None:
    q, k, v = _inputs()
    for shape in _BAD_SHAPES:
        for dtype in (torch.bool, torch.float32):
            with pytest.raises(ValueError, match="attn_mask"):
                _fn(name)(q, k, v, attn_mask=torch.ones(shape, dtype=dtype))


@pytest.mark.parametrize("name", MASKED)
def test_mask_int_dtype_rejected(name: str) -> None:
    q, k, v = _inputs(nq=16, nk=16)
    for dtype in (torch.int32, torch.int64, torch.uint8, torch.int8, torch.int16):
        with pytest.raises(TypeError, match="attn_mask"):
            _fn(name)(q, k, v, attn_mask=torch.ones(16, 16, dtype=dtype))


def test_mask_not_a_tensor() -> None:
    q, k, v = _inputs(nq=4, nk=4)
    with pytest.raises(TypeError, match="attn_mask"):
        sageattention.sageattn(q, k, v, attn_mask=[[True] * 4] * 4)


# --------------------------------------------------------------------------- #
# Low-level API                                                                 #
# --------------------------------------------------------------------------- #


def _quantized(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
    qk = ops.quantize_qk(q, k)
    vq = ops.quantize_v(v)
    return qk, vq


@pytest.mark.parametrize("kind", ["bool", "float32"])
def test_ops_attention_quantized_mask(kind: str) -> None:
    q, k, v = _inputs(layout="NHD")
    mask, dead = _mask_with_dead_rows("bool" if kind == "bool" else "float")
    qk, vq = _quantized(q, k, v)
    out, lse = ops.attention_quantized(qk.q_codes, qk.k_codes, vq.v_codes, qk.q_scale, qk.k_scale,
                                       vq.v_scale, None, return_lse=True, k_mean=qk.k_mean,
                                       out_dtype=torch.bfloat16, attn_mask=mask)
    assert out.shape == (B, NQ, HQ, D)
    want_out, want_lse = sageattention.sageattn(q, k, v, tensor_layout="NHD", attn_mask=mask, return_lse=True)
    assert torch.equal(out, want_out)
    assert torch.equal(lse, want_lse)
    assert torch.all(out.transpose(1, 2)[dead] == 0)
    assert torch.all(lse[dead] == float("-inf"))
    ref_out, ref_lse = _quant_reference(q, k, v, mask, "NHD")
    assert ref.cosine(out, ref_out) > COS_BAR
    assert ref.max_abs(lse[~dead], ref_lse[~dead]) < 0.05
    # 16-bit P·V path of the low-level API (unquantized v, v_scale=None) with a mask
    o16 = ops.attention_quantized(qk.q_codes, qk.k_codes, v, qk.q_scale, qk.k_scale, None, None,
                                  k_mean=qk.k_mean, out_dtype=torch.float32, attn_mask=mask)
    ref16, _ = _quant_reference(q, k, v, mask, "NHD", pv16=True)
    assert ref.cosine(o16, ref16) > 0.9999
    assert torch.all(o16.transpose(1, 2)[dead] == 0)


def test_ops_attention_quantized_mask_errors() -> None:
    q, k, v = _inputs(nq=16, nk=16, layout="NHD")
    qk, vq = _quantized(q, k, v)
    args = (qk.q_codes, qk.k_codes, vq.v_codes, qk.q_scale, qk.k_scale, vq.v_scale, None)
    with pytest.raises(ValueError, match="attn_mask"):
        ops.attention_quantized(*args, causal=True, attn_mask=torch.ones(16, 16, dtype=torch.bool))
    with pytest.raises(ValueError, match="attn_mask"):
        ops.attention_quantized(*args, attn_mask=torch.ones(16, 17, dtype=torch.bool))
    with pytest.raises(TypeError, match="attn_mask"):
        ops.attention_quantized(*args, attn_mask=torch.ones(16, 16, dtype=torch.int32))
