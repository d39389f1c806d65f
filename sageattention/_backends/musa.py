"""MUSA backend: the attention kernel is MATE's (Moore Threads), called as MATE documents it.

MATE's low-level `mate.sage_attention_interface.sage_attn_quantized` takes pre-quantized
(B, N, H, D) codes, fp32 scales in its own 4-D layouts (mate_layout.py), a float softmax
scale and one of four recipes; it returns bf16 (or fp8 with a (B, N, H, 1) out_scale) and
the LSE of the K it was given. This backend therefore:

- quantizes with our own torch quantizers (RNE, docs/CONTRACT.md §2; bit-identical to the
  C++ ones), which run on any device. fp16 inputs are quantized as fp16: MATE's kernel
  only ever sees int8/fp8 codes and fp32 scales, so the bf16 conversion MATE's own wrapper
  does first is not needed, and skipping it keeps fp16's three extra mantissa bits;
- hands MATE the scales in MATE's layouts, and the recipe tuple by keyword;
- casts MATE's bf16 output to the caller's dtype, lays outputs out as the caller asked;
- adds the smoothing shift `sm_scale * q̂·mean_k` to the LSE, as the CPU core does
  (docs/CONTRACT.md §3), since MATE's kernel returns the LSE of the smoothed K;
- refuses what MATE's dense path lacks (attn_mask, 16-bit P·V, other token groupings,
  head dims above 128) with NotImplementedError naming MATE. Varlen is refused upstream
  of here (varlen.py).

MATE's `sage_attn_quantized_with_kvcache` (paged KV cache) is not used: the brief keeps it
out of scope.
"""
from __future__ import annotations

import importlib
from typing import Optional

import torch

from .._pv import PvMode
from .._recipes import ResolvedRecipe, as_resolved
from .._types import QuantizedQK, QuantizedV, VQuantDType
from . import mate_layout, torch_quant
from .base import AttentionResult, RecipeArg, deliver


def _mate_recipe(quant_recipe: RecipeArg) -> ResolvedRecipe:
    """The resolved recipe if MATE's dense kernel has it; NotImplementedError otherwise."""
    recipe = quant_recipe.recipe if isinstance(quant_recipe, ResolvedRecipe) else tuple(quant_recipe)
    if recipe in mate_layout.MATE_QUANT_MODES:
        r = as_resolved(recipe)  # type: ignore[arg-type]
        if not isinstance(quant_recipe, ResolvedRecipe) or quant_recipe == r:
            return r
    raise NotImplementedError(
        "quant_recipe: this token grouping (e.g. qk_quant_gran='per_warp' or the Triton blocks) is not "
        f"supported by the MATE backend; MATE supports {', '.join(map(str, mate_layout.MATE_QUANT_MODES))}"
    )


def _per_token_q_scale(q_scale: torch.Tensor, r: ResolvedRecipe, nq: int, hq: int) -> torch.Tensor:
    """Our Q scale as one value per (b, head, token): (B|1, Hq|1, Nq)."""
    if r.q.per_tensor:
        return q_scale.reshape(1, 1, 1)
    gi = torch_quant.group_index(nq, r.q, q_scale.device)
    return q_scale.index_select(2, gi)


