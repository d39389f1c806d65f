"""The opt-in int8 P·V mode (docs/DESIGN.md, "The int8 P·V mode").

- choosing it: the `pv_quant_dtype` keyword, the SAGEATTN_CPU_PV variable, which wins,
  which entry points read the variable, bad values, backends without the mode;
- its arithmetic against an independent emulation in tests/reference.py (P codes per row
  and 128-key tile, integer P·V, scales after the dot), per recipe, causal or not;
- its accuracy: the contract's bars (docs/CONTRACT.md §5), and at least as close to fp32
  attention as the fp8 default, including at the benchmark's sequence length;
- the low-level API on int8 V codes, and that the public API is exactly that path.

Every SIMD path against the scalar one: tests/test_isa_paths.py (attention) and
tests/cpp/test_tile_ops.cc (the tile kernels, bitwise).
"""
from __future__ import annotations

from typing import Any

import pytest
import torch

import reference as ref
from reference import Recipe

import sageattention
import sageattention.ops as ops
from sageattention import (sageattn, sageattn_qk_int8_pv_fp16_cuda, sageattn_qk_int8_pv_fp16_triton,
                           sageattn_qk_int8_pv_fp8_cuda, sageattn_qk_int8_pv_fp8_cuda_sm90, sageattn_varlen)
from sageattention import _pv

RECIPE_IDS = list(ref.RECIPES)
RECIPE_VALUES = [ref.RECIPES[n] for n in RECIPE_IDS]
ENV = "SAGEATTN_CPU_PV"

# docs/CONTRACT.md §5 bars (the same as tests/test_sageattn_interface.py)
COS_BAR = 0.997
REL_L1_BAR = 0.04
RMSE_BAR = 0.02
LSE_COS_BAR = 0.999


def _qkv(B: int = 1, H: int = 2, Nq: int = 128, Nk: int = 1024, D: int = 128, layout: str = "HND",
         seed: int = 0, dtype: torch.dtype = torch.bfloat16) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    q = ref.randn(ref.layout_shape(B, H, Nq, D, layout), dtype=dtype, seed=seed + 1)
    k = ref.randn(ref.layout_shape(B, H, Nk, D, layout), dtype=dtype, seed=seed + 2)
    v = ref.randn(ref.layout_shape(B, H, Nk, D, layout), dtype=dtype, seed=seed + 3)
    return q, k, v


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv(ENV, raising=False)
    return monkeypatch


# --------------------------------------------------------------------------- #
# Choosing the mode                                                            #
# --------------------------------------------------------------------------- #


def test_resolution_rules(no_env: pytest.MonkeyPatch) -> None:
    r = _pv.resolve_pv_mode
    assert r(None, "cpu") is _pv.PvMode.FP8
    assert r("int8", "cpu") is _pv.PvMode.INT8
    assert r("fp8", "cpu") is _pv.PvMode.FP8
    no_env.setenv(ENV, "int8")
    assert r(None, "cpu") is _pv.PvMode.INT8
    assert r("fp8", "cpu") is _pv.PvMode.FP8  # the keyword wins
    assert r(None, "musa") is _pv.PvMode.FP8  # CPU-only variable
    assert r("int8", "musa") is _pv.PvMode.INT8  # the backend refuses it, not the resolution
    no_env.setenv(ENV, "fp8")
    assert r(None, "cpu") is _pv.PvMode.FP8
    assert r("int8", "cpu") is _pv.PvMode.INT8
    no_env.setenv(ENV, "")  # empty: unset
    assert r(None, "cpu") is _pv.PvMode.FP8


@pytest.mark.parametrize("bad", ["INT8", "int4", "fp16", "", " int8", 8, True, b"int8"])
def test_bad_keyword_is_a_value_error(bad: Any, no_env: pytest.MonkeyPatch) -> None:
    q, k, v = _qkv(Nq=8, Nk=8, D=16)
    with pytest.raises(ValueError, match=r"pv_quant_dtype.*'fp8' or 'int8'"):
        sageattn(q, k, v, pv_quant_dtype=bad)
    with pytest.raises(ValueError, match=r"pv_quant_dtype"):
        sageattn_qk_int8_pv_fp8_cuda_sm90(q, k, v, pv_quant_dtype=bad)


