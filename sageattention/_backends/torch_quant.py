"""Portable quantizers in torch ops, for backends whose library provides only the
attention kernel. Same numerics as the C++ quantizers (docs/CONTRACT.md §2); on CPU the
tests check the two agree bit for bit.
"""
from __future__ import annotations

from typing import Optional, Union

import torch

from .._recipes import Grouping, QuantRecipe, ResolvedRecipe, as_resolved
from .._types import QuantizedQK, QuantizedV, VQuantDType

_QMAX = {"int8": 127.0, "fp8": 448.0}


def group_index(n: int, g: Grouping, device: torch.device) -> torch.Tensor:
    idx = torch.arange(n, device=device)
    if g.block <= 0:
        return torch.zeros(n, dtype=torch.long, device=device)
    return (idx // g.block) * g.groups + ((idx % g.block) // g.stride) % g.groups


def _encode(y: torch.Tensor, qk_dtype: str) -> torch.Tensor:
    if qk_dtype == "int8":
        return torch.nan_to_num(torch.round(y), nan=0.0).clamp(-127, 127).to(torch.int8)
    return y.clamp(-448, 448).to(torch.float8_e4m3fn)


def quantize_tokens(x: torch.Tensor, g: Grouping, qk_dtype: str,
                    mean: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """x (B, N, H, D) -> codes (B, N, H, D), scale (B, H, G) or (1, 1, 1)."""
    xf = x.float()
    if mean is not None:
        xf = xf - mean[:, None, :, :]
    qmax = _QMAX[qk_dtype]
    b, n, h, _ = x.shape
    if g.per_tensor:
        amax = xf.abs().amax() if xf.numel() else torch.zeros((), device=x.device)
        scale = (amax.clamp_min(1e-12) / qmax).reshape(1, 1, 1)
        return _encode(xf / scale, qk_dtype), scale.float()
    gi = group_index(n, g, x.device)
    ng = g.num_groups(n)
    tok_amax = xf.abs().amax(dim=3).permute(0, 2, 1)  # (B, H, N)
    amax = torch.zeros((b, h, ng), dtype=torch.float32, device=x.device)
    amax = amax.scatter_reduce(2, gi.expand(b, h, n), tok_amax, reduce="amax", include_self=True)
    scale = amax.clamp_min(1e-12) / qmax
    tok_scale = scale.gather(2, gi.expand(b, h, n)).permute(0, 2, 1)[..., None]  # (B, N, H, 1)
    return _encode(xf / tok_scale, qk_dtype), scale


def quantize_qk(q: torch.Tensor, k: torch.Tensor, *, quant_recipe: Union[QuantRecipe, ResolvedRecipe], qk_quant_dtype: str,
                smooth_k: bool) -> QuantizedQK:
    r = as_resolved(quant_recipe)
    k_mean = None
    if smooth_k:
        n = k.shape[1]
        k_mean = (k.double().sum(dim=1) / max(n, 1)).float()
    q_codes, q_scale = quantize_tokens(q, r.q, qk_quant_dtype)
    k_codes, k_scale = quantize_tokens(k, r.k, qk_quant_dtype, k_mean)
    return QuantizedQK(q_codes, q_scale, k_codes, k_scale, k_mean)


def quantize_v(v: torch.Tensor, *, quant_recipe: Union[QuantRecipe, ResolvedRecipe],
               dtype: VQuantDType = "fp8") -> QuantizedV:
    """V codes in `dtype` ("fp8", or "int8" as the int8 P·V mode takes them)."""
    r = as_resolved(quant_recipe)
    if not r.v_per_channel:
        codes, scale = quantize_tokens(v, r.v, dtype)
        return QuantizedV(codes, scale)
    vf = v.float()
    amax = vf.abs().amax(dim=1) if v.shape[1] else torch.zeros(v.shape[0], v.shape[2], v.shape[3], device=v.device)
    scale = amax.clamp_min(1e-12) / _QMAX[dtype]  # (B, H, D)
    return QuantizedV(_encode(vf / scale[:, None], dtype), scale)