def _smoothing_shift(q: torch.Tensor, q_scale: torch.Tensor, k_mean: torch.Tensor, r: ResolvedRecipe,
                     sm_scale: float) -> torch.Tensor:
    """sm_scale · q̂_i·mean_k per (b, q head, token), the score shift that K smoothing
    removed: the same product, in the same order, as the CPU core's LSE correction."""
    _, nq, hq, _ = q.shape
    mean = k_mean.float().repeat_interleave(hq // k_mean.shape[1], dim=1)  # (B, Hq, D)
    acc = (q.float().permute(0, 2, 1, 3) * mean[:, :, None, :]).sum(dim=-1)  # (B, Hq, Nq)
    return (sm_scale * _per_token_q_scale(q_scale.float(), r, nq, hq)) * acc


class MusaBackend:
    name = "musa"
    library = "MATE, whose quantized kernels have no varlen path"
    varlen = False
    pv_modes = frozenset({PvMode.FP8})  # MATE runs fp8 P·V only

    def _mate(self):
        return importlib.import_module("mate.sage_attention_interface")

    def quantize_qk(self, q: torch.Tensor, k: torch.Tensor, *, quant_recipe: RecipeArg,
                    qk_quant_dtype: str, smooth_k: bool) -> QuantizedQK:
        return torch_quant.quantize_qk(q, k, quant_recipe=_mate_recipe(quant_recipe),
                                       qk_quant_dtype=qk_quant_dtype, smooth_k=smooth_k)

    def quantize_v(self, v: torch.Tensor, *, quant_recipe: RecipeArg, dtype: VQuantDType = "fp8") -> QuantizedV:
        if dtype != "fp8":
            raise NotImplementedError(f"dtype: V quantized to {dtype} (the int8 P·V mode) is CPU-only; "
                                      "the musa backend (MATE) runs fp8 P·V")
        return torch_quant.quantize_v(v, quant_recipe=_mate_recipe(quant_recipe))

    def attention_quantized(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                            q_scale: torch.Tensor, k_scale: torch.Tensor, v_scale: Optional[torch.Tensor],
                            softmax_scale: float, causal: bool, quant_recipe: RecipeArg,
                            return_lse: bool, fp8_output: bool, *,
                            k_mean: Optional[torch.Tensor], out_dtype: torch.dtype,
                            out: Optional[torch.Tensor] = None, out_scale: Optional[torch.Tensor] = None,
                            attn_mask: Optional[torch.Tensor] = None, out_hnd: bool = False) -> AttentionResult:
        if attn_mask is not None:
            raise NotImplementedError("attn_mask: not supported by the MATE backend (MATE has no masked kernel)")
        if v_scale is None:
            raise NotImplementedError("v: 16-bit P·V variants are not supported by the MATE backend")
        if v.dtype == torch.int8:
            raise NotImplementedError("v: int8 V codes (the int8 P·V mode) are not supported by the MATE backend")
        r = _mate_recipe(quant_recipe)
        for name, t in (("q", q), ("v", v)):
            if t.shape[-1] > mate_layout.MATE_MAX_HEAD_DIM:
                raise NotImplementedError(
                    f"{name}: head dim {t.shape[-1]} is above MATE's maximum of {mate_layout.MATE_MAX_HEAD_DIM}"
                )
        b, nq, hq, _ = q.shape
        sizes = (("q", q.numel()), ("k", k.numel()), ("v", v.numel()), ("out", b * nq * hq * v.shape[-1]))
        for name, n in sizes:
            if n > mate_layout.MATE_MAX_ELEMENTS:
                raise NotImplementedError(
                    f"{name}: {n} elements; MATE's binding indexes tensors with int32 (at most 2^31 - 1)"
                )
        v_mate = mate_layout.channel_scale(v_scale) if r.v_per_channel else mate_layout.token_scale(v_scale)
        result = self._mate().sage_attn_quantized(
            q=q, k=k, v=v,
            q_scale=mate_layout.token_scale(q_scale), k_scale=mate_layout.token_scale(k_scale), v_scale=v_mate,
            softmax_scale=float(softmax_scale), causal=bool(causal), quant_recipe=r.recipe,
            return_lse=bool(return_lse), fp8_output=bool(fp8_output),
        )
        parts = list(result) if isinstance(result, tuple) else [result]
        o = parts[0] if fp8_output else parts[0].to(out_dtype)
        o_scale = parts[1] if fp8_output else None
        lse = parts[-1] if return_lse else None
        if lse is not None and k_mean is not None:
            lse = lse + _smoothing_shift(q, q_scale, k_mean, r, float(softmax_scale))
        if out_hnd:  # MATE returns (B, N, H, ·); the caller gets (B, H, N, ·), contiguous as on CPU
            o = o.transpose(1, 2).contiguous()
            o_scale = o_scale.transpose(1, 2).contiguous() if o_scale is not None else None
        return deliver(o, o_scale, lse, out=out, out_scale=out_scale, fp8_output=fp8_output, return_lse=return_lse)
