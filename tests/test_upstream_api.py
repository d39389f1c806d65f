"""The whole upstream-compatible surface (docs/CONTRACT.md §6, issue 4 "drop-in for real
clients"): names, upstream positional order and defaults, the semantics of every
upstream-named variant on CPU (16-bit vs fp8 P·V, pv_accum_dtype, qk_quant_gran,
smooth_v, quantization_backend), keyword handling, head dims up to 256, Dv != Dqk,
the distribution version and a CUDA/Triton-free import."""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import math
import subprocess
import sys
import textwrap
import warnings
from typing import Any, Callable

import pytest
import reference as ref
import torch

import sageattention
from sageattention import core

_REQ = inspect.Parameter.empty

UPSTREAM_NAMES = [
    "sageattn",
    "sageattn_qk_int8_pv_fp16_triton",
    "sageattn_qk_int8_pv_fp16_cuda",
    "sageattn_qk_int8_pv_fp8_cuda",
    "sageattn_qk_int8_pv_fp8_cuda_sm90",
    "sageattn_varlen",
]

# docs/CONTRACT.md §6: upstream positional order and defaults (the part before **kwargs /
# this package's keyword-only extras).
UPSTREAM_SIGNATURES: dict[str, list[tuple[str, Any]]] = {
    "sageattn": [
        ("q", _REQ), ("k", _REQ), ("v", _REQ), ("tensor_layout", "HND"), ("is_causal", False),
        ("sm_scale", None), ("return_lse", False),
    ],
    "sageattn_qk_int8_pv_fp8_cuda_sm90": [
        ("q", _REQ), ("k", _REQ), ("v", _REQ), ("tensor_layout", "HND"), ("is_causal", False),
        ("qk_quant_gran", "per_thread"), ("sm_scale", None), ("pv_accum_dtype", "fp32+fp32"),
        ("smooth_k", True), ("return_lse", False),
    ],
    "sageattn_qk_int8_pv_fp8_cuda": [
        ("q", _REQ), ("k", _REQ), ("v", _REQ), ("tensor_layout", "HND"), ("is_causal", False),
        ("qk_quant_gran", "per_thread"), ("sm_scale", None), ("pv_accum_dtype", "fp32+fp16"),
        ("smooth_k", True), ("smooth_v", False), ("return_lse", False),
    ],
    "sageattn_qk_int8_pv_fp16_cuda": [
        ("q", _REQ), ("k", _REQ), ("v", _REQ), ("tensor_layout", "HND"), ("is_causal", False),
        ("qk_quant_gran", "per_thread"), ("sm_scale", None), ("pv_accum_dtype", "fp32"),
        ("smooth_k", True), ("smooth_v", False), ("return_lse", False),
    ],
    "sageattn_qk_int8_pv_fp16_triton": [
        ("q", _REQ), ("k", _REQ), ("v", _REQ), ("tensor_layout", "HND"),
        ("quantization_backend", "triton"), ("is_causal", False), ("attn_mask", None),
        ("sm_scale", None), ("smooth_k", True), ("return_lse", False),
    ],
    "sageattn_varlen": [
        ("q", _REQ), ("k", _REQ), ("v", _REQ), ("cu_seqlens_q", _REQ), ("cu_seqlens_k", _REQ),
        ("max_seqlen_q", _REQ), ("max_seqlen_k", _REQ), ("is_causal", False), ("sm_scale", None),
        ("smooth_k", True),
    ],
}

# MATE's wrapper (MooreThreads/mate, wrappers/SageAttention/sageattention/interface.py)
# continues sageattn's positional order after return_lse. Its SM90 order differs from
# upstream's at the 7th argument; that entry accepts both (tests/test_musa_backend.py).
MATE_POSITIONAL_TAIL = {
    "sageattn": [("qk_quant_gran", "per_thread"), ("qk_quant_dtype", "int8"), ("quant_recipe", None),
                 ("smooth_k", True), ("fp8_output", False)],
}

# Entry points with the (q, k, v, ...) dense signature.
DENSE = [n for n in UPSTREAM_NAMES if n != "sageattn_varlen"]
CUDA_NAMED = ["sageattn_qk_int8_pv_fp16_cuda", "sageattn_qk_int8_pv_fp8_cuda",
              "sageattn_qk_int8_pv_fp8_cuda_sm90"]
