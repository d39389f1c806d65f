"""The MUSA backend against MATE's contract, on CPU tensors, through a fake MATE.

The fake (tests/fake_mate, fixture `fake_mate` in conftest.py) is written from MATE's
published source: it raises on any call that breaks what MATE's kernel relies on, then
computes with our CPU core and returns MATE's output forms. SAGEATTN_BACKEND=musa sends
every call through the MUSA backend, so these tests check (a) that the backend speaks
MATE's contract and (b) that what it hands back matches the CPU backend.
No test here runs on MUSA hardware.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import pytest
import torch

import reference as ref
import sageattention
from sageattention import ops
from sageattention._backends import BACKEND_ENV, get_backend, mate_layout, torch_quant
from sageattention._recipes import PER_BLOCK, PER_BLOCK_V, PER_TENSOR, PER_THREAD

RECIPES = [PER_TENSOR, PER_BLOCK, PER_THREAD, PER_BLOCK_V]
RECIPE_IDS = ["per_tensor", "per_block", "per_thread", "per_block_v"]
DTYPES = [torch.float16, torch.bfloat16]
DTYPE_IDS = ["fp16", "bf16"]


def _inputs(layout: str, dtype: torch.dtype, B: int = 2, Hq: int = 4, Hkv: int = 2, Nq: int = 200,
            Nk: int = 300, D: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """GQA (Hq = 2·Hkv), sequence lengths that leave partial 128-token blocks."""
    q = ref.randn(ref.layout_shape(B, Hq, Nq, D, layout), dtype=dtype, seed=seed + 1)
    k = ref.randn(ref.layout_shape(B, Hkv, Nk, D, layout), dtype=dtype, seed=seed + 2, shift=0.5)
    v = ref.randn(ref.layout_shape(B, Hkv, Nk, D, layout), dtype=dtype, seed=seed + 3)
    return q, k, v


def _on(backend: str, monkeypatch: pytest.MonkeyPatch, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    monkeypatch.setenv(BACKEND_ENV, backend)
    return fn(*args, **kwargs)


def _both(monkeypatch: pytest.MonkeyPatch, fake: Any, fn: Callable[..., Any], *args: Any,
          **kwargs: Any) -> tuple[Any, Any]:
    """fn on the CPU backend, then on the MUSA backend (which must reach the fake once)."""
    want = _on("cpu", monkeypatch, fn, *args, **kwargs)
    before = len(fake.calls)
    got = _on("musa", monkeypatch, fn, *args, **kwargs)
    assert len(fake.calls) == before + 1, "the MUSA backend did not call MATE's sage_attn_quantized"
    return got, want


def _assert_out_matches(got: torch.Tensor, want: torch.Tensor) -> None:
    """MATE writes bf16 and the backend casts to q's dtype: bf16 results are the CPU core's
    bits; fp16 results differ from the CPU backend's by at most one bf16 rounding."""
    assert got.dtype == want.dtype and got.shape == want.shape and got.stride() == want.stride()
    if want.dtype == torch.bfloat16:
        assert torch.equal(got, want)
    else:
        torch.testing.assert_close(got.float(), want.float(), rtol=2 ** -8, atol=1e-3)
        assert ref.cosine(got, want) > 0.99999


def _assert_lse_matches(got: torch.Tensor, want: torch.Tensor) -> None:
    # Same core, same codes; the smoothing shift is summed in another order than the C++ loop.
    assert got.dtype == torch.float32 and got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-6, atol=2e-6)


