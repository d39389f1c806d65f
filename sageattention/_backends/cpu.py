"""CPU backend: our C++ operator core (SIMD + threads), through the custom ops of cpu_ops."""
from __future__ import annotations

from typing import Optional, Union

import torch

from .._pv import PvMode, VScaleMode, pv_mode_of_v
from .._recipes import QuantRecipe, ResolvedRecipe, as_resolved
from .._types import QuantizedQK, QuantizedV, VQuantDType
from . import cpu_ops
from .base import AttentionResult

RecipeArg = Union[QuantRecipe, ResolvedRecipe]


class CpuBackend:
    name = "cpu"
    library = "sageattention's C++ core"
    varlen = True
    pv_modes = frozenset(PvMode)  # fp8, 16-bit and the int8 P·V mode

    def quantize_qk(self, q: torch.Tensor, k: torch.Tensor, *, quant_recipe: RecipeArg,
                    qk_quant_dtype: str, smooth_k: bool) -> QuantizedQK:
        r = as_resolved(quant_recipe)
        fp8 = qk_quant_dtype == "fp8"
        q_codes, q_scale = cpu_ops.quantize_tokens(q, *r.q.as_triple(), r.q.per_tensor, fp8, None)
        k_mean = cpu_ops.channel_mean(k) if smooth_k else None
        k_codes, k_scale = cpu_ops.quantize_tokens(k, *r.k.as_triple(), r.k.per_tensor, fp8, k_mean)
        return QuantizedQK(q_codes, q_scale, k_codes, k_scale, k_mean)

    def quantize_v(self, v: torch.Tensor, *, quant_recipe: RecipeArg, dtype: VQuantDType = "fp8") -> QuantizedV:
        r = as_resolved(quant_recipe)
        fp8 = dtype == "fp8"
        if r.v_per_channel:
            codes, scale = cpu_ops.quantize_channels(v, fp8)
        else:
            codes, scale = cpu_ops.quantize_tokens(v, *r.v.as_triple(), r.v.per_tensor, fp8, None)
        return QuantizedV(codes, scale)

    def attention_quantized(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                            q_scale: torch.Tensor, k_scale: torch.Tensor, v_scale: Optional[torch.Tensor],
                            softmax_scale: float, causal: bool, quant_recipe: RecipeArg,
                            return_lse: bool, fp8_output: bool, *,
                            k_mean: Optional[torch.Tensor], out_dtype: torch.dtype,
                            out: Optional[torch.Tensor] = None, out_scale: Optional[torch.Tensor] = None,
                            attn_mask: Optional[torch.Tensor] = None, out_hnd: bool = False) -> AttentionResult:
        r = as_resolved(quant_recipe)
        pv_mode = pv_mode_of_v(v)
        v_scale_mode = VScaleMode.PER_CHANNEL if r.v_per_channel else VScaleMode.PER_TOKEN
        groupings = [*r.q.as_triple(), *r.k.as_triple(), *r.v.as_triple()]
        o, o_scale, lse = cpu_ops.attention(
            q, k, v, q_scale, k_scale, v_scale if pv_mode.quantizes_v else None, groupings, pv_mode.ffi_code,
            int(v_scale_mode), k_mean, attn_mask,
            float(softmax_scale), bool(causal), bool(out_hnd), out_dtype, bool(fp8_output), bool(return_lse),
        )
        if out is not None:  # a caller-provided buffer of the same (B, N, H, D) shape
            out.copy_(o)
            o = out
        if fp8_output and out_scale is not None:
            out_scale.copy_(o_scale)
            o_scale = out_scale
        if fp8_output:
            return (o, o_scale, lse) if return_lse else (o, o_scale)
        return (o, lse) if return_lse else o