FP16_PV = ["sageattn_qk_int8_pv_fp16_triton", "sageattn_qk_int8_pv_fp16_cuda"]
FP8_PV = ["sageattn", "sageattn_qk_int8_pv_fp8_cuda", "sageattn_qk_int8_pv_fp8_cuda_sm90"]

PV_ACCUM = {
    "sageattn_qk_int8_pv_fp8_cuda_sm90": ("fp32+fp32", "fp32"),
    "sageattn_qk_int8_pv_fp8_cuda": ("fp32", "fp32+fp32", "fp32+fp16"),
    "sageattn_qk_int8_pv_fp16_cuda": ("fp16", "fp16+fp32", "fp32"),
}
PV_ACCUM_ALL = ("fp32+fp32", "fp32", "fp32+fp16", "fp16", "fp16+fp32")

# Token groupings (block, groups, stride) of the named variants (docs: _recipes.py,
# docs/CONTRACT.md §6): triton Q/128 K/64; per_thread = default; per_warp Q/32 K/64.
GROUPINGS = {
    "triton": ((128, 1, 128), (64, 1, 64)),
    "per_thread": ((128, 1, 128), (128, 8, 8)),
    "per_warp": ((128, 4, 32), (64, 1, 64)),
}

def _fn(name: str) -> Callable[..., Any]:
    return getattr(sageattention, name)


def _inputs(B: int = 1, Hq: int = 2, Hkv: int = 2, Nq: int = 128, Nk: int = 256, D: int = 64,
            Dv: int | None = None, layout: str = "HND", dtype: torch.dtype = torch.bfloat16,
            seed: int = 0, v_shift: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    Dv = D if Dv is None else Dv
    q = ref.randn(ref.layout_shape(B, Hq, Nq, D, layout), dtype=dtype, seed=seed + 1)
    k = ref.randn(ref.layout_shape(B, Hkv, Nk, D, layout), dtype=dtype, seed=seed + 2)
    v = ref.randn(ref.layout_shape(B, Hkv, Nk, Dv, layout), dtype=dtype, seed=seed + 3, shift=v_shift)
    return q, k, v


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: str = "HND", is_causal: bool = False,
          sm_scale: float | None = None) -> torch.Tensor:
    """fp32 SDPA on the (16-bit) inputs, top-left causal, GQA by repetition; q's layout."""
    qh, kh, vh = (ref.to_nhd(x, layout).transpose(1, 2).float() for x in (q, k, v))
    rep = qh.shape[1] // kh.shape[1]
    kh, vh = kh.repeat_interleave(rep, dim=1), vh.repeat_interleave(rep, dim=1)
    mask = None
    if is_causal:
        mask = torch.ones(qh.shape[2], kh.shape[2], dtype=torch.bool).tril()
    out = torch.nn.functional.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask, scale=sm_scale)
    return out if layout == "HND" else out.transpose(1, 2)


def _exact_lse(q: torch.Tensor, k: torch.Tensor, layout: str = "HND", is_causal: bool = False,
               sm_scale: float | None = None) -> torch.Tensor:
    qh, kh = (ref.to_nhd(x, layout).transpose(1, 2).float() for x in (q, k))
    kh = kh.repeat_interleave(qh.shape[1] // kh.shape[1], dim=1)
    scale = 1.0 / math.sqrt(qh.shape[-1]) if sm_scale is None else sm_scale
    s = qh @ kh.transpose(-1, -2) * scale
    if is_causal:
        s = s.masked_fill(~torch.ones(s.shape[-2:], dtype=torch.bool).tril(), float("-inf"))
    return torch.logsumexp(s, dim=-1)


def _grouped_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, qg: tuple[int, int, int],
                       kg: tuple[int, int, int], pv16: bool, layout: str = "HND", is_causal: bool = False,
                       sm_scale: float | None = None, smooth_k: bool = True) -> torch.Tensor:
    """fp32 reference with arbitrary Q/K token groupings: int8 quantize-dequantize of Q and
    (smoothed) K, then V either unquantized (16-bit P·V) or fp8 per channel; exact attention."""
    qn, kn, vn = (ref.to_nhd(x, layout) for x in (q, k, v))
    kf = kn.float()
    if smooth_k:
        kf = kf - ref.k_mean_reference(kn).unsqueeze(1)
    qc, qs = ref.quantize_tokens(qn.float(), qg, "int8")
    kc, ks = ref.quantize_tokens(kf, kg, "int8")
    q_hat, k_hat = ref.dequantize_tokens(qc, qs, qg), ref.dequantize_tokens(kc, ks, kg)
    if pv16:
        v_hat = vn.float()
    else:
        rv = ref.quantize_v_reference(vn, ref.PER_THREAD)
        v_hat = ref.dequantize_v(rv.v_codes, rv.v_scale, ref.PER_THREAD)
    scale = 1.0 / math.sqrt(qn.shape[-1]) if sm_scale is None else sm_scale
    out, _ = ref.exact_attention_nhd(q_hat, k_hat, v_hat, scale, is_causal)
    return ref.from_nhd(out, layout)


