"""The low-level API: quantize, then attend on pre-quantized tensors.

Tensors are (B, N, H, D) in any strides. Scale shapes are documented in docs/DESIGN.md.
`sageattn` is built from exactly these three calls, on every backend.
"""
from __future__ import annotations

from typing import Literal, Optional, Sequence, Tuple, Union, overload

import torch

from ._backends import get_backend
from ._recipes import DEFAULT_RECIPE, normalize_recipe
from ._types import QuantizedQK, QuantizedV, VQuantDType
from ._masks import prepare_mask
from ._pv import check_v_quant_dtype
from ._validate import (check_flag, check_out_buffer, check_qk_quant_dtype, check_same_device, check_tensor,
                        resolve_sm_scale)

__all__ = ["QuantizedQK", "QuantizedV", "attention_quantized", "quantize_qk", "quantize_v"]

_HALF = (torch.float16, torch.bfloat16)


def _check_input(x: object, name: str) -> torch.Tensor:
    t = check_tensor(x, name)
    if t.dim() != 4:
        raise ValueError(f"{name}: expected a 4-D (B, N, H, D) tensor, got shape {tuple(t.shape)}")
    if t.dtype not in _HALF:
        raise TypeError(f"{name}: dtype {t.dtype} is not supported; use torch.float16 or torch.bfloat16")
    return t


def quantize_qk(q: torch.Tensor, k: torch.Tensor, *, quant_recipe: Sequence[int] = DEFAULT_RECIPE,
                qk_quant_dtype: str = "int8", smooth_k: bool = True) -> QuantizedQK:
    """Quantize Q and K (K smoothed by its per-channel mean) to int8 or fp8 codes.

    Returns QuantizedQK(q_codes, q_scale, k_codes, k_scale, k_mean); x ≈ code * scale.
    """
    q, k = _check_input(q, "q"), _check_input(k, "k")
    if q.device != k.device:
        raise ValueError(f"q, k must be on the same device, got {q.device} and {k.device}")
    if q.shape[0] != k.shape[0] or q.shape[3] != k.shape[3]:
        raise ValueError(f"q, k: batch and head dim must match, got {tuple(q.shape)} and {tuple(k.shape)}")
    return get_backend(q.device).quantize_qk(
        q, k, quant_recipe=normalize_recipe(quant_recipe),
        qk_quant_dtype=check_qk_quant_dtype(qk_quant_dtype), smooth_k=bool(smooth_k),
    )


def quantize_v(v: torch.Tensor, *, quant_recipe: Sequence[int] = DEFAULT_RECIPE,
               dtype: VQuantDType = "fp8") -> QuantizedV:
    """Quantize V with per-channel, per-128-token-block or per-tensor scales, to fp8 e4m3
    (`dtype="fp8"`, the default) or to int8 codes for the int8 P·V mode (`dtype="int8"`:
    scale = max(amax, 1e-12) / 127, code = round-half-even, saturated to ±127)."""
    v = _check_input(v, "v")
    return get_backend(v.device).quantize_v(v, quant_recipe=normalize_recipe(quant_recipe),
                                            dtype=check_v_quant_dtype(dtype, "dtype"))


def _unit_inner_stride(x: torch.Tensor) -> torch.Tensor:
    # The kernels stream code rows; any other layout of the outer dims is fine.
    return x if x.shape[-1] <= 1 or x.stride(-1) == 1 else x.contiguous()


@overload
def attention_quantized(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_scale: torch.Tensor,
                        k_scale: torch.Tensor, v_scale: torch.Tensor, softmax_scale: Optional[float],
                        causal: bool = ..., quant_recipe: Sequence[int] = ...,
                        return_lse: Literal[False] = ..., fp8_output: Literal[False] = ..., *,
                        k_mean: Optional[torch.Tensor] = ..., out_dtype: torch.dtype = ...,
                        out: Optional[torch.Tensor] = ..., out_scale: Optional[torch.Tensor] = ...,
                        attn_mask: Optional[torch.Tensor] = ...) -> torch.Tensor: ...
@overload
def attention_quantized(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_scale: torch.Tensor,
                        k_scale: torch.Tensor, v_scale: torch.Tensor, softmax_scale: Optional[float],
                        causal: bool = ..., quant_recipe: Sequence[int] = ...,
                        return_lse: bool = ..., fp8_output: bool = ..., *,
                        k_mean: Optional[torch.Tensor] = ..., out_dtype: torch.dtype = ...,
                        out: Optional[torch.Tensor] = ..., out_scale: Optional[torch.Tensor] = ...,
                        attn_mask: Optional[torch.Tensor] = ...) -> Tuple[torch.Tensor, ...]: ...