@pytest.mark.parametrize("bad", ["INT8", "int4", "1", "fp8 ", "auto"])
def test_bad_variable_is_a_value_error(bad: str, no_env: pytest.MonkeyPatch) -> None:
    q, k, v = _qkv(Nq=8, Nk=8, D=16)
    no_env.setenv(ENV, bad)
    for fn in (sageattn, sageattn_qk_int8_pv_fp8_cuda, sageattn_qk_int8_pv_fp8_cuda_sm90):
        with pytest.raises(ValueError, match=rf"{ENV}.*'fp8' or 'int8'.*{bad.strip() or bad}"):
            fn(q, k, v)
    # An explicit keyword does not read the variable at all.
    assert sageattn(q, k, v, pv_quant_dtype="fp8").shape == q.shape


def test_keyword_and_variable_select_the_same_computation(no_env: pytest.MonkeyPatch) -> None:
    q, k, v = _qkv(Nq=200, Nk=300, D=64, seed=4)
    default = sageattn(q, k, v)
    int8_kw = sageattn(q, k, v, pv_quant_dtype="int8")
    assert not torch.equal(default, int8_kw)  # a different P·V really ran
    no_env.setenv(ENV, "int8")
    assert torch.equal(sageattn(q, k, v), int8_kw)
    assert torch.equal(sageattn(q, k, v, pv_quant_dtype="fp8"), default)
    no_env.setenv(ENV, "fp8")
    assert torch.equal(sageattn(q, k, v), default)
    assert torch.equal(sageattn(q, k, v, pv_quant_dtype="int8"), int8_kw)


def test_upstream_fp8_pv_names_honour_both(no_env: pytest.MonkeyPatch) -> None:
    """The names diffusers / ComfyUI call read the variable; our keyword works there too."""
    q, k, v = _qkv(Nq=130, Nk=260, D=64, seed=5)
    for fn in (sageattn_qk_int8_pv_fp8_cuda, sageattn_qk_int8_pv_fp8_cuda_sm90):
        no_env.delenv(ENV, raising=False)
        fp8 = fn(q, k, v, pv_accum_dtype="fp32+fp32")
        int8 = fn(q, k, v, pv_accum_dtype="fp32+fp32", pv_quant_dtype="int8")
        assert not torch.equal(fp8, int8)
        assert torch.equal(int8, sageattn(q, k, v, pv_quant_dtype="int8"))
        no_env.setenv(ENV, "int8")
        assert torch.equal(fn(q, k, v, pv_accum_dtype="fp32+fp32"), int8)
        assert torch.equal(fn(q, k, v, pv_accum_dtype="fp32+fp32", pv_quant_dtype="fp8"), fp8)


def test_16bit_pv_entry_points_ignore_the_variable(no_env: pytest.MonkeyPatch) -> None:
    q, k, v = _qkv(Nq=70, Nk=90, D=32, seed=6)
    qv, kv, vv = (x.transpose(1, 2).reshape(-1, 2, 32) for x in (q, k, v))  # (total, H, D)
    cu_q = torch.tensor([0, 70], dtype=torch.int32)
    cu_k = torch.tensor([0, 90], dtype=torch.int32)
    calls = [
        lambda: sageattn_qk_int8_pv_fp16_cuda(q, k, v),
        lambda: sageattn_qk_int8_pv_fp16_triton(q, k, v),
        lambda: sageattn_varlen(qv, kv, vv, cu_q, cu_k, 70, 90),
    ]
    before = [c() for c in calls]
    no_env.setenv(ENV, "int8")
    for c, b in zip(calls, before):
        assert torch.equal(c(), b)


def test_backend_without_the_mode_raises_naming_itself() -> None:
    from sageattention._backends.musa import MusaBackend

    v = ref.randn((1, 8, 1, 16), seed=1)
    with pytest.raises(NotImplementedError, match=r"musa"):
        MusaBackend().quantize_v(v, quant_recipe=(128, 16, -1, 1), dtype="int8")
    with pytest.raises(NotImplementedError, match=r"pv_quant_dtype.*int8.*'musa'"):
        _pv.check_backend_runs(_pv.PvMode.INT8, MusaBackend())
    _pv.check_backend_runs(_pv.PvMode.FP8, MusaBackend())