def _assert_close_to(out: torch.Tensor, want: torch.Tensor, cos_bar: float, what: str) -> None:
    assert not torch.isnan(out.float()).any(), f"{what}: NaN in output"
    c = ref.cosine(out, want)
    assert c > cos_bar, f"{what}: cosine {c:.6f} <= {cos_bar}"


# --------------------------------------------------------------------------- #
# Names, signatures, version, import                                           #
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("name", UPSTREAM_NAMES)
def test_name_importable_from_package_and_core(name: str) -> None:
    pkg = importlib.import_module("sageattention")
    mod = importlib.import_module("sageattention.core")
    a, b = getattr(pkg, name), getattr(mod, name)
    assert callable(a)
    assert a is b, f"{name}: sageattention.{name} is not sageattention.core.{name}"
    assert name in sageattention.__all__
    assert name in core.__all__


@pytest.mark.parametrize("name", UPSTREAM_NAMES)
def test_upstream_positional_order_and_defaults(name: str) -> None:
    params = list(inspect.signature(_fn(name)).parameters.values())
    upstream = UPSTREAM_SIGNATURES[name]
    assert len(params) > len(upstream), f"{name}: fewer parameters than upstream"
    got = [(p.name, p.default) for p in params[: len(upstream)]]
    assert got == upstream, f"{name}: upstream part of the signature differs:\n got {got}\nwant {upstream}"
    # MATE's wrapper continues some upstream orders positionally (docs/CONTRACT.md §6)
    upstream = upstream + MATE_POSITIONAL_TAIL.get(name, [])
    got = [(p.name, p.default) for p in params[: len(upstream)]]
    assert got == upstream, f"{name}: MATE's positional continuation differs:\n got {got}\nwant {upstream}"
    for p in params[: len(upstream)]:
        assert p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD, f"{name}: {p.name} is {p.kind}"
    # other extras of this package are keyword-only, and everything ends in **kwargs
    assert params[-1].kind is inspect.Parameter.VAR_KEYWORD, f"{name}: does not end in **kwargs"
    for p in params[len(upstream):-1]:
        assert p.kind is inspect.Parameter.KEYWORD_ONLY, f"{name}: extra {p.name} is not keyword-only"