def attention_quantized(q, k, v, q_scale, k_scale, v_scale, softmax_scale, causal=False,
                        quant_recipe=DEFAULT_RECIPE, return_lse=False, fp8_output=False, *,
                        k_mean=None, out_dtype=torch.bfloat16, out=None, out_scale=None,
                        attn_mask=None) -> Union[torch.Tensor, Tuple[torch.Tensor, ...]]:
    """Attention on pre-quantized Q/K (int8 or fp8) and V codes. V's dtype selects the
    P·V mode: fp8 codes (the default mode), int8 codes from `quantize_v(dtype="int8")`
    (the CPU's int8 P·V mode), or an unquantized float16/bfloat16 `v` with
    `v_scale=None` (16-bit P·V).

    Returns `out`, `(out, lse)`, `(out_fp8, out_scale)` or `(out_fp8, out_scale, lse)`:
    out (B, Nq, Hq, Dv) in `out_dtype`; lse float32 (B, Hq, Nq), natural log, for the
    unsmoothed K when `k_mean` is given; out_scale float32 (B, Nq, Hq, 1).
    `out` / `out_scale` may be caller-provided buffers of that shape, any strides.
    """
    half_v = isinstance(v, torch.Tensor) and v.dtype in _HALF
    names = ("q", "k", "v", "q_scale", "k_scale") + (() if half_v else ("v_scale",))
    for name, t in zip(names, (q, k, v, q_scale, k_scale, v_scale)):
        check_tensor(t, name)
    for name, t in zip(names[:3], (q, k, v)):
        if t.dim() != 4:
            raise ValueError(f"{name}: expected a 4-D (B, N, H, D) tensor, got shape {tuple(t.shape)}")
    if q.dtype not in (torch.int8, torch.float8_e4m3fn) or k.dtype != q.dtype:
        raise TypeError(f"q, k: expected int8 or float8_e4m3fn codes of one dtype, got {q.dtype} and {k.dtype}")
    if v.dtype not in (torch.float8_e4m3fn, torch.int8) and not half_v:
        raise TypeError(f"v: expected float8_e4m3fn or int8 codes, or float16/bfloat16 for 16-bit P·V; got {v.dtype}")
    fp8_output = check_flag(fp8_output, "fp8_output")
    if half_v and fp8_output:
        raise ValueError("fp8_output: not available with 16-bit P·V (unquantized v)")
    if out_dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise TypeError(f"out_dtype: expected float16, bfloat16 or float32, got {out_dtype}")
    devices = {t.device for t in (q, k, v, q_scale, k_scale) + (() if half_v else (v_scale,))}
    if len(devices) != 1:
        raise ValueError(f"q, k, v and their scales must be on one device, got {sorted(map(str, devices))}")
    b, nq, hq, _ = q.shape
    device = q.device
    if k_mean is not None:
        check_tensor(k_mean, "k_mean")
    check_same_device(k_mean, device, "k_mean")
    if attn_mask is not None:
        check_same_device(check_tensor(attn_mask, "attn_mask"), device, "attn_mask")
    mask = prepare_mask(attn_mask, bool(causal), b, hq, nq, k.shape[1])
    odt = torch.float8_e4m3fn if fp8_output else out_dtype
    if out is not None:
        check_out_buffer(out, (b, nq, hq, v.shape[3]), odt, device, "out")
    if out_scale is not None:
        if not fp8_output:
            raise ValueError("out_scale: only meaningful with fp8_output=True")
        check_out_buffer(out_scale, (b, nq, hq, 1), torch.float32, device, "out_scale")
    return get_backend(q.device).attention_quantized(
        _unit_inner_stride(q), _unit_inner_stride(k), _unit_inner_stride(v), q_scale, k_scale,
        None if half_v else v_scale,
        resolve_sm_scale(softmax_scale, q.shape[3]), bool(causal), normalize_recipe(quant_recipe),
        bool(return_lse), bool(fp8_output), k_mean=k_mean, out_dtype=out_dtype, out=out,
        out_scale=out_scale, attn_mask=mask,
    )
