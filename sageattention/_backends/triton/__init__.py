"""Triton backend: NVIDIA (sm_80+) and AMD (CDNA2+, RDNA3+) GPUs from one Triton source,
compiled just in time, so no build step (docs/DESIGN.md, "Triton backend").

Importing this package imports neither triton nor CUDA: the kernels load on first use.
The same kernels run on CPU tensors in Triton's interpreter (TRITON_INTERPRET=1) when
SAGEATTN_BACKEND=triton forces this backend; that is how CI tests them.
"""
from __future__ import annotations

import importlib.util
from typing import Optional, Union

import torch

from ..._recipes import QuantRecipe, ResolvedRecipe, as_resolved
from ..._types import QuantizedQK, QuantizedV, VQuantDType
from ..base import AttentionResult

RecipeArg = Union[QuantRecipe, ResolvedRecipe]


def have_triton() -> bool:
    try:
        return importlib.util.find_spec("triton") is not None
    except (ImportError, ValueError):
        return False


def _ops():
    from . import ops  # imports triton and builds the kernels

    return ops


class TritonBackend:
    name = "triton"
    library = "sageattention's Triton kernels"
    varlen = True

    def quantize_qk(self, q: torch.Tensor, k: torch.Tensor, *, quant_recipe: RecipeArg,
                    qk_quant_dtype: str, smooth_k: bool) -> QuantizedQK:
        ops = _ops()
        r = as_resolved(quant_recipe)
        fp8 = qk_quant_dtype == "fp8"
        q_codes, q_scale = ops.quantize_tokens(q, *r.q.as_triple(), r.q.per_tensor, fp8, None)
        k_mean = ops.channel_mean(k) if smooth_k else None
        k_codes, k_scale = ops.quantize_tokens(k, *r.k.as_triple(), r.k.per_tensor, fp8, k_mean)
        return QuantizedQK(q_codes, q_scale, k_codes, k_scale, k_mean)

    def quantize_v(self, v: torch.Tensor, *, quant_recipe: RecipeArg, dtype: VQuantDType = "fp8") -> QuantizedV:
        if dtype != "fp8":
            raise NotImplementedError(f"dtype: the triton backend quantizes V to fp8 only (no {dtype} P·V mode)")
        ops = _ops()
        r = as_resolved(quant_recipe)
        if r.v_per_channel:
            codes, scale = ops.quantize_channels(v)
        else:
            codes, scale = ops.quantize_tokens(v, *r.v.as_triple(), r.v.per_tensor, True, None)
        return QuantizedV(codes, scale)

    def attention_quantized(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                            q_scale: torch.Tensor, k_scale: torch.Tensor, v_scale: Optional[torch.Tensor],
                            softmax_scale: float, causal: bool, quant_recipe: RecipeArg,
                            return_lse: bool, fp8_output: bool, *,
                            k_mean: Optional[torch.Tensor], out_dtype: torch.dtype,
                            out: Optional[torch.Tensor] = None, out_scale: Optional[torch.Tensor] = None,
                            attn_mask: Optional[torch.Tensor] = None, out_hnd: bool = False) -> AttentionResult:
        r = as_resolved(quant_recipe)
        half_v = v.dtype in (torch.float16, torch.bfloat16)
        v_mode = 2 if half_v else (0 if r.v_per_channel else 1)
        groupings = [*r.q.as_triple(), *r.k.as_triple(), *r.v.as_triple()]
        o, o_scale, lse = _ops().attention(
            q, k, v, q_scale, k_scale, None if half_v else v_scale, groupings, v_mode, k_mean, attn_mask,
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


__all__ = ["TritonBackend", "have_triton"]