def test_musa_backend_refuses_the_keyword_and_ignores_the_variable(fake_mate: Any,
                                                                  no_env: pytest.MonkeyPatch) -> None:
    """SAGEATTN_BACKEND=musa (tests' fake MATE) on CPU tensors: the keyword is refused by
    name, and the CPU-only variable is not read (the call runs MATE's fp8 P·V)."""
    q, k, v = _qkv(Nq=64, Nk=64, D=64, seed=13)
    no_env.setenv("SAGEATTN_BACKEND", "musa")
    with pytest.raises(NotImplementedError, match=r"pv_quant_dtype.*'musa'"):
        sageattn(q, k, v, pv_quant_dtype="int8")
    fp8 = sageattn(q, k, v)
    no_env.setenv(ENV, "int8")
    assert torch.equal(sageattn(q, k, v), fp8)


# --------------------------------------------------------------------------- #
# Arithmetic and accuracy                                                      #
# --------------------------------------------------------------------------- #


def _emulated(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: str, causal: bool,
              recipe: Recipe) -> torch.Tensor:
    """tests/reference.py's independent emulation of the mode (caller's layout, float32)."""
    qn, kn, vn = (ref.to_nhd(x, layout) for x in (q, k, v))
    rq = ref.quantize_qk_reference(qn, kn, recipe, "int8", True)
    rv = ref.quantize_v_reference(vn, recipe, "int8")
    q_hat = ref.dequantize_tokens(rq.q_codes, rq.q_scale, ref.q_grouping(recipe))
    k_hat = ref.dequantize_tokens(rq.k_codes, rq.k_scale, ref.k_grouping(recipe))
    sm_scale = qn.shape[-1] ** -0.5
    out = ref.int8_pv_attention_nhd(q_hat, k_hat, rv.v_codes, rv.v_scale, recipe, sm_scale, causal)
    return ref.from_nhd(out, layout)


