"""flash-attn and SDPA keywords (issue 8, docs/CONTRACT.md §6): `causal` is `is_causal`,
`softmax_scale` and `scale` are `sm_scale`, in every public entry point; two spellings
that disagree are a ValueError naming both; `dropout_p` other than 0 warns once and is
ignored. Upstream drops these silently, which made yunchang's causal ring attention
non-causal."""

from __future__ import annotations

import functools
import math
import warnings
from typing import Any, Callable

import pytest
import reference as ref
import torch

import sageattention
from sageattention import _keywords

NAMES = [
    "sageattn",
    "sageattn_qk_int8_pv_fp16_triton",
    "sageattn_qk_int8_pv_fp16_cuda",
    "sageattn_qk_int8_pv_fp8_cuda",
    "sageattn_qk_int8_pv_fp8_cuda_sm90",
    "sageattn_varlen",
]
H, N, D = 2, 80, 32
SCALE = 0.37  # not 1/sqrt(D): a dropped scale changes the output


def _inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, N, H, D) tensors: yunchang passes "NHD"."""
    return tuple(ref.randn((1, N, H, D), seed=s) for s in (11, 12, 13))  # type: ignore[return-value]


def _call(name: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kw: Any) -> torch.Tensor:
    fn: Callable[..., Any] = getattr(sageattention, name)
    if name == "sageattn_varlen":
        cu = torch.tensor([0, N], dtype=torch.int32)
        return fn(q[0], k[0], v[0], cu, cu, N, N, **kw)[None]
    return fn(q, k, v, tensor_layout="NHD", **kw)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("name", NAMES)
def test_flash_attn_keywords_equal_canonical(name: str, causal: bool) -> None:
    """yunchang's call `f(q, k, v, causal=c, softmax_scale=s)` is bitwise the canonical call."""
    q, k, v = _inputs()
    want = _call(name, q, k, v, is_causal=causal, sm_scale=SCALE)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # honoured keywords are not warned about
        got = _call(name, q, k, v, causal=causal, softmax_scale=SCALE)
        sdpa_style = _call(name, q, k, v, is_causal=causal, scale=SCALE)
        with_dropout_0 = _call(name, q, k, v, causal=causal, softmax_scale=SCALE, dropout_p=0.0)
    assert torch.equal(got, want)
    assert torch.equal(sdpa_style, want)
    assert torch.equal(with_dropout_0, want)


@pytest.mark.parametrize("name", NAMES)
def test_aliases_change_the_result(name: str) -> None:
    """The aliases are not ignored: each one changes the output the way its canonical
    spelling does (so the equality test above cannot pass by ignoring both)."""
    q, k, v = _inputs()
    plain = _call(name, q, k, v)
    causal = _call(name, q, k, v, causal=True)
    scaled = _call(name, q, k, v, softmax_scale=SCALE)
    assert not torch.equal(causal, plain)
    assert not torch.equal(scaled, plain)
    # against an fp32 reference: top-left causal at the default scale; no mask at SCALE
    qh, kh, vh = (x.float().transpose(1, 2) for x in (q, k, v))
    tril = torch.ones(N, N, dtype=torch.bool).tril()
    want_causal = torch.nn.functional.scaled_dot_product_attention(qh, kh, vh, attn_mask=tril).transpose(1, 2)
    want_scaled = torch.nn.functional.scaled_dot_product_attention(qh, kh, vh, scale=SCALE).transpose(1, 2)
    for got, want in ((causal, want_causal), (scaled, want_scaled)):
        cos = torch.nn.functional.cosine_similarity(got.float().flatten(), want.flatten(), dim=0)
        assert cos > 0.999, (name, float(cos))


@pytest.mark.parametrize("name", NAMES)
def test_canonical_at_default_never_disagrees(name: str) -> None:
    """is_causal=False and sm_scale=None are the defaults: an explicit default cannot be
    told from an omitted one, so the alias decides (documented in README)."""
    q, k, v = _inputs()
    assert torch.equal(_call(name, q, k, v, is_causal=False, causal=True), _call(name, q, k, v, is_causal=True))
    assert torch.equal(_call(name, q, k, v, sm_scale=None, scale=SCALE), _call(name, q, k, v, sm_scale=SCALE))
    # None means "not given" for the aliases too
    assert torch.equal(_call(name, q, k, v, is_causal=True, causal=None), _call(name, q, k, v, is_causal=True))
    assert torch.equal(_call(name, q, k, v, softmax_scale=None), _call(name, q, k, v))
    # agreeing spellings are fine
    assert torch.equal(_call(name, q, k, v, is_causal=True, causal=True, sm_scale=SCALE, softmax_scale=SCALE,
                             scale=SCALE),
                       _call(name, q, k, v, is_causal=True, sm_scale=SCALE))


@pytest.mark.parametrize("name", NAMES)
def test_disagreeing_spellings_raise(name: str) -> None:
    q, k, v = _inputs()
    cases = [
        (dict(is_causal=True, causal=False), r"is_causal=True and causal=False"),
        (dict(sm_scale=0.1, softmax_scale=0.2), r"sm_scale=0\.1 and softmax_scale=0\.2"),
        (dict(sm_scale=0.1, scale=0.2), r"sm_scale=0\.1 and scale=0\.2"),
        (dict(softmax_scale=0.1, scale=0.2), r"softmax_scale=0\.1 and scale=0\.2"),
    ]
    for kw, msg in cases:
        with pytest.raises(ValueError, match=msg):
            _call(name, q, k, v, **kw)


