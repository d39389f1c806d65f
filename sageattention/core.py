"""The public, upstream-compatible API (SEMANTICS.md §1-§4, §6).

Each entry point validates its input, resolves the recipe and layout, picks the backend
that owns the device, and runs quantize_qk -> quantize_v -> attention_quantized.
"""
from __future__ import annotations

from typing import Any, Literal, Optional, Sequence, Tuple, Union, overload

import torch

from ._backends import get_backend
from ._recipes import resolve
from ._validate import check_qk_quant_dtype, check_qkv, resolve_sm_scale, to_nhd

__all__ = ["sageattn", "sageattn_qk_int8_pv_fp8_cuda_sm90"]

Result = Union[torch.Tensor, Tuple[torch.Tensor, ...]]


def _layout_buffer(shape_nhd: Tuple[int, int, int, int], dtype: torch.dtype, layout: str,
                   device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """A contiguous tensor in the caller's layout, plus its (B, N, H, D) view for the core."""
    b, n, h, d = shape_nhd
    if layout == "HND":
        t = torch.empty((b, h, n, d), dtype=dtype, device=device)
        return t, t.transpose(1, 2)
    t = torch.empty((b, n, h, d), dtype=dtype, device=device)
    return t, t


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, tensor_layout: str, is_causal: bool,
               sm_scale: Optional[float], return_lse: bool, qk_quant_gran: Optional[str],
               qk_quant_dtype: str, quant_recipe: Optional[Sequence[int]], smooth_k: bool,
               fp8_output: bool) -> Result:
    check_qkv(q, k, v, tensor_layout)
    recipe = resolve(quant_recipe, qk_quant_gran)
    qk_dtype = check_qk_quant_dtype(qk_quant_dtype)
    backend = get_backend(q.device)
    qn, kn, vn = (to_nhd(x, tensor_layout) for x in (q, k, v))
    b, nq, hq, d = qn.shape
    dv = vn.shape[3]
    scale = resolve_sm_scale(sm_scale, d)

    out_dtype = torch.float8_e4m3fn if fp8_output else q.dtype
    out, out_view = _layout_buffer((b, nq, hq, dv), out_dtype, tensor_layout, q.device)
    out_scale = out_scale_view = None
    if fp8_output:
        out_scale, out_scale_view = _layout_buffer((b, nq, hq, 1), torch.float32, tensor_layout, q.device)
    if out.numel() == 0:
        lse = torch.full((b, hq, nq), float("-inf"), dtype=torch.float32, device=q.device)
        if fp8_output:
            assert out_scale is not None
            return (out, out_scale, lse) if return_lse else (out, out_scale)
        return (out, lse) if return_lse else out

    qq = backend.quantize_qk(qn, kn, quant_recipe=recipe.recipe, qk_quant_dtype=qk_dtype, smooth_k=bool(smooth_k))
    vq = backend.quantize_v(vn, quant_recipe=recipe.recipe)
    result = backend.attention_quantized(
        qq.q_codes, qq.k_codes, vq.v_codes, qq.q_scale, qq.k_scale, vq.v_scale, scale, bool(is_causal),
        recipe.recipe, bool(return_lse), bool(fp8_output), k_mean=qq.k_mean, out_dtype=q.dtype,
        out=out_view, out_scale=out_scale_view, attn_mask=None,
    )
    if fp8_output:
        assert out_scale is not None
        return (out, out_scale, result[2]) if return_lse else (out, out_scale)
    return (out, result[1]) if return_lse else out


@overload
def sageattn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, tensor_layout: str = ...,
             is_causal: bool = ..., sm_scale: Optional[float] = ..., return_lse: Literal[False] = ..., *,
             qk_quant_gran: Optional[str] = ..., qk_quant_dtype: str = ...,
             quant_recipe: Optional[Sequence[int]] = ..., smooth_k: bool = ...,
             fp8_output: Literal[False] = ..., **kwargs: Any) -> torch.Tensor: ...