def test_sageattn_extras_in_mate_order() -> None:
    """MATE's wrapper takes its five options positionally after return_lse; upstream takes
    nothing positional there, so following MATE's order breaks no upstream call."""
    params = list(inspect.signature(sageattention.sageattn).parameters.values())
    got = [(p.name, p.default, p.kind) for p in params[7:12]]
    assert got == [(n, d, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n, d in MATE_POSITIONAL_TAIL["sageattn"]]


def _positional_case(name: str, layout: str) -> tuple[tuple, dict]:
    """An upstream-style positional call and the same call with keywords."""
    if name == "sageattn":
        return (layout, True, 0.11, False), {"tensor_layout": layout, "is_causal": True, "sm_scale": 0.11}
    if name == "sageattn_qk_int8_pv_fp16_triton":
        return ((layout, "cuda", True, None, 0.11, True, False),
                {"tensor_layout": layout, "is_causal": True, "sm_scale": 0.11})
    if name == "sageattn_qk_int8_pv_fp8_cuda_sm90":
        return ((layout, True, "per_thread", 0.11, "fp32", True, False),
                {"tensor_layout": layout, "is_causal": True, "sm_scale": 0.11})
    accum = "fp32" if name == "sageattn_qk_int8_pv_fp16_cuda" else "fp32+fp16"
    return ((layout, True, "per_thread", 0.11, accum, True, False, False),
            {"tensor_layout": layout, "is_causal": True, "sm_scale": 0.11})


@pytest.mark.parametrize("layout", ["HND", "NHD"])
@pytest.mark.parametrize("name", DENSE)
def test_upstream_positional_call(name: str, layout: str) -> None:
    """Positional arguments land where upstream puts them: the result is causal, uses the
    given sm_scale and layout (checked against fp32 SDPA) and equals the keyword call."""
    q, k, v = _inputs(Nq=96, Nk=160, layout=layout)
    args, kwargs = _positional_case(name, layout)
    out_pos = _fn(name)(q, k, v, *args)
    out_kw = _fn(name)(q, k, v, **kwargs)
    assert isinstance(out_pos, torch.Tensor)
    assert torch.equal(out_pos, out_kw)
    want = _sdpa(q, k, v, layout, is_causal=True, sm_scale=0.11)
    _assert_close_to(out_pos, want, 0.999, f"{name} positional")
    noncausal = _sdpa(q, k, v, layout, is_causal=False, sm_scale=0.11)
    assert ref.rmse(out_pos, want) < ref.rmse(out_pos, noncausal) / 4


def test_distribution_version() -> None:
    from packaging.version import Version

    dist = importlib.metadata.version("sageattention")
    assert dist.startswith("2"), dist
    assert Version(dist) >= Version("2.1.1"), dist


def test_import_needs_no_triton_or_cuda() -> None:
    """In a fresh interpreter where any `import triton` fails and no GPU is visible,
    `import sageattention` (and every upstream name) works and loads no triton.

    torch is imported before triton is blocked: CUDA builds of torch look triton up
    during their own import, which is torch's business, not ours. Any triton modules
    torch loaded are taken out of sys.modules while sageattention imports, so a triton
    import of ours cannot succeed by finding them there."""
    code = textwrap.dedent(
        """
        import importlib.abc, os, sys

        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        import torch

        def tritons():
            return {m for m in sys.modules if m == "triton" or m.startswith("triton.")}

        loaded_by_torch = {m: sys.modules.pop(m) for m in tritons()}

        class _NoTriton(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "triton" or name.startswith("triton."):
                    raise ImportError("triton is blocked in this test")
                return None

        sys.meta_path.insert(0, _NoTriton())
        import sageattention
        from sageattention import (sageattn, sageattn_qk_int8_pv_fp16_triton,
            sageattn_qk_int8_pv_fp16_cuda, sageattn_qk_int8_pv_fp8_cuda,
            sageattn_qk_int8_pv_fp8_cuda_sm90, sageattn_varlen)
        import sageattention.core, sageattention.ops
        assert not tritons(), sorted(tritons())
        sys.modules.update(loaded_by_torch)
        assert not torch.cuda.is_initialized()
        print("OK")
        """
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         check=False)
    assert res.returncode == 0 and "OK" in res.stdout, res.stdout + res.stderr


# --------------------------------------------------------------------------- #
# 16-bit vs fp8 P·V                                                             #
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("is_causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("name", FP16_PV)
def test_fp16_pv_variants_accuracy(name: str, dtype: torch.dtype, is_causal: bool) -> None:
    q, k, v = _inputs(Nq=200, Nk=300, dtype=dtype)
    out = _fn(name)(q, k, v, is_causal=is_causal)
    assert out.dtype == dtype and out.shape == q.shape
    want = _sdpa(q, k, v, is_causal=is_causal)
    _assert_close_to(out, want, 0.9995, f"{name} vs fp32 SDPA")
    # P and V in 16 bits: the only quantization left is Q·Kᵀ, by the variant's groupings
    qg, kg = GROUPINGS["triton" if name.endswith("triton") else "per_thread"]
    r = _grouped_reference(q, k, v, qg, kg, pv16=True, is_causal=is_causal)
    _assert_close_to(out, r, 0.99995, f"{name} vs 16-bit-P·V reference")
    # more accurate than an fp8-P·V variant, and not the same computation
    fp8 = sageattention.sageattn_qk_int8_pv_fp8_cuda(q, k, v, is_causal=is_causal)
    assert not torch.equal(out, fp8), f"{name}: output equals the fp8-P·V variant"
    assert ref.rel_l1(out, want) < ref.rel_l1(fp8, want), f"{name}: not more accurate than fp8 P·V"


@pytest.mark.parametrize("name", FP8_PV)
def test_fp8_pv_variants_match_fp8_reference(name: str) -> None:
    q, k, v = _inputs(Nq=128, Nk=256)
    out = _fn(name)(q, k, v)
    r = ref.reference_sageattn(q, k, v)
    assert ref.cosine(out, r.out) > 0.997 and ref.rel_l1(out, r.out) < 0.04 and ref.rmse(out, r.out) < 0.02
    _assert_close_to(out, _sdpa(q, k, v), 0.99, f"{name} vs SDPA")


@pytest.mark.parametrize("name", DENSE)
def test_return_lse_every_variant(name: str) -> None:
    q, k, v = _inputs(Hq=4, Hkv=2, Nq=72, Nk=200, layout="NHD")
    out, lse = _fn(name)(q, k, v, tensor_layout="NHD", is_causal=True, return_lse=True)
    assert out.shape == q.shape and out.dtype == q.dtype
    assert lse.dtype == torch.float32 and lse.shape == (1, 4, 72)
    want = _exact_lse(q, k, "NHD", is_causal=True)
    assert ref.max_abs(lse, want) < 0.05, ref.max_abs(lse, want)
    assert torch.equal(out, _fn(name)(q, k, v, tensor_layout="NHD", is_causal=True))


# --------------------------------------------------------------------------- #
# pv_accum_dtype, qk_quant_gran, smooth_v, quantization_backend                 #
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("name,accum", [(n, a) for n, vals in PV_ACCUM.items() for a in vals])
def test_pv_accum_dtype_accepted(name: str, accum: str) -> None:
    q, k, v = _inputs(Nq=64, Nk=160)
    out = _fn(name)(q, k, v, pv_accum_dtype=accum)
    assert out.shape == q.shape
    _assert_close_to(out, _sdpa(q, k, v), 0.999, f"{name}(pv_accum_dtype={accum!r})")


@pytest.mark.parametrize(
    "name,accum",
    [(n, a) for n, vals in PV_ACCUM.items() for a in PV_ACCUM_ALL + ("bf16", "fp8", "") if a not in vals]
    + [(n, None) for n in PV_ACCUM],
)
def test_pv_accum_dtype_rejected(name: str, accum: Any) -> None:
    q, k, v = _inputs(Nq=16, Nk=16, D=32)
    with pytest.raises(ValueError, match="pv_accum_dtype"):
        _fn(name)(q, k, v, pv_accum_dtype=accum)


@pytest.mark.parametrize("gran", ["per_warp", "per_thread"])
@pytest.mark.parametrize("name", CUDA_NAMED)
def test_qk_quant_gran_accepted(name: str, gran: str) -> None:
    q, k, v = _inputs(Nq=200, Nk=300)
    out = _fn(name)(q, k, v, qk_quant_gran=gran)
    _assert_close_to(out, _sdpa(q, k, v), 0.999, f"{name}(qk_quant_gran={gran!r}) vs SDPA")
    qg, kg = GROUPINGS[gran]
    pv16 = name == "sageattn_qk_int8_pv_fp16_cuda"
    r = _grouped_reference(q, k, v, qg, kg, pv16=pv16)
    assert ref.cosine(out, r) > 0.997 and ref.rel_l1(out, r) < 0.04 and ref.rmse(out, r) < 0.02


def test_per_warp_differs_from_per_thread() -> None:
    q, k, v = _inputs(Nq=200, Nk=300)
    f = sageattention.sageattn_qk_int8_pv_fp16_cuda
    a, b = f(q, k, v, qk_quant_gran="per_warp"), f(q, k, v, qk_quant_gran="per_thread")
    assert not torch.equal(a, b)
    ra = _grouped_reference(q, k, v, *GROUPINGS["per_warp"], pv16=True)
    rb = _grouped_reference(q, k, v, *GROUPINGS["per_thread"], pv16=True)
    # each is closer to the reference of its own granularity
    assert ref.rmse(a, ra) < ref.rmse(a, rb)
    assert ref.rmse(b, rb) < ref.rmse(b, ra)


@pytest.mark.parametrize("gran", ["per_block", "per_tensor", "per_channel", "PER_WARP", "warp", ""])
@pytest.mark.parametrize("name", CUDA_NAMED)
def test_qk_quant_gran_rejected(name: str, gran: str) -> None:
    q, k, v = _inputs(Nq=16, Nk=16, D=32)
    with pytest.raises(NotImplementedError, match="qk_quant_gran"):
        _fn(name)(q, k, v, qk_quant_gran=gran)


@pytest.mark.parametrize("layout,Hq,Hkv", [("HND", 2, 2), ("NHD", 4, 2)], ids=["HND", "NHD-gqa"])
@pytest.mark.parametrize("name,accum", [("sageattn_qk_int8_pv_fp8_cuda", "fp32+fp32"),
                                        ("sageattn_qk_int8_pv_fp16_cuda", "fp16+fp32")])
def test_smooth_v_honoured(name: str, accum: str, layout: str, Hq: int, Hkv: int) -> None:
    """V with a large per-channel offset: smooth_v=True stays accurate."""
    q, k, v = _inputs(Hq=Hq, Hkv=Hkv, Nq=128, Nk=256, layout=layout, dtype=torch.float16)
    offset = 20.0 + torch.linspace(-3, 3, 64)  # per channel, around 20
    v = (v.float() + offset).to(torch.float16)
    want = _sdpa(q, k, v, layout)
    f = _fn(name)
    on, lse_on = f(q, k, v, tensor_layout=layout, pv_accum_dtype=accum, smooth_v=True, return_lse=True)
    off, lse_off = f(q, k, v, tensor_layout=layout, pv_accum_dtype=accum, smooth_v=False, return_lse=True)
    assert on.dtype == torch.float16 and on.shape == q.shape
    _assert_close_to(on, want, 0.999, f"{name} smooth_v=True")
    # the offset is not what the test measures: compare the attention part around it
    bias = offset.view(1, 1, 1, -1)  # channels are the last dim in both layouts
    c_on = ref.cosine(on.float() - bias, want - bias)
    c_off = ref.cosine(off.float() - bias, want - bias)
    e_on, e_off = ref.rmse(on, want), ref.rmse(off, want)
    assert e_on < 0.01, f"{name}: smooth_v=True RMSE {e_on:.4f}"
    assert e_on <= e_off * 1.05, f"{name}: smooth_v=True RMSE {e_on:.4f} worse than off {e_off:.4f}"
    if name == "sageattn_qk_int8_pv_fp8_cuda":
        # fp8 per-channel V scales waste their range on the offset; smoothing must help
        assert e_on < e_off / 3, (e_on, e_off)
        assert c_on > 0.99 and c_on > c_off, (c_on, c_off)
    # smoothing V does not change the LSE
    assert torch.equal(lse_on, lse_off)


@pytest.mark.parametrize("name,accum", [("sageattn_qk_int8_pv_fp8_cuda", "fp32+fp16"),
                                        ("sageattn_qk_int8_pv_fp8_cuda", "fp32")])
def test_smooth_v_ignored_where_upstream_ignores_it(name: str, accum: str) -> None:
    q, k, v = _inputs(Nq=64, Nk=128, dtype=torch.float16, v_shift=20.0)
    f = _fn(name)
    assert torch.equal(f(q, k, v, pv_accum_dtype=accum, smooth_v=True),
                       f(q, k, v, pv_accum_dtype=accum, smooth_v=False))


@pytest.mark.parametrize("name,accum", [("sageattn_qk_int8_pv_fp8_cuda", "fp32+fp32"),
                                        ("sageattn_qk_int8_pv_fp16_cuda", "fp16+fp32")])
def test_smooth_v_without_keys(name: str, accum: str) -> None:
    """docs/CONTRACT.md §1.5: rows that see no key give 0 and LSE -inf; smooth_v must not change that."""
    q, k, v = _inputs(Nq=8, Nk=0, D=32)
    out, lse = _fn(name)(q, k, v, pv_accum_dtype=accum, smooth_v=True, return_lse=True)
    assert out.shape == q.shape
    assert torch.all(lse == float("-inf"))
    assert not torch.isnan(out).any(), "NaN output"
    assert torch.all(out == 0)


def test_quantization_backend_values() -> None:
    q, k, v = _inputs(Nq=64, Nk=128)
    f = sageattention.sageattn_qk_int8_pv_fp16_triton
    a = f(q, k, v, quantization_backend="triton")
    b = f(q, k, v, quantization_backend="cuda")
    assert torch.equal(a, b)
    _assert_close_to(a, _sdpa(q, k, v), 0.9995, "triton variant")
    for bad in ("cpu", "torch", "TRITON", "", None):
        with pytest.raises(ValueError, match="quantization_backend"):
            f(q, k, v, quantization_backend=bad)


# --------------------------------------------------------------------------- #
# Keywords                                                                      #
# --------------------------------------------------------------------------- #


def _call(name: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kw: Any) -> torch.Tensor:
    if name == "sageattn_varlen":
        _b, _h, n, _d = q.shape
        cu = torch.tensor([0, n], dtype=torch.int32)
        return _fn(name)(q[0].transpose(0, 1), k[0].transpose(0, 1), v[0].transpose(0, 1), cu, cu, n, n, **kw)
    return _fn(name)(q, k, v, **kw)


# flash-attn / SDPA spellings (causal, softmax_scale, scale, dropout_p) are aliases, not
# unknown keywords: tests/test_keyword_aliases.py.
@pytest.mark.parametrize("name", UPSTREAM_NAMES)
def test_unknown_keywords_ignored(name: str) -> None:
    q, k, v = _inputs(Nq=48, Nk=48, D=32)
    base = _call(name, q, k, v)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = _call(name, q, k, v, foo=1, window_size=(-1, -1), alibi_slopes=None, deterministic=True)
    assert torch.equal(out, base)


# --------------------------------------------------------------------------- #
# Head dims                                                                     #
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("D", [160, 256])
def test_large_head_dims(D: int) -> None:
    q, k, v = _inputs(Nq=128, Nk=256, D=D)
    out, lse = sageattention.sageattn(q, k, v, return_lse=True)
    assert out.shape == q.shape
    r = ref.reference_sageattn(q, k, v)
    assert ref.cosine(out, r.out) > 0.997 and ref.rel_l1(out, r.out) < 0.04 and ref.rmse(out, r.out) < 0.02
    assert ref.cosine(lse, r.lse) > 0.999
    for name in DENSE[1:]:
        o = _fn(name)(q, k, v)
        assert o.shape == q.shape
        _assert_close_to(o, _sdpa(q, k, v), 0.999, f"{name} D={D}")


@pytest.mark.parametrize("name", DENSE)
def test_head_dim_257_rejected(name: str) -> None:
    q, k, v = _inputs(Nq=16, Nk=16, D=257)
    with pytest.raises(ValueError, match="257"):
        _fn(name)(q, k, v)
    q, k, v = _inputs(Nq=16, Nk=16, D=64, Dv=257)
    with pytest.raises(ValueError, match="257"):
        _fn(name)(q, k, v)


@pytest.mark.parametrize("layout", ["HND", "NHD"])
@pytest.mark.parametrize("Dv", [32, 128])
def test_dv_differs_from_dqk(Dv: int, layout: str) -> None:
    q, k, v = _inputs(Hq=4, Hkv=2, Nq=128, Nk=256, D=64, Dv=Dv, layout=layout)
    out, lse = sageattention.sageattn(q, k, v, tensor_layout=layout, return_lse=True)
    assert out.shape == ref.layout_shape(1, 4, 128, Dv, layout)
    r = ref.reference_sageattn(q, k, v, layout)
    assert ref.cosine(out, r.out) > 0.997 and ref.rel_l1(out, r.out) < 0.04 and ref.rmse(out, r.out) < 0.02
    assert ref.cosine(lse, r.lse) > 0.999
    for name in FP16_PV:
        o = _fn(name)(q, k, v, tensor_layout=layout)
        assert o.shape == out.shape
        _assert_close_to(o, _sdpa(q, k, v, layout), 0.9995, f"{name} Dv={Dv}")