@pytest.mark.parametrize("is_causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("recipe", RECIPE_VALUES, ids=RECIPE_IDS)
def test_matches_the_emulated_arithmetic(recipe: Recipe, is_causal: bool) -> None:
    """Far tighter than the accuracy bars: the same P codes, V codes and scales, so only
    float rounding (and rare P codes one step apart where exp2 differs) remain."""
    q, k, v = _qkv(Nq=150, Nk=333, D=64, layout="NHD", seed=7)
    out = ops_int8_attention(q, k, v, recipe, is_causal)
    want = _emulated(q, k, v, "NHD", is_causal, recipe)
    err = (out - want).abs().max().item()
    assert err < 2e-3 * want.abs().max().item(), f"max |out - emulation| {err:.2e}"


def ops_int8_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, recipe: Recipe, causal: bool,
                       out_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The low-level API on int8 V codes (NHD in and out)."""
    qq = ops.quantize_qk(q, k, quant_recipe=recipe)
    qv = ops.quantize_v(v, quant_recipe=recipe, dtype="int8")
    assert qv.v_codes.dtype == torch.int8
    return ops.attention_quantized(qq.q_codes, qq.k_codes, qv.v_codes, qq.q_scale, qq.k_scale, qv.v_scale, None,
                                   causal=causal, quant_recipe=recipe, k_mean=qq.k_mean, out_dtype=out_dtype)


@pytest.mark.parametrize("recipe", RECIPE_VALUES, ids=RECIPE_IDS)
def test_public_api_is_the_low_level_path(recipe: Recipe) -> None:
    q, k, v = _qkv(Nq=140, Nk=270, D=96, layout="NHD", seed=8)
    pub = sageattn(q, k, v, tensor_layout="NHD", quant_recipe=recipe, pv_quant_dtype="int8")
    low = ops_int8_attention(q, k, v, recipe, False, out_dtype=torch.bfloat16)
    assert torch.equal(pub, low)


@pytest.mark.parametrize("is_causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("recipe", RECIPE_VALUES, ids=RECIPE_IDS)
def test_at_least_as_accurate_as_fp8(recipe: Recipe, is_causal: bool) -> None:
    """Against fp32 attention on the unquantized inputs (the contract's §5 inputs)."""
    q, k, v = _qkv(seed=9)
    exact = ref.unquantized_attention(q, k, v, "HND", is_causal)
    errs = {}
    for mode in ("fp8", "int8"):
        out = sageattn(q, k, v, is_causal=is_causal, quant_recipe=recipe, pv_quant_dtype=mode)
        errs[mode] = (ref.cosine(out, exact), ref.rel_l1(out, exact), ref.rmse(out, exact))
    (c8, l8, r8), (ci, li, ri) = errs["fp8"], errs["int8"]
    assert ci >= c8 and li <= l8 and ri <= r8, f"int8 {errs['int8']} vs fp8 {errs['fp8']}"


def test_cosine_at_the_benchmark_length() -> None:
    """The benchmark's sequence length and head dim (N = 8192, D = 128): cosine against fp32
    attention >= 0.999, on a slice of the queries (the fp32 reference of all of them would
    dominate the suite's time; every query row runs the same kernel)."""
    q, k, v = _qkv(B=1, H=2, Nq=8192, Nk=8192, D=128, seed=10)
    out = sageattn(q, k, v, pv_quant_dtype="int8")
    rows = slice(0, 8192, 16)
    exact = ref.unquantized_attention(q[:, :, rows], k, v)
    c = ref.cosine(out[:, :, rows], exact)
    assert c >= 0.999, f"cosine {c:.5f}"


def test_int8_v_codes_at_the_low_level_api() -> None:
    """attention_quantized runs the int8 mode on int8 V; its V scale shapes are checked."""
    q, k, v = _qkv(Nq=64, Nk=64, D=32, layout="NHD", seed=11)
    qq = ops.quantize_qk(q, k)
    qv = ops.quantize_v(v, dtype="int8")
    with pytest.raises(ValueError, match=r"v_scale"):
        ops.attention_quantized(qq.q_codes, qq.k_codes, qv.v_codes, qq.q_scale, qq.k_scale, qv.v_scale[..., :-1],
                                None, k_mean=qq.k_mean)
    with pytest.raises(TypeError, match=r"v_scale"):
        ops.attention_quantized(qq.q_codes, qq.k_codes, qv.v_codes, qq.q_scale, qq.k_scale, None, None)
    out8, scale8 = ops.attention_quantized(qq.q_codes, qq.k_codes, qv.v_codes, qq.q_scale, qq.k_scale, qv.v_scale,
                                           None, fp8_output=True, k_mean=qq.k_mean)
    out = ops.attention_quantized(qq.q_codes, qq.k_codes, qv.v_codes, qq.q_scale, qq.k_scale, qv.v_scale, None,
                                  k_mean=qq.k_mean, out_dtype=torch.float32)
    assert ref.max_abs(out8.float() * scale8, out) < 5e-2


def test_rows_without_keys_and_nonfinite_rows() -> None:
    """Fully masked rows give 0 (LSE -inf); a NaN input poisons its rows, never others."""
    q, k, v = _qkv(Nq=70, Nk=90, D=64, layout="HND", seed=12)
    mask = torch.rand(1, 2, 70, 90, generator=torch.Generator().manual_seed(3)) > 0.3
    mask[:, :, ::7, :] = False
    mask[:, 1, 5, :64] = False  # sees the second key tile only
    out, lse = sageattn(q, k, v, attn_mask=mask, return_lse=True, pv_quant_dtype="int8")
    dead = ~mask.any(dim=-1)
    assert bool((out[dead] == 0).all()) and bool(torch.isneginf(lse[dead]).all())
    assert bool(torch.isfinite(out[~dead]).all())
    q2 = q.clone()
    q2[0, 0, 3, 5] = float("nan")
    out2 = sageattn(q2, k, v, pv_quant_dtype="int8", quant_recipe=(128, 128, -1, 1))
    assert bool(out2[0, 0, 3].isnan().all())
    assert bool(torch.isfinite(out2[0, 1]).all())
