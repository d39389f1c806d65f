"""CPU backend: our C++ operator core (SIMD + threads), through TVM-FFI."""
from __future__ import annotations

from typing import Optional

import torch

from .. import _lib
from .._recipes import QuantRecipe, ResolvedRecipe, resolve
from .._types import QuantizedQK, QuantizedV
from .base import AttentionResult

_CODE_DTYPES = {"int8": torch.int8, "fp8": torch.float8_e4m3fn}


def _threads() -> int:
    return max(1, torch.get_num_threads())


def _scale_shape(b: int, h: int, n: int, grouping) -> tuple[int, int, int]:
    return (1, 1, 1) if grouping.per_tensor else (b, h, grouping.num_groups(n))


class CpuBackend:
    name = "cpu"

    def quantize_qk(self, q: torch.Tensor, k: torch.Tensor, *, quant_recipe: QuantRecipe,
                    qk_quant_dtype: str, smooth_k: bool) -> QuantizedQK:
        r = resolve(quant_recipe)
        lib, threads = _lib.module(), _threads()
        code_dtype = _CODE_DTYPES[qk_quant_dtype]
        fp8 = qk_quant_dtype == "fp8"
        q_codes = torch.empty(q.shape, dtype=code_dtype)
        q_scale = torch.empty(_scale_shape(q.shape[0], q.shape[2], q.shape[1], r.q), dtype=torch.float32)
        lib.quantize_tokens(q, q_codes, q_scale, *r.q.as_triple(), r.q.per_tensor, fp8, None, threads)
        k_mean: Optional[torch.Tensor] = None
        if smooth_k:
            k_mean = torch.empty((k.shape[0], k.shape[2], k.shape[3]), dtype=torch.float32)
            lib.channel_mean(k, k_mean, threads)
        k_codes = torch.empty(k.shape, dtype=code_dtype)
        k_scale = torch.empty(_scale_shape(k.shape[0], k.shape[2], k.shape[1], r.k), dtype=torch.float32)
        lib.quantize_tokens(k, k_codes, k_scale, *r.k.as_triple(), r.k.per_tensor, fp8, k_mean, threads)
        return QuantizedQK(q_codes, q_scale, k_codes, k_scale, k_mean)

    def quantize_v(self, v: torch.Tensor, *, quant_recipe: QuantRecipe) -> QuantizedV:
        r = resolve(quant_recipe)
        lib, threads = _lib.module(), _threads()
        v_codes = torch.empty(v.shape, dtype=torch.float8_e4m3fn)
        b, n, h, d = v.shape
        if r.v_per_channel:
            v_scale = torch.empty((b, h, d), dtype=torch.float32)
            lib.quantize_channels(v, v_codes, v_scale, threads)
        else:
            v_scale = torch.empty(_scale_shape(b, h, n, r.v), dtype=torch.float32)
            lib.quantize_tokens(v, v_codes, v_scale, *r.v.as_triple(), r.v.per_tensor, True, None, threads)
        return QuantizedV(v_codes, v_scale)

    def attention_quantized(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                            q_scale: torch.Tensor, k_scale: torch.Tensor, v_scale: torch.Tensor,
                            softmax_scale: float, causal: bool, quant_recipe: QuantRecipe,
                            return_lse: bool, fp8_output: bool, *,
                            k_mean: Optional[torch.Tensor], out_dtype: torch.dtype,
                            out: Optional[torch.Tensor], out_scale: Optional[torch.Tensor],
                            attn_mask: Optional[torch.Tensor]) -> AttentionResult:
        r: ResolvedRecipe = resolve(quant_recipe)
        b, nq, hq, _ = q.shape
        dv = v.shape[3]
        if out is None:
            out = torch.empty((b, nq, hq, dv), dtype=torch.float8_e4m3fn if fp8_output else out_dtype)
        if fp8_output and out_scale is None:
            out_scale = torch.empty((b, nq, hq, 1), dtype=torch.float32)
        lse = torch.empty((b, hq, nq), dtype=torch.float32) if return_lse else None
        groupings = [*r.q.as_triple(), *r.k.as_triple(), *r.v.as_triple()]
        _lib.module().attention_forward(
            q, k, v, q_scale, k_scale, v_scale, groupings, 0 if r.v_per_channel else 1,
            q.dtype == torch.float8_e4m3fn, k_mean, attn_mask, float(softmax_scale), bool(causal),
            out, out_scale if fp8_output else None, lse, _threads(),
        )
        if fp8_output:
            assert out_scale is not None
            return (out, out_scale, lse) if return_lse else (out, out_scale)
        return (out, lse) if return_lse else out