# --------------------------------------------------------------------------- #
# The public API through the MUSA backend matches the CPU backend              #
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("is_causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("qk_dtype", ["int8", "fp8"])
@pytest.mark.parametrize("recipe", RECIPES, ids=RECIPE_IDS)
@pytest.mark.parametrize("layout", ["HND", "NHD"])
def test_sageattn_matches_cpu(fake_mate: Any, monkeypatch: pytest.MonkeyPatch, layout: str, recipe: tuple,
                              qk_dtype: str, dtype: torch.dtype, is_causal: bool) -> None:
    q, k, v = _inputs(layout, dtype)
    (out, lse), (want, want_lse) = _both(
        monkeypatch, fake_mate, sageattention.sageattn, q, k, v, tensor_layout=layout, is_causal=is_causal,
        return_lse=True, qk_quant_dtype=qk_dtype, quant_recipe=recipe,
    )
    call = fake_mate.calls[-1]
    assert call["recipe"] == recipe and call["mode"] == mate_layout.MATE_QUANT_MODES[recipe]
    assert call["qk_int8"] == (qk_dtype == "int8") and call["causal"] is is_causal
    assert out.dtype == dtype
    _assert_out_matches(out, want)
    _assert_lse_matches(lse, want_lse)


@pytest.mark.parametrize("qk_dtype", ["int8", "fp8"])
@pytest.mark.parametrize("recipe", RECIPES, ids=RECIPE_IDS)
@pytest.mark.parametrize("layout", ["HND", "NHD"])
def test_fp8_output_matches_cpu(fake_mate: Any, monkeypatch: pytest.MonkeyPatch, layout: str, recipe: tuple,
                                qk_dtype: str) -> None:
    q, k, v = _inputs(layout, torch.float16, seed=5)
    (o, o_scale, lse), (wo, wo_scale, wlse) = _both(
        monkeypatch, fake_mate, sageattention.sageattn, q, k, v, tensor_layout=layout, return_lse=True,
        qk_quant_dtype=qk_dtype, quant_recipe=recipe, fp8_output=True,
    )
    assert o.dtype == torch.float8_e4m3fn and o_scale.dtype == torch.float32
    assert o.shape == q.shape and o_scale.shape == q.shape[:-1] + (1,)  # the caller's layout
    assert torch.equal(o.view(torch.uint8), wo.view(torch.uint8))
    assert torch.equal(o_scale, wo_scale)
    _assert_lse_matches(lse, wlse)
    # Without return_lse: the two-element form.
    got = _on("musa", monkeypatch, sageattention.sageattn, q, k, v, tensor_layout=layout,
              qk_quant_dtype=qk_dtype, quant_recipe=recipe, fp8_output=True)
    assert isinstance(got, tuple) and len(got) == 2 and torch.equal(got[1], wo_scale)


def test_lse_is_corrected_for_smoothing(fake_mate: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """MATE's kernel returns the LSE of the smoothed K; the backend adds sm_scale·q̂·mean_k
    back, so the result is the LSE of the original K (docs/CONTRACT.md §3)."""
    q, k, v = _inputs("HND", torch.bfloat16, seed=9)  # k has a +0.5 shift: a large mean
    monkeypatch.setenv(BACKEND_ENV, "musa")
    _, lse = sageattention.sageattn(q, k, v, return_lse=True)
    _, lse_raw = sageattention.sageattn(q, k - k.float().mean(dim=2, keepdim=True).to(k.dtype), v,
                                        return_lse=True, smooth_k=False)
    exact = torch.logsumexp(
        (q.float() @ k.float().repeat_interleave(2, dim=1).transpose(-1, -2)) / math.sqrt(q.shape[-1]), dim=-1
    )
    assert (lse - lse_raw).abs().max() > 0.1, "the smoothing shift is not applied"
    assert (lse - exact).abs().max() < 2e-2
    _, lse_plain = sageattention.sageattn(q, k, v, return_lse=True, smooth_k=False)
    assert (lse_plain - exact).abs().max() < 2e-2


@pytest.mark.parametrize("layout", ["HND", "NHD"])
def test_upstream_variants_match_cpu(fake_mate: Any, monkeypatch: pytest.MonkeyPatch, layout: str) -> None:
    """The fp8-P·V upstream names (default recipe, smooth_v, smooth_k off) run on MATE."""
    q, k, v = _inputs(layout, torch.bfloat16, seed=3)
    cases: list[tuple[Callable[..., Any], dict]] = [
        (sageattention.sageattn_qk_int8_pv_fp8_cuda_sm90, dict(is_causal=True, return_lse=True)),
        (sageattention.sageattn_qk_int8_pv_fp8_cuda, dict(smooth_v=True, pv_accum_dtype="fp32+fp32")),
        (sageattention.sageattn, dict(smooth_k=False, sm_scale=0.3)),
    ]
    for fn, kw in cases:
        got, want = _both(monkeypatch, fake_mate, fn, q, k, v, tensor_layout=layout, **kw)
        for g, w in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
            if g.dtype == torch.float32:
                _assert_lse_matches(g, w)
            else:
                _assert_out_matches(g, w)


def test_low_level_api_matches_cpu(fake_mate: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """ops.quantize_qk / quantize_v / attention_quantized keep OUR scale layouts on every
    backend; the MUSA backend converts them for MATE. Caller-provided out buffers too."""
    q, k, v = _inputs("NHD", torch.float16, seed=11)

    def run() -> tuple[torch.Tensor, ...]:
        qq = ops.quantize_qk(q, k, quant_recipe=PER_THREAD)
        qv = ops.quantize_v(v, quant_recipe=PER_THREAD)
        out = torch.empty(q.shape, dtype=torch.float16).transpose(0, 1).contiguous().transpose(0, 1)
        res = ops.attention_quantized(qq.q_codes, qq.k_codes, qv.v_codes, qq.q_scale, qq.k_scale, qv.v_scale,
                                      None, False, PER_THREAD, True, False, k_mean=qq.k_mean,
                                      out_dtype=torch.float16, out=out)
        assert res[0] is out
        return res

    (o, lse), (wo, wlse) = _both(monkeypatch, fake_mate, run)
    torch.testing.assert_close(o.float(), wo.float(), rtol=2 ** -8, atol=1e-3)
    _assert_lse_matches(lse, wlse)


# --------------------------------------------------------------------------- #
# What MATE lacks is refused, naming MATE                                      #
# --------------------------------------------------------------------------- #


def test_refusals_name_mate(fake_mate: Any) -> None:
    q, k, v = _inputs("HND", torch.bfloat16, Nq=128, Nk=128)
    mask = torch.ones(128, 128, dtype=torch.bool)
    with pytest.raises(NotImplementedError, match="attn_mask.*MATE"):
        sageattention.sageattn(q, k, v, attn_mask=mask)
    for fn in (sageattention.sageattn_qk_int8_pv_fp16_cuda, sageattention.sageattn_qk_int8_pv_fp16_triton):
        with pytest.raises(NotImplementedError, match="MATE"):
            fn(q, k, v)
    with pytest.raises(NotImplementedError, match="per_warp.*MATE"):
        sageattention.sageattn_qk_int8_pv_fp8_cuda_sm90(q, k, v, qk_quant_gran="per_warp")
    qv, kv, vv = (x.transpose(1, 2).reshape(-1, x.shape[1], x.shape[3]) for x in (q, k, v))
    cu = torch.tensor([0, 128, 256], dtype=torch.int32)
    with pytest.raises(NotImplementedError, match="varlen.*MATE"):
        sageattention.sageattn_varlen(qv, kv, vv, cu, cu, 128, 128)
    with pytest.raises(NotImplementedError, match="MATE"):  # int8 V (the int8 P·V mode)
        ops.quantize_v(v.transpose(1, 2), dtype="int8")
    qb, kb, vb = _inputs("HND", torch.bfloat16, Nq=16, Nk=16, D=160)
    with pytest.raises(NotImplementedError, match="head dim 160.*MATE"):
        sageattention.sageattn(qb, kb, vb)
    assert fake_mate.calls == []


def test_int32_element_limit_names_mate(fake_mate: Any) -> None:
    """MATE's binding counts elements and strides in int32: larger tensors are refused
    before MATE is called (zero-stride views: nothing is allocated)."""
    backend = get_backend(torch.device("cpu"))
    assert backend.name == "musa"
    big_q = torch.zeros(1, dtype=torch.int8).expand(1, 2**24, 2, 64)  # 2^31 elements
    k = torch.zeros(1, dtype=torch.int8).expand(1, 128, 2, 64)
    v = torch.zeros(1, dtype=torch.float8_e4m3fn).expand(1, 128, 2, 64)
    one = torch.ones(1, 1, 1)
    with pytest.raises(NotImplementedError, match="q: .*int32"):
        backend.attention_quantized(big_q, k, v, one, one, one, 0.125, False, PER_TENSOR, False, False,
                                    k_mean=None, out_dtype=torch.bfloat16)
    assert fake_mate.calls == []


# --------------------------------------------------------------------------- #
# The fake is strict: a call that breaks MATE's contract fails                 #
# --------------------------------------------------------------------------- #


def _mate_call(recipe: tuple = PER_THREAD, qk_dtype: str = "int8") -> dict:
    """A valid call of MATE's sage_attn_quantized, built by hand in MATE's layouts."""
    q, k, v = _inputs("NHD", torch.bfloat16, B=1, Nq=130, Nk=260)
    qq = torch_quant.quantize_qk(q, k, quant_recipe=recipe, qk_quant_dtype=qk_dtype, smooth_k=True)
    qv = torch_quant.quantize_v(v, quant_recipe=recipe)
    if recipe == PER_TENSOR:
        qs, ks, vs = (s.reshape(1, 1, 1, 1) for s in (qq.q_scale, qq.k_scale, qv.v_scale))
    else:
        qs, ks = (s.permute(0, 2, 1)[..., None].contiguous() for s in (qq.q_scale, qq.k_scale))
        vs = (qv.v_scale.permute(0, 2, 1)[..., None] if recipe == PER_BLOCK_V else qv.v_scale[:, None]).contiguous()
    return dict(q=qq.q_codes, k=qq.k_codes, v=qv.v_codes, q_scale=qs, k_scale=ks, v_scale=vs,
                softmax_scale=0.125, causal=False, quant_recipe=recipe, return_lse=True, fp8_output=False)


@pytest.mark.parametrize("recipe", RECIPES, ids=RECIPE_IDS)
def test_fake_accepts_mate_layouts(fake_mate: Any, recipe: tuple) -> None:
    call = _mate_call(recipe)
    gk = {PER_TENSOR: 1, PER_BLOCK: 3, PER_THREAD: 24, PER_BLOCK_V: 3}[recipe]  # Nk = 260
    if recipe != PER_TENSOR:
        assert call["k_scale"].shape == (1, gk, 2, 1) and call["q_scale"].shape == (1, 2, 4, 1)
    out, lse = fake_mate.sage_attn_quantized(**call)
    assert out.dtype == torch.bfloat16 and out.shape == (1, 130, 4, 64)
    assert lse.dtype == torch.float32 and lse.shape == (1, 4, 130)
    o8, o8_scale = fake_mate.sage_attn_quantized(**{**call, "return_lse": False, "fp8_output": True})
    assert o8.dtype == torch.float8_e4m3fn and o8_scale.shape == (1, 130, 4, 1)


def _bad_calls() -> dict[str, Callable[[dict], dict]]:
    def scale(name: str, f: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[dict], dict]:
        return lambda c: {**c, name: f(c[name])}

    return {
        "3-D q_scale (our layout)": scale("q_scale", lambda s: s[..., 0].permute(0, 2, 1).contiguous()),
        "3-D v_scale (our layout)": scale("v_scale", lambda s: s[:, 0].contiguous()),
        "(B, H, G, 1) k_scale": scale("k_scale", lambda s: s.permute(0, 2, 1, 3).contiguous()),
        "float16 k_scale": scale("k_scale", lambda s: s.half()),
        "non-contiguous q_scale": scale("q_scale", lambda s: s.permute(0, 2, 1, 3).contiguous().permute(0, 2, 1, 3)),
        "one group short": scale("k_scale", lambda s: s[:, :-1].contiguous()),
        "missing v_scale": lambda c: {**c, "v_scale": None},
        "softmax_scale a tensor": lambda c: {**c, "softmax_scale": torch.tensor(0.125)},
        "softmax_scale an int": lambda c: {**c, "softmax_scale": 1},
        "causal not a bool": lambda c: {**c, "causal": 1},
        "unquantized q": lambda c: {**c, "q": c["q"].to(torch.bfloat16)},
        "fp8 q with int8 k": lambda c: {**c, "q": c["q"].float().to(torch.float8_e4m3fn)},
        "int8 v": lambda c: {**c, "v": c["v"].float().to(torch.int8)},
        "3-D q": lambda c: {**c, "q": c["q"][0]},
        "k heads do not divide q heads": lambda c: {**c, "k": c["k"].repeat(1, 1, 3, 1)[:, :, :3],
                                                    "v": c["v"].repeat(1, 1, 3, 1)[:, :, :3]},
        "head dim 256": lambda c: {**c, "q": c["q"].repeat(1, 1, 1, 4), "k": c["k"].repeat(1, 1, 1, 4)},
        "list recipe": lambda c: {**c, "quant_recipe": list(c["quant_recipe"])},
        "per_warp recipe": lambda c: {**c, "quant_recipe": (128, 64, -1, 1)},
        "backend mutlass": lambda c: {**c, "backend": "mutlass"},
        "misspelt keyword": lambda c: {**{n: x for n, x in c.items() if n != "softmax_scale"}, "scale": 0.125},
    }


@pytest.mark.parametrize("breakage", list(_bad_calls()))
def test_fake_rejects_contract_breaks(fake_mate: Any, breakage: str) -> None:
    call = _bad_calls()[breakage](_mate_call())
    with pytest.raises((fake_mate.ContractError, TypeError, NotImplementedError)):
        fake_mate.sage_attn_quantized(**call)
    assert fake_mate.calls == []


def test_fake_rejects_positional_misorder(fake_mate: Any) -> None:
    c = _mate_call()
    args = [c[n] for n in ("q", "k", "v", "q_scale", "k_scale", "v_scale", "softmax_scale", "causal",
                           "quant_recipe", "return_lse", "fp8_output")]
    fake_mate.sage_attn_quantized(*args)  # MATE's order works
    swapped = args[:3] + [args[4], args[3]] + args[5:]  # q_scale and k_scale swapped
    with pytest.raises(fake_mate.ContractError):
        fake_mate.sage_attn_quantized(*swapped)
    with pytest.raises(fake_mate.ContractError):  # causal where softmax_scale goes
        fake_mate.sage_attn_quantized(*args[:6], False, 0.125, *args[8:])


def test_backend_passing_our_layouts_is_caught(fake_mate: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The backend as it was before MATE's layouts (3-D scales passed through) fails."""
    monkeypatch.setattr(mate_layout, "token_scale", lambda s: s)
    q, k, v = _inputs("HND", torch.bfloat16)
    with pytest.raises(fake_mate.ContractError, match="q_scale"):
        sageattention.sageattn(q, k, v)


# --------------------------------------------------------------------------- #
# SAGEATTN_BACKEND                                                             #
# --------------------------------------------------------------------------- #


def test_backend_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    assert get_backend(cpu).name == "cpu"
    for unset in ("", "  "):
        monkeypatch.setenv(BACKEND_ENV, unset)
        assert get_backend(cpu).name == "cpu"
    monkeypatch.setenv(BACKEND_ENV, "CPU")
    assert get_backend(cpu).name == "cpu"
    monkeypatch.setenv(BACKEND_ENV, "cuda")
    with pytest.raises(ValueError, match=f"{BACKEND_ENV}.*'cuda'.*cpu, musa"):
        get_backend(cpu)
    q, k, v = _inputs("HND", torch.bfloat16, Nq=16, Nk=16)
    with pytest.raises(ValueError, match=BACKEND_ENV):
        sageattention.sageattn(q, k, v)
    monkeypatch.setenv(BACKEND_ENV, "cpu")
    with pytest.raises(ValueError, match="cpu backend cannot run on device 'meta'"):
        get_backend(torch.device("meta"))


def test_backend_switch_musa_without_mate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "mate", None)  # `import mate` fails
    monkeypatch.setenv(BACKEND_ENV, "musa")
    with pytest.raises(ValueError, match=f"{BACKEND_ENV}=musa.*MATE"):
        get_backend(torch.device("cpu"))


# --------------------------------------------------------------------------- #
# MATE's positional signatures                                                 #
# --------------------------------------------------------------------------- #


def test_sageattn_mate_positional_order() -> None:
    """sageattn(q, k, v, tensor_layout, is_causal, sm_scale, return_lse, qk_quant_gran,
    qk_quant_dtype, quant_recipe, smooth_k, fp8_output): MATE's wrapper's order."""
    q, k, v = _inputs("NHD", torch.bfloat16, Nq=64, Nk=96)
    by_name = sageattention.sageattn(q, k, v, tensor_layout="NHD", is_causal=True, sm_scale=0.2, return_lse=True,
                                     qk_quant_gran="per_thread", qk_quant_dtype="fp8", quant_recipe=PER_BLOCK,
                                     smooth_k=False, fp8_output=True)
    by_pos = sageattention.sageattn(q, k, v, "NHD", True, 0.2, True, "per_thread", "fp8", PER_BLOCK, False, True)
    assert len(by_pos) == 3
    for a, b in zip(by_pos, by_name):
        assert torch.equal(a.view(torch.uint8) if a.dtype == torch.float8_e4m3fn else a,
                           b.view(torch.uint8) if b.dtype == torch.float8_e4m3fn else b)


def test_sm90_both_positional_orders() -> None:
    fn = sageattention.sageattn_qk_int8_pv_fp8_cuda_sm90
    q, k, v = _inputs("HND", torch.bfloat16, Nq=64, Nk=96)
    # upstream: ..., qk_quant_gran, sm_scale, pv_accum_dtype, smooth_k, return_lse
    up = fn(q, k, v, "HND", True, "per_thread", 0.2, "fp32", False, True)
    want = fn(q, k, v, tensor_layout="HND", is_causal=True, sm_scale=0.2, smooth_k=False, return_lse=True)
    assert all(torch.equal(a, b) for a, b in zip(up, want))
    assert torch.equal(fn(q, k, v, "HND", False, "per_thread", None), fn(q, k, v))
    assert torch.equal(fn(q, k, v, "HND", False, "per_thread", torch.tensor(0.2)), fn(q, k, v, sm_scale=0.2))
    # MATE: ..., qk_quant_gran, qk_quant_dtype, sm_scale, pv_accum_dtype, smooth_k, return_lse,
    # fp8_output, quant_recipe
    mate = fn(q, k, v, "HND", True, "per_thread", "fp8", 0.2, "fp32+fp32", False, True, True, PER_BLOCK)
    want = fn(q, k, v, tensor_layout="HND", is_causal=True, qk_quant_dtype="fp8", sm_scale=0.2, smooth_k=False,
              return_lse=True, fp8_output=True, quant_recipe=PER_BLOCK)
    assert len(mate) == 3
    assert torch.equal(mate[0].view(torch.uint8), want[0].view(torch.uint8))
    assert torch.equal(mate[1], want[1]) and torch.equal(mate[2], want[2])
    short = fn(q, k, v, "HND", False, "per_thread", "fp8", return_lse=True)  # MATE order, rest by keyword
    assert torch.equal(short[1], fn(q, k, v, qk_quant_dtype="fp8", return_lse=True)[1])


@pytest.mark.parametrize("seventh", [True, [0.2], "x", b"fp8", torch.ones(2)], ids=["bool", "list", "str", "bytes", "tensor2"])
def test_sm90_seventh_positional_rejected(seventh: Any) -> None:
    q, k, v = _inputs("HND", torch.bfloat16, Nq=16, Nk=16)
    fn = sageattention.sageattn_qk_int8_pv_fp8_cuda_sm90
    err = (ValueError,) if isinstance(seventh, str) else (TypeError,)  # a str is MATE's qk_quant_dtype
    with pytest.raises(err, match="qk_quant_dtype" if isinstance(seventh, str) else "7th positional"):
        fn(q, k, v, "HND", False, "per_thread", seventh)


def test_sm90_positional_misuse() -> None:
    q, k, v = _inputs("HND", torch.bfloat16, Nq=16, Nk=16)
    fn = sageattention.sageattn_qk_int8_pv_fp8_cuda_sm90
    with pytest.raises(TypeError, match="multiple values for argument 'sm_scale'"):
        fn(q, k, v, "HND", False, "per_thread", 0.2, sm_scale=0.3)
    with pytest.raises(TypeError, match="multiple values for argument 'qk_quant_dtype'"):
        fn(q, k, v, "HND", False, "per_thread", "fp8", qk_quant_dtype="int8")
    with pytest.raises(TypeError, match="at most 10 positional"):
        fn(q, k, v, "HND", False, "per_thread", 0.2, "fp32", True, False, False)
    with pytest.raises(TypeError, match="at most 13 positional"):
        fn(q, k, v, "HND", False, "per_thread", "fp8", 0.2, "fp32", True, False, False, None, 1)