@overload
def sageattn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, tensor_layout: str = ...,
             is_causal: bool = ..., sm_scale: Optional[float] = ..., *, return_lse: Literal[True],
             qk_quant_gran: Optional[str] = ..., qk_quant_dtype: str = ...,
             quant_recipe: Optional[Sequence[int]] = ..., smooth_k: bool = ...,
             fp8_output: Literal[False] = ..., **kwargs: Any) -> Tuple[torch.Tensor, torch.Tensor]: ...
@overload
def sageattn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, tensor_layout: str = ...,
             is_causal: bool = ..., sm_scale: Optional[float] = ..., return_lse: Literal[False] = ..., *,
             qk_quant_gran: Optional[str] = ..., qk_quant_dtype: str = ...,
             quant_recipe: Optional[Sequence[int]] = ..., smooth_k: bool = ...,
             fp8_output: Literal[True], **kwargs: Any) -> Tuple[torch.Tensor, torch.Tensor]: ...
@overload
def sageattn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, tensor_layout: str = ...,
             is_causal: bool = ..., sm_scale: Optional[float] = ..., *, return_lse: Literal[True],
             qk_quant_gran: Optional[str] = ..., qk_quant_dtype: str = ...,
             quant_recipe: Optional[Sequence[int]] = ..., smooth_k: bool = ...,
             fp8_output: Literal[True], **kwargs: Any) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...


def sageattn(q, k, v, tensor_layout="HND", is_causal=False, sm_scale=None, return_lse=False, *,
             qk_quant_gran="per_thread", qk_quant_dtype="int8", quant_recipe=None, smooth_k=True,
             fp8_output=False, **kwargs):
    """8-bit attention, SageAttention-compatible.

    q: (B, Hq, Nq, D) for "HND" or (B, Nq, Hq, D) for "NHD"; k, v: Hkv heads with
    Hq % Hkv == 0; float16/bfloat16; any strides. Q·Kᵀ in int8 or fp8 (`qk_quant_dtype`)
    with per-block scales and K smoothing, P·V in fp8 with per-channel V scales,
    fp32 online softmax. `quant_recipe` (q_block, k_block, dqk_block, dv_block)
    overrides `qk_quant_gran`.

    Returns `out` (q's layout and dtype), `(out, lse)` with lse float32 (B, Hq, Nq),
    `(out_fp8, out_scale)` or `(out_fp8, out_scale, lse)` when `fp8_output=True`.
    Unknown keyword arguments are accepted and ignored, as upstream does.
    """
    return _attention(q, k, v, tensor_layout, is_causal, sm_scale, return_lse, qk_quant_gran,
                      qk_quant_dtype, quant_recipe, smooth_k, fp8_output)


_SM90_PV_ACCUM = ("fp32", "fp32+fp32")


def sageattn_qk_int8_pv_fp8_cuda_sm90(q, k, v, tensor_layout="HND", is_causal=False,
                                      qk_quant_gran="per_thread", sm_scale=None,
                                      pv_accum_dtype="fp32+fp32", smooth_k=True, return_lse=False, *,
                                      qk_quant_dtype="int8", fp8_output=False, quant_recipe=None,
                                      **kwargs) -> Result:
    """Upstream's SM90 entry point with its positional order; same computation as `sageattn`.

    P·V always accumulates in fp32 here, so `pv_accum_dtype` must be one of upstream's
    values for this function ("fp32+fp32", "fp32").
    """
    if pv_accum_dtype not in _SM90_PV_ACCUM:
        raise ValueError(f"pv_accum_dtype: expected one of {_SM90_PV_ACCUM}, got {pv_accum_dtype!r}")
    return _attention(q, k, v, tensor_layout, is_causal, sm_scale, return_lse, qk_quant_gran,
                      qk_quant_dtype, quant_recipe, smooth_k, fp8_output)
