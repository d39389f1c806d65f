"""Shapes and options of the public API: return forms, dtypes, layouts, GQA/MQA,
Nq != Nk, head dims, sequence lengths, strided inputs, empty inputs, smooth_k,
and quant_recipe overriding qk_quant_gran. Small shapes keep the suite fast."""

from __future__ import annotations

import pytest
import torch

import reference as ref
from reference import Recipe

import sageattention
from sageattention import sageattn, sageattn_qk_int8_pv_fp8_cuda_sm90

DTYPES = [torch.float16, torch.bfloat16]
DTYPE_IDS = ["fp16", "bf16"]
LAYOUTS = ["HND", "NHD"]

COS_SMALL = 0.99  # small random shapes: quantization noise is relatively larger
LSE_ATOL = 2e-2


def _inputs(
    B: int, Hq: int, Hkv: int, Nq: int, Nk: int, D: int, tensor_layout: str,
    dtype: torch.dtype = torch.bfloat16, seed: int = 0, Dv: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    Dv = D if Dv is None else Dv
    q = ref.randn(ref.layout_shape(B, Hq, Nq, D, tensor_layout), dtype=dtype, seed=seed + 1)
    k = ref.randn(ref.layout_shape(B, Hkv, Nk, D, tensor_layout), dtype=dtype, seed=seed + 2)
    v = ref.randn(ref.layout_shape(B, Hkv, Nk, Dv, tensor_layout), dtype=dtype, seed=seed + 3)
    return q, k, v


def _check_against_reference(
    out: torch.Tensor, lse: torch.Tensor | None, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
    tensor_layout: str, is_causal: bool, recipe: Recipe = ref.PER_THREAD, qk_dtype: str = "int8",
    smooth_k: bool = True, cos_bar: float = COS_SMALL,
) -> None:
    want = ref.reference_sageattn(q, k, v, tensor_layout, is_causal, None, recipe, qk_dtype, smooth_k)
    c = ref.cosine(out, want.out)
    assert c > cos_bar, f"cosine vs reference {c:.5f}"
    assert ref.max_abs(out, want.out) < 0.1
    if lse is not None:
        assert ref.max_abs(lse, want.lse) < LSE_ATOL


def _out_shape(q: torch.Tensor, v: torch.Tensor, tensor_layout: str) -> tuple[int, ...]:
    Dv = v.shape[-1]
    return tuple(q.shape[:-1]) + (Dv,)


def _lse_shape(q: torch.Tensor, tensor_layout: str) -> tuple[int, int, int]:
    if tensor_layout == "HND":
        return (q.shape[0], q.shape[1], q.shape[2])
    return (q.shape[0], q.shape[2], q.shape[1])


# --------------------------------------------------------------------------- #
# Return forms, dtypes, layouts                                                #
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("fp8_output", [False, True], ids=["out16", "outfp8"])
@pytest.mark.parametrize("return_lse", [False, True], ids=["nolse", "lse"])
@pytest.mark.parametrize("tensor_layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_return_forms(dtype: torch.dtype, tensor_layout: str, return_lse: bool, fp8_output: bool) -> None:
    q, k, v = _inputs(2, 4, 2, 77, 100, 64, tensor_layout, dtype, seed=100)
    for fn in (sageattn, sageattn_qk_int8_pv_fp8_cuda_sm90):
        res = fn(q, k, v, tensor_layout=tensor_layout, return_lse=return_lse, fp8_output=fp8_output)
        lse: torch.Tensor | None = None
        if not return_lse and not fp8_output:
            assert isinstance(res, torch.Tensor)
            out = res
        else:
            assert isinstance(res, tuple)
            assert len(res) == (1 + int(return_lse) + int(fp8_output))
        if fp8_output:
            out_fp8, out_scale = res[0], res[1]
            assert out_fp8.dtype == torch.float8_e4m3fn
            assert tuple(out_fp8.shape) == _out_shape(q, v, tensor_layout)
            assert out_fp8.is_contiguous()
            assert out_scale.dtype == torch.float32
            assert tuple(out_scale.shape) == _out_shape(q, v, tensor_layout)[:-1] + (1,)
            out = out_fp8.to(torch.float32) * out_scale
        elif return_lse:
            out = res[0]
        if not fp8_output:
            assert out.dtype == dtype
            assert tuple(out.shape) == _out_shape(q, v, tensor_layout)
            assert out.is_contiguous()
        if return_lse:
            lse = res[-1]
            assert lse.dtype == torch.float32
            assert tuple(lse.shape) == _lse_shape(q, tensor_layout)
        _check_against_reference(out, lse, q, k, v, tensor_layout, False)


@pytest.mark.parametrize("tensor_layout", LAYOUTS)
def test_output_is_fresh(tensor_layout: str) -> None:
    q, k, v = _inputs(1, 2, 2, 32, 32, 32, tensor_layout, seed=110)
    snap = [t.clone() for t in (q, k, v)]
    out = sageattn(q, k, v, tensor_layout=tensor_layout)
    for a, b in zip((q, k, v), snap):
        assert torch.equal(a, b), "inputs were modified"
    for t in (q, k, v):
        assert out.data_ptr() != t.data_ptr()
    assert out.is_contiguous()


# --------------------------------------------------------------------------- #
# Heads, lengths, head dims                                                    #
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("is_causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("tensor_layout", LAYOUTS)
@pytest.mark.parametrize("Hq, Hkv", [(8, 2), (8, 1), (4, 4)])
def test_gqa(Hq: int, Hkv: int, tensor_layout: str, is_causal: bool) -> None:
    q, k, v = _inputs(1, Hq, Hkv, 64, 200, 64, tensor_layout, seed=120)
    out, lse = sageattn(q, k, v, tensor_layout=tensor_layout, is_causal=is_causal, return_lse=True)
    assert tuple(out.shape) == tuple(q.shape)
    assert tuple(lse.shape) == (1, Hq, 64)
    _check_against_reference(out, lse, q, k, v, tensor_layout, is_causal, cos_bar=0.997)
    # Query head h reads kv head h // (Hq // Hkv): the grouped result equals
    # the result with K/V repeated to Hq heads, up to per-head quantization
    # (repeating does not change per-(b, head) scales of the default recipe).
    dim = 1 if tensor_layout == "HND" else 2
    rep = Hq // Hkv
    out_rep = sageattn(q, k.repeat_interleave(rep, dim=dim), v.repeat_interleave(rep, dim=dim),
                       tensor_layout=tensor_layout, is_causal=is_causal)
    assert ref.cosine(out, out_rep) > 0.99999


@pytest.mark.parametrize("is_causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("Nq, Nk", [(1, 77), (77, 1), (128, 1000), (1000, 128), (5, 300), (300, 5)])
def test_nq_ne_nk(Nq: int, Nk: int, is_causal: bool) -> None:
    q, k, v = _inputs(1, 2, 2, Nq, Nk, 64, "HND", seed=130)
    out, lse = sageattn(q, k, v, is_causal=is_causal, return_lse=True)
    assert tuple(out.shape) == (1, 2, Nq, 64)
    assert tuple(lse.shape) == (1, 2, Nq)
    assert torch.isfinite(lse).all()  # top-left causal: every row sees key 0
    _check_against_reference(out, lse, q, k, v, "HND", is_causal)


@pytest.mark.parametrize("tensor_layout", LAYOUTS)
@pytest.mark.parametrize("D", [1, 40, 64, 72, 96, 128])
def test_head_dims(D: int, tensor_layout: str) -> None:
    q, k, v = _inputs(1, 2, 1, 77, 150, D, tensor_layout, seed=140 + D)
    for qk_dtype in ("int8", "fp8"):
        out, lse = sageattn(q, k, v, tensor_layout=tensor_layout, return_lse=True, qk_quant_dtype=qk_dtype)
        assert tuple(out.shape) == tuple(q.shape)
        _check_against_reference(out, lse, q, k, v, tensor_layout, False, qk_dtype=qk_dtype)


@pytest.mark.parametrize("is_causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("N", [1, 77, 128, 1000])
def test_seq_lens(N: int, is_causal: bool) -> None:
    q, k, v = _inputs(1, 2, 2, N, N, 64, "NHD", torch.float16, seed=150)
    out, lse = sageattn(q, k, v, tensor_layout="NHD", is_causal=is_causal, return_lse=True)
    assert tuple(out.shape) == (1, N, 2, 64) and out.dtype == torch.float16
    assert tuple(lse.shape) == (1, 2, N)
    _check_against_reference(out, lse, q, k, v, "NHD", is_causal)


@pytest.mark.parametrize("recipe", list(ref.RECIPES.values()), ids=list(ref.RECIPES))
def test_recipes_odd_lengths(recipe: Recipe) -> None:
    """Partial last blocks (N not a multiple of 128 / 16) for every recipe."""
    q, k, v = _inputs(2, 2, 1, 200, 333, 32, "HND", seed=160)
    for qk_dtype in ("int8", "fp8"):
        out, lse = sageattn(q, k, v, return_lse=True, is_causal=True, quant_recipe=recipe, qk_quant_dtype=qk_dtype)
        _check_against_reference(out, lse, q, k, v, "HND", True, recipe, qk_dtype)


@pytest.mark.parametrize("B", [1, 3])
def test_batches_are_independent(B: int) -> None:
    q, k, v = _inputs(B, 2, 2, 40, 90, 32, "HND", seed=170)
    out = sageattn(q, k, v)
    for b in range(B):
        ob = sageattn(q[b : b + 1], k[b : b + 1], v[b : b + 1])
        assert ref.cosine(out[b : b + 1], ob) > 0.99999


# --------------------------------------------------------------------------- #
# Strided inputs                                                               #
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("tensor_layout", LAYOUTS)
def test_non_contiguous_inputs(tensor_layout: str) -> None:
    B, H, N, D = 2, 2, 100, 64
    q_c, k_c, v_c = _inputs(B, H, H, N, N, D, tensor_layout, seed=180)
    # q: stored in the other layout, handed over as a transposed view
    q = q_c.transpose(1, 2).contiguous().transpose(1, 2)
    # k: every other token of a longer sequence
    n_dim = 2 if tensor_layout == "HND" else 1
    k_big = torch.repeat_interleave(k_c, 2, dim=n_dim)
    k = k_big[:, :, ::2] if n_dim == 2 else k_big[:, ::2]
    # v: a channel slice of a wider tensor, and every other head
    v_big = torch.zeros(v_c.shape[:-1] + (D + 32,), dtype=v_c.dtype)
    v_big[..., 16 : 16 + D] = v_c
    h_dim = 1 if tensor_layout == "HND" else 2
    v_big2 = torch.repeat_interleave(v_big, 2, dim=h_dim)
    v = (v_big2[:, ::2] if h_dim == 1 else v_big2[:, :, ::2])[..., 16 : 16 + D]
    for t, c in ((q, q_c), (k, k_c), (v, v_c)):
        assert not t.is_contiguous()
        assert torch.equal(t, c)
    for causal in (False, True):
        want_out, want_lse = sageattn(q_c, k_c, v_c, tensor_layout=tensor_layout, is_causal=causal, return_lse=True)
        out, lse = sageattn(q, k, v, tensor_layout=tensor_layout, is_causal=causal, return_lse=True)
        assert out.is_contiguous() and tuple(out.shape) == tuple(q_c.shape)
        assert ref.cosine(out, want_out) > 0.99999
        assert ref.max_abs(out, want_out) < 1e-2
        assert ref.max_abs(lse, want_lse) < 1e-4
        _check_against_reference(out, lse, q_c, k_c, v_c, tensor_layout, causal)


def test_nhd_view_of_hnd_and_back() -> None:
    """The same numbers in both layouts give the same result (transposed)."""
    q, k, v = _inputs(1, 4, 2, 130, 260, 64, "HND", seed=190)
    out_hnd, lse_hnd = sageattn(q, k, v, tensor_layout="HND", return_lse=True)
    out_nhd, lse_nhd = sageattn(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                tensor_layout="NHD", return_lse=True)
    assert tuple(out_nhd.shape) == (1, 130, 4, 64) and out_nhd.is_contiguous()
    assert ref.cosine(out_nhd.transpose(1, 2), out_hnd) > 0.99999
    assert ref.max_abs(lse_nhd, lse_hnd) < 1e-4


# --------------------------------------------------------------------------- #
# Empty inputs                                                                 #
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("fp8_output", [False, True], ids=["out16", "outfp8"])
@pytest.mark.parametrize("tensor_layout", LAYOUTS)
@pytest.mark.parametrize("B, Nq, Nk", [(0, 16, 16), (2, 0, 16), (0, 0, 0), (2, 0, 0)])
def test_empty_inputs(B: int, Nq: int, Nk: int, tensor_layout: str, fp8_output: bool) -> None:
    q, k, v = _inputs(B, 4, 2, Nq, Nk, 32, tensor_layout, torch.float16, seed=200)
    res = sageattn(q, k, v, tensor_layout=tensor_layout, return_lse=True, fp8_output=fp8_output)
    out, lse = res[0], res[-1]
    assert out.numel() == 0
    assert tuple(out.shape) == tuple(q.shape)
    assert out.dtype == (torch.float8_e4m3fn if fp8_output else torch.float16)
    assert tuple(lse.shape) == _lse_shape(q, tensor_layout) and lse.dtype == torch.float32
    if fp8_output:
        assert tuple(res[1].shape) == tuple(q.shape[:-1]) + (1,)
    plain = sageattn(q, k, v, tensor_layout=tensor_layout, is_causal=True)
    assert isinstance(plain, torch.Tensor) and tuple(plain.shape) == tuple(q.shape)


@pytest.mark.parametrize("tensor_layout", LAYOUTS)
def test_no_keys(tensor_layout: str) -> None:
    """Nk = 0 with Nq > 0: every row sees no key -> output 0, LSE -inf."""
    q, k, v = _inputs(1, 2, 2, 8, 0, 32, tensor_layout, seed=210)
    out, lse = sageattn(q, k, v, tensor_layout=tensor_layout, return_lse=True)
    assert tuple(out.shape) == tuple(q.shape)
    assert torch.all(out == 0)
    assert tuple(lse.shape) == (1, 2, 8)
    assert torch.all(torch.isneginf(lse))


# --------------------------------------------------------------------------- #
# smooth_k and recipes                                                         #
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("tensor_layout", LAYOUTS)
@pytest.mark.parametrize("qk_dtype, bias", [("int8", 1.0), ("fp8", 0.5)])
def test_smooth_k_on_off(qk_dtype: str, bias: float, tensor_layout: str) -> None:
    """K with a per-channel bias: smoothing changes the quantization, not the
    attention; the LSE is corrected back to the original K (otherwise it would
    be off by sm_scale * q.mean_k, several units here)."""
    B, H, Nq, Nk, D = 1, 2, 128, 256, 64
    q = ref.randn(ref.layout_shape(B, H, Nq, D, tensor_layout), seed=220)
    shift = ref.randn((D,), dtype=torch.float32, seed=229) * bias
    k = ref.randn(ref.layout_shape(B, H, Nk, D, tensor_layout), seed=221, shift=shift)
    v = ref.randn(ref.layout_shape(B, H, Nk, D, tensor_layout), seed=222)
    on_out, on_lse = sageattn(q, k, v, tensor_layout=tensor_layout, return_lse=True, qk_quant_dtype=qk_dtype)
    off_out, off_lse = sageattn(q, k, v, tensor_layout=tensor_layout, return_lse=True, qk_quant_dtype=qk_dtype,
                                smooth_k=False)
    assert ref.cosine(on_out, off_out) > 0.995
    assert ref.max_abs(on_lse, off_lse) < 0.05
    # Against the exact (unquantized) LSE of the original K.
    qn, kn = ref.to_nhd(q, tensor_layout).double(), ref.to_nhd(k, tensor_layout).double()
    s = torch.einsum("bnhd,bmhd->bhnm", qn, kn) / D**0.5
    exact = torch.logsumexp(s, dim=-1)
    assert ref.max_abs(on_lse, exact) < 0.15
    assert (exact - on_lse).abs().mean() < 0.05
    # ... and the smoothing actually matters for this data (test sanity)
    mean = kn.mean(dim=1)
    corr = torch.einsum("bnhd,bhd->bhn", qn, mean) / D**0.5
    assert corr.abs().mean() > 0.2
    want_on = ref.reference_sageattn(q, k, v, tensor_layout, False, None, ref.PER_THREAD, qk_dtype, True)
    want_off = ref.reference_sageattn(q, k, v, tensor_layout, False, None, ref.PER_THREAD, qk_dtype, False)
    assert ref.cosine(on_out, want_on.out) > 0.997
    assert ref.cosine(off_out, want_off.out) > 0.997
    assert ref.max_abs(on_lse, want_on.lse) < 0.05
    assert ref.max_abs(off_lse, want_off.lse) < 2e-2


def test_quant_recipe_overrides_qk_quant_gran() -> None:
    q, k, v = _inputs(1, 2, 2, 130, 260, 64, "HND", seed=230)
    with pytest.raises(NotImplementedError):
        sageattn(q, k, v, qk_quant_gran="per_warp")
    out = sageattn(q, k, v, qk_quant_gran="per_warp", quant_recipe=(128, 128, -1, 1))
    same = sageattn(q, k, v, quant_recipe=(128, 128, -1, 1))
    assert torch.equal(out, same)
    _check_against_reference(out, None, q, k, v, "HND", False, ref.PER_BLOCK, cos_bar=0.997)
    # a list is as good as a tuple
    out_list = sageattn(q, k, v, quant_recipe=[128, 128, -1, 1])
    assert torch.equal(out_list, same)
    # and the recipe changes the computation (per-block vs default per-thread)
    default = sageattn(q, k, v)
    per_tensor = sageattn(q, k, v, quant_recipe=(-1, -1, -1, -1))
    assert not torch.equal(default, per_tensor)


@pytest.mark.parametrize("recipe", list(ref.RECIPES.values()), ids=list(ref.RECIPES))
def test_each_recipe_via_sm90(recipe: Recipe) -> None:
    q, k, v = _inputs(1, 2, 2, 64, 300, 64, "NHD", seed=240)
    out = sageattn_qk_int8_pv_fp8_cuda_sm90(q, k, v, "NHD", quant_recipe=recipe)
    assert torch.equal(out, sageattn(q, k, v, "NHD", quant_recipe=recipe))
    _check_against_reference(out, None, q, k, v, "NHD", False, recipe, cos_bar=0.997)
