"""Input rules (docs/CONTRACT.md §4): each invalid input raises the stated exception
and the message names the offending argument; unknown keyword arguments are
accepted and ignored."""

from __future__ import annotations

from typing import Any, Callable

import pytest
import torch

import reference as ref

import sageattention
from sageattention import sageattn, sageattn_qk_int8_pv_fp8_cuda_sm90

FUNCS = [sageattn, sageattn_qk_int8_pv_fp8_cuda_sm90]
FUNC_IDS = ["sageattn", "sm90"]

Tensors = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _qkv(
    tensor_layout: str = "HND", B: int = 1, Hq: int = 2, Hkv: int = 2, Nq: int = 16, Nk: int = 24, D: int = 32,
    dtype: torch.dtype = torch.float16,
) -> Tensors:
    q = ref.randn(ref.layout_shape(B, Hq, Nq, D, tensor_layout), dtype=dtype, seed=1)
    k = ref.randn(ref.layout_shape(B, Hkv, Nk, D, tensor_layout), dtype=dtype, seed=2)
    v = ref.randn(ref.layout_shape(B, Hkv, Nk, D, tensor_layout), dtype=dtype, seed=3)
    return q, k, v


# --------------------------------------------------------------------------- #
# dtype: TypeError                                                             #
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("fn", FUNCS, ids=FUNC_IDS)
@pytest.mark.parametrize(
    "which, bad_dtype",
    [("q", torch.float32), ("k", torch.float32), ("v", torch.float64), ("q", torch.int8),
     ("k", torch.bfloat16), ("v", torch.bfloat16), ("v", torch.float8_e4m3fn)],
)
def test_dtype_errors(fn: Callable[..., Any], which: str, bad_dtype: torch.dtype) -> None:
    t = dict(zip("qkv", _qkv()))  # float16
    t[which] = t[which].to(bad_dtype)
    with pytest.raises(TypeError, match=rf"\b{which}\b"):
        fn(t["q"], t["k"], t["v"])


def test_dtype_all_float32() -> None:
    q, k, v = (x.float() for x in _qkv())
    with pytest.raises(TypeError, match=r"\bq\b|dtype"):
        sageattn(q, k, v)


def test_dtype_q_mismatch_message() -> None:
    q, k, v = _qkv(dtype=torch.bfloat16)
    with pytest.raises(TypeError, match=r"\b(q|k|v)\b"):
        sageattn(q.half(), k, v)


# --------------------------------------------------------------------------- #
# device: ValueError                                                           #
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("which", ["k", "v"])
def test_device_mismatch(which: str) -> None:
    t = dict(zip("qkv", _qkv()))
    t[which] = torch.empty(t[which].shape, dtype=t[which].dtype, device="meta")
    with pytest.raises(ValueError, match=rf"\b{which}\b|device"):
        sageattn(t["q"], t["k"], t["v"])


def test_device_without_backend() -> None:
    q, k, v = (torch.empty(x.shape, dtype=x.dtype, device="meta") for x in _qkv())
    with pytest.raises(ValueError) as ei:
        sageattn(q, k, v)
    assert "meta" in str(ei.value) and "cpu" in str(ei.value), str(ei.value)
    from sageattention._backends import get_backend

    with pytest.raises(ValueError) as ei2:
        get_backend(torch.device("meta"))
    assert "meta" in str(ei2.value) and "cpu" in str(ei2.value), str(ei2.value)


# --------------------------------------------------------------------------- #
# head dim: ValueError                                                         #
# --------------------------------------------------------------------------- #

HEAD_DIM_MSG = r"(?i)head|\bD\b|dim"


@pytest.mark.parametrize("tensor_layout", ["HND", "NHD"])
@pytest.mark.parametrize("D", [0, 1024])
def test_head_dim_out_of_range(D: int, tensor_layout: str) -> None:
    """D < 1 or above the supported maximum (256, docs/CONTRACT.md §7; an issue may
    raise it, so the upper probe is far above any plausible maximum)."""
    q, k, v = _qkv(tensor_layout, D=D)
    with pytest.raises(ValueError, match=HEAD_DIM_MSG):
        sageattn(q, k, v, tensor_layout=tensor_layout)


def test_head_dim_mismatch_q_k() -> None:
    q, k, v = _qkv(D=64)
    k = k[..., :32]
    with pytest.raises(ValueError, match=r"\bk\b|\bq\b|" + HEAD_DIM_MSG[4:]):
        sageattn(q, k, v)


# --------------------------------------------------------------------------- #
# ndim / batch / Nk / heads: ValueError                                        #
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("fn", FUNCS, ids=FUNC_IDS)
@pytest.mark.parametrize("which", ["q", "k", "v"])
@pytest.mark.parametrize("ndim", [3, 5])
def test_wrong_ndim(fn: Callable[..., Any], which: str, ndim: int) -> None:
    t = dict(zip("qkv", _qkv()))
    x = t[which]
    t[which] = x[0] if ndim == 3 else x.unsqueeze(0)
    with pytest.raises(ValueError, match=rf"\b{which}\b"):
        fn(t["q"], t["k"], t["v"])


@pytest.mark.parametrize("tensor_layout", ["HND", "NHD"])
@pytest.mark.parametrize("which", ["k", "v"])
def test_batch_mismatch(which: str, tensor_layout: str) -> None:
    t = dict(zip("qkv", _qkv(tensor_layout, B=2)))
    t[which] = t[which][:1]
    with pytest.raises(ValueError, match=rf"(?i)\b{which}\b|batch"):
        sageattn(t["q"], t["k"], t["v"], tensor_layout=tensor_layout)