def test_positional_is_causal_disagrees_with_alias() -> None:
    """The upstream-named variants take is_causal positionally: still one decision."""
    q, k, v = _inputs()
    with pytest.raises(ValueError, match="is_causal.*causal"):
        sageattention.sageattn_qk_int8_pv_fp8_cuda(q, k, v, "NHD", True, causal=False)
    cu = torch.tensor([0, N], dtype=torch.int32)
    with pytest.raises(ValueError, match="is_causal.*causal"):
        sageattention.sageattn_varlen(q[0], k[0], v[0], cu, cu, N, N, True, causal=False)


@pytest.mark.parametrize("name", NAMES)
def test_bad_alias_values_name_the_alias(name: str) -> None:
    q, k, v = _inputs()
    for alias in ("softmax_scale", "scale"):
        with pytest.raises(ValueError, match=f"{alias}: must be finite"):
            _call(name, q, k, v, **{alias: math.inf})
        with pytest.raises(TypeError, match=f"{alias}: expected a real number"):
            _call(name, q, k, v, **{alias: "0.1"})


def test_nonzero_dropout_warns_once_and_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_keywords, "_warned_dropout", False)
    q, k, v = _inputs()
    base = _call("sageattn", q, k, v)
    with pytest.warns(UserWarning, match=r"dropout_p=0\.1") as rec:
        out = _call("sageattn", q, k, v, dropout_p=0.1)
    assert len(rec) == 1
    assert rec[0].filename == __file__, "the warning points at the caller"
    assert torch.equal(out, base)
    with warnings.catch_warnings():  # once per process, through any entry point
        warnings.simplefilter("error")
        for name in NAMES:
            _call(name, q, k, v, dropout_p=0.5)


@pytest.mark.parametrize("name", NAMES)
def test_dropout_warning_points_at_the_caller(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever wrappers lie between (sm90's argument-order dispatch, _run), the warning
    names the caller's line."""
    monkeypatch.setattr(_keywords, "_warned_dropout", False)
    q, k, v = _inputs()
    with pytest.warns(UserWarning, match="dropout_p") as rec:
        _call(name, q, k, v, dropout_p=0.2)
    assert rec[0].filename == __file__, rec[0].filename


def test_yunchang_ring_style_call_is_causal() -> None:
    """yunchang's ring attention calls each step `sageattn(q, k, v, tensor_layout="NHD",
    causal=..., softmax_scale=..., return_lse=True)` and merges by LSE: with the aliases
    honoured, the merged causal result equals one causal call on the whole sequence."""
    q, k, v = _inputs()
    scale = D ** -0.5
    half = N // 2
    whole, whole_lse = sageattention.sageattn(q, k, v, tensor_layout="NHD", causal=True, softmax_scale=scale,
                                              return_lse=True)
    # second half of the queries: keys [0, half) (no mask) then keys [half, N) (causal)
    q2 = q[:, half:]
    o_a, lse_a = sageattention.sageattn(q2, k[:, :half], v[:, :half], tensor_layout="NHD", causal=False,
                                        softmax_scale=scale, return_lse=True)
    o_b, lse_b = sageattention.sageattn(q2, k[:, half:], v[:, half:], tensor_layout="NHD", causal=True,
                                        softmax_scale=scale, return_lse=True)
    lse = torch.logaddexp(lse_a, lse_b)  # (B, H, N/2)
    w_a = torch.exp(lse_a - lse).transpose(1, 2)[..., None]
    w_b = torch.exp(lse_b - lse).transpose(1, 2)[..., None]
    merged = w_a * o_a.float() + w_b * o_b.float()
    cos = torch.nn.functional.cosine_similarity(merged.flatten(), whole[:, half:].float().flatten(), dim=0)
    assert cos > 0.999, float(cos)
    torch.testing.assert_close(lse, whole_lse[..., half:], atol=2e-2, rtol=0)


@pytest.mark.parametrize("impl", ["sage_fp16", "sage_fp8"])
@pytest.mark.parametrize("causal", [True, False])
def test_yunchang_select_flash_attn_impl_call(impl: str, causal: bool) -> None:
    """yunchang's select_flash_attn_impl(SAGE_FP16 / SAGE_FP8, "fwd-only") is a partial of
    an upstream-named variant (NHD, return_lse=True); its ring loop then calls it with
    flash-attn's keywords. The result must be the canonical call's, bitwise."""
    if impl == "sage_fp16":
        fn = functools.partial(sageattention.sageattn_qk_int8_pv_fp16_cuda, pv_accum_dtype="fp32",
                               tensor_layout="NHD", return_lse=True)
    else:
        fn = functools.partial(sageattention.sageattn_qk_int8_pv_fp8_cuda, pv_accum_dtype="fp32+fp32",
                               tensor_layout="NHD", return_lse=True)
    q, k, v = _inputs()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out, lse = fn(q, k, v, dropout_p=0.0, softmax_scale=SCALE, causal=causal, window_size=(-1, -1),
                      softcap=0.0, alibi_slopes=None, return_softmax=False)
    want, want_lse = fn(q, k, v, is_causal=causal, sm_scale=SCALE)
    assert torch.equal(out, want) and torch.equal(lse, want_lse)
