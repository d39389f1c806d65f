"""MUSA backend: delegates the attention kernel to MATE (Moore Threads).

MATE's low-level `mate.sage_attention_interface.sage_attn_quantized` takes the same call
shape as our `ops.attention_quantized`, so the public API runs one code path on both
backends. Quantization uses the portable torch quantizers on the device.
"""
from __future__ import annotations

import importlib
from typing import Optional

import torch

from .._recipes import QuantRecipe
from .._types import QuantizedQK, QuantizedV, VQuantDType
from . import torch_quant
from .base import AttentionResult


class MusaBackend:
    name = "musa"

    def _mate(self):
        return importlib.import_module("mate.sage_attention_interface")

    def quantize_qk(self, q: torch.Tensor, k: torch.Tensor, *, quant_recipe: QuantRecipe,
                    qk_quant_dtype: str, smooth_k: bool) -> QuantizedQK:
        return torch_quant.quantize_qk(q, k, quant_recipe=quant_recipe, qk_quant_dtype=qk_quant_dtype,
                                       smooth_k=smooth_k)

    def quantize_v(self, v: torch.Tensor, *, quant_recipe: QuantRecipe, dtype: VQuantDType = "fp8") -> QuantizedV:
        if dtype != "fp8":
            raise NotImplementedError(f"dtype: V quantized to {dtype} (the int8 P·V mode) is CPU-only; "
                                      "the musa backend (MATE) runs fp8 P·V")
        return torch_quant.quantize_v(v, quant_recipe=quant_recipe)

    def attention_quantized(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                            q_scale: torch.Tensor, k_scale: torch.Tensor, v_scale: Optional[torch.Tensor],
                            softmax_scale: float, causal: bool, quant_recipe: QuantRecipe,
                            return_lse: bool, fp8_output: bool, *,
                            k_mean: Optional[torch.Tensor], out_dtype: torch.dtype,
                            out: Optional[torch.Tensor] = None, out_scale: Optional[torch.Tensor] = None,
                            attn_mask: Optional[torch.Tensor] = None, out_hnd: bool = False) -> AttentionResult:
        if attn_mask is not None:
            raise NotImplementedError("attn_mask: not supported by the MATE backend")
        if v_scale is None:
            raise NotImplementedError("v: 16-bit P·V variants are not supported by the MATE backend")
        result = self._mate().sage_attn_quantized(
            q, k, v, q_scale, k_scale, v_scale, softmax_scale, causal, quant_recipe, return_lse, fp8_output
        )
        if out_hnd:  # MATE returns (B, N, H, D) like our low-level API; give the caller HND
            parts = result if isinstance(result, tuple) else (result,)
            n_layout = 2 if fp8_output else 1
            parts = tuple(t.transpose(1, 2) if i < n_layout else t for i, t in enumerate(parts))
            result = parts if isinstance(result, tuple) else parts[0]
        if out is not None:  # honour a caller-provided buffer
            first = result[0] if isinstance(result, tuple) else result
            out.copy_(first)
            if fp8_output and out_scale is not None:
                out_scale.copy_(result[1])
                return (out, out_scale, *result[2:])
            return (out, *result[1:]) if isinstance(result, tuple) else out
        return result