@pytest.mark.parametrize("tensor_layout", ["HND", "NHD"])
def test_nk_mismatch_between_k_and_v(tensor_layout: str) -> None:
    q, k, v = _qkv(tensor_layout, Nk=24)
    v = v[:, :, :20] if tensor_layout == "HND" else v[:, :20]
    with pytest.raises(ValueError, match=r"\bv\b|\bk\b"):
        sageattn(q, k, v, tensor_layout=tensor_layout)


@pytest.mark.parametrize("tensor_layout", ["HND", "NHD"])
@pytest.mark.parametrize("Hq, Hkv", [(3, 2), (2, 4), (8, 3)])
def test_heads_not_divisible(Hq: int, Hkv: int, tensor_layout: str) -> None:
    q, k, v = _qkv(tensor_layout, Hq=Hq, Hkv=Hkv)
    with pytest.raises(ValueError, match=r"(?i)head"):
        sageattn(q, k, v, tensor_layout=tensor_layout)


@pytest.mark.parametrize("tensor_layout", ["HND", "NHD"])
def test_kv_heads_mismatch(tensor_layout: str) -> None:
    q, k, _v = _qkv(tensor_layout, Hq=4, Hkv=2)
    v4 = ref.randn(ref.layout_shape(1, 4, 24, 32, tensor_layout), dtype=torch.float16, seed=9)
    with pytest.raises(ValueError, match=r"(?i)\bv\b|\bk\b|head"):
        sageattn(q, k, v4, tensor_layout=tensor_layout)


def test_layout_mismatch_is_caught() -> None:
    """NHD tensors passed as HND: shapes then disagree on heads/Nk."""
    q, k, v = _qkv("NHD", Hq=2, Hkv=2, Nq=16, Nk=24)
    with pytest.raises(ValueError):
        sageattn(q, k, v, tensor_layout="HND")


# --------------------------------------------------------------------------- #
# tensor_layout, recipe, granularity, qk dtype                                 #
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("fn", FUNCS, ids=FUNC_IDS)
@pytest.mark.parametrize("layout", ["BHND", "NDH", "", "HDN", "bnhd"])
def test_bad_tensor_layout(fn: Callable[..., Any], layout: str) -> None:
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="tensor_layout"):
        fn(q, k, v, tensor_layout=layout)


def test_mask_in_tensor_layout_is_named_not_printed() -> None:
    """`F.scaled_dot_product_attention = sageattn` with SDPA's positional attn_mask puts the
    mask where tensor_layout goes: the error names it by type and shape, not by value."""
    q, k, v = _qkv()
    mask = torch.zeros(q.shape[0], 1, q.shape[2], k.shape[2])
    with pytest.raises(ValueError, match=r"tensor_layout: .*got a Tensor of shape \(") as info:
        sageattention.sageattn(q, k, v, mask)
    assert "tensor(" not in str(info.value)


@pytest.mark.parametrize("fn", FUNCS, ids=FUNC_IDS)
@pytest.mark.parametrize(
    "recipe",
    [(64, 64, -1, 1), (128, 64, -1, 1), (128, 16, 64, 1), (128, 16, -1, 64), (-1, 16, -1, 1), (128, 128, -1, -1),
    ],
)
def test_unsupported_recipe(fn: Callable[..., Any], recipe: tuple[int, ...]) -> None:
    q, k, v = _qkv()
    with pytest.raises(NotImplementedError, match="quant_recipe") as ei:
        fn(q, k, v, quant_recipe=recipe)
    # the message lists the supported recipes
    assert "128, 16, -1, 1" in str(ei.value).replace("(", "").replace(")", ""), str(ei.value)


@pytest.mark.parametrize("gran", ["per_warp", "per_block", "per_channel", "per_tensor", "bogus"])
def test_unsupported_qk_quant_gran(gran: str) -> None:
    q, k, v = _qkv()
    with pytest.raises(NotImplementedError, match="qk_quant_gran"):
        sageattn(q, k, v, qk_quant_gran=gran)


def test_unsupported_qk_quant_gran_sm90_positional() -> None:
    q, k, v = _qkv()
    with pytest.raises(NotImplementedError, match="qk_quant_gran"):
        sageattn_qk_int8_pv_fp8_cuda_sm90(q, k, v, "HND", False, "bogus")


@pytest.mark.parametrize("fn", FUNCS, ids=FUNC_IDS)
@pytest.mark.parametrize("qdt", ["int4", "float16", "bf16", "fp16", "", "INT8x"])
def test_bad_qk_quant_dtype(fn: Callable[..., Any], qdt: str) -> None:
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="qk_quant_dtype"):
        fn(q, k, v, qk_quant_dtype=qdt)


# --------------------------------------------------------------------------- #
# unknown kwargs                                                               #
# --------------------------------------------------------------------------- #

UNKNOWN_KWARGS: dict[str, Any] = {
    "foo": 1,
    "attn_mask": None,
    "quantization_backend": "triton",
    "some_future_option": object(),
}


@pytest.mark.parametrize("fn", FUNCS, ids=FUNC_IDS)
def test_unknown_kwargs_are_ignored(fn: Callable[..., Any]) -> None:
    q, k, v = _qkv()
    plain = fn(q, k, v, is_causal=True)
    with_extra = fn(q, k, v, is_causal=True, **UNKNOWN_KWARGS)
    assert isinstance(with_extra, torch.Tensor)
    assert torch.equal(plain, with_extra)


def test_pv_accum_dtype_accepted_by_sageattn() -> None:
    """pv_accum_dtype is an sm90 parameter; for sageattn it is just an unknown kwarg."""
    q, k, v = _qkv()
    assert torch.equal(sageattn(q, k, v), sageattn(q, k, v, pv_accum_dtype="fp32+fp16"))
