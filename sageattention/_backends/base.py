"""The operator contract every backend serves (docs/DESIGN.md, low-level API), and what
the backends share: the return forms of `attention_quantized`, and the glue of a backend
whose kernels are custom ops with the C++ core's signatures (the CPU and Triton backends)."""
from __future__ import annotations

from typing import Any, Optional, Protocol, Tuple, Union

import torch

from .._pv import PvMode, VScaleMode, pv_mode_of_v
from .._recipes import QuantRecipe, ResolvedRecipe, as_resolved
from .._types import QuantizedQK, QuantizedV, VQuantDType

AttentionResult = Union[torch.Tensor, Tuple[torch.Tensor, ...]]
RecipeArg = Union[QuantRecipe, ResolvedRecipe]


class Backend(Protocol):
    name: str
    library: str  # what runs the kernels, for error messages
    varlen: bool  # serves sageattn_varlen (packed sequences)
    pv_modes: "frozenset[PvMode]"  # the P·V modes it runs (sageattention._pv)

    def quantize_qk(self, q: torch.Tensor, k: torch.Tensor, *, quant_recipe: QuantRecipe,
                    qk_quant_dtype: str, smooth_k: bool) -> QuantizedQK: ...

    def quantize_v(self, v: torch.Tensor, *, quant_recipe: QuantRecipe, dtype: VQuantDType = "fp8") -> QuantizedV:
        """V codes in `dtype`: "fp8" (e4m3fn), or "int8" for the int8 P·V mode; a backend
        that has no int8 P·V mode raises NotImplementedError naming itself."""
        ...

    def attention_quantized(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                            q_scale: torch.Tensor, k_scale: torch.Tensor, v_scale: Optional[torch.Tensor],
                            softmax_scale: float, causal: bool, quant_recipe: QuantRecipe,
                            return_lse: bool, fp8_output: bool, *,
                            k_mean: Optional[torch.Tensor], out_dtype: torch.dtype,
                            out: Optional[torch.Tensor] = None, out_scale: Optional[torch.Tensor] = None,
                            attn_mask: Optional[torch.Tensor] = None, out_hnd: bool = False) -> AttentionResult:
        """q/k/v (B, N, H, D) codes (v may be unquantized float16/bfloat16: 16-bit P·V).
        out_hnd=True returns outputs laid out (B, H, N, D) instead of (B, N, H, D)."""
        ...


def deliver(o: torch.Tensor, o_scale: Optional[torch.Tensor], lse: Optional[torch.Tensor], *,
            out: Optional[torch.Tensor], out_scale: Optional[torch.Tensor], fp8_output: bool,
            return_lse: bool) -> AttentionResult:
    """`attention_quantized`'s return form: o, then o_scale when fp8_output, then lse when
    return_lse; o and o_scale land in the caller's `out` / `out_scale` buffers when given
    (same shape as what the backend computed)."""
    if out is not None:
        out.copy_(o)
        o = out
    if fp8_output and out_scale is not None:
        assert o_scale is not None
        out_scale.copy_(o_scale)
        o_scale = out_scale
    parts = (o,) + ((o_scale,) if fp8_output else ()) + ((lse,) if return_lse else ())
    return parts if len(parts) > 1 else o  # type: ignore[return-value]


class OpsBackend:
    """A backend whose kernels are four custom ops with the C++ core's signatures
    (`quantize_tokens`, `channel_mean`, `quantize_channels`, `attention`: cpu_ops.py). A
    subclass names its ops module (`_ops`) and the P·V modes it runs; the glue between the
    low-level API and those ops is here, once."""

    name: str
    library: str
    varlen = True
    pv_modes: "frozenset[PvMode]"

    def _ops(self) -> Any:
        raise NotImplementedError

    def _check_runs(self, mode: PvMode, what: str) -> None:
        if mode not in self.pv_modes:
            raise NotImplementedError(
                f"{what}: the {mode.value} P·V mode is not available on the {self.name} backend; "
                f"it runs {', '.join(sorted(m.value for m in self.pv_modes))}")

    def quantize_qk(self, q: torch.Tensor, k: torch.Tensor, *, quant_recipe: RecipeArg,
                    qk_quant_dtype: str, smooth_k: bool) -> QuantizedQK:
        ops = self._ops()
        r = as_resolved(quant_recipe)
        fp8 = qk_quant_dtype == "fp8"
        q_codes, q_scale = ops.quantize_tokens(q, *r.q.as_triple(), r.q.per_tensor, fp8, None)
        k_mean = ops.channel_mean(k) if smooth_k else None
        k_codes, k_scale = ops.quantize_tokens(k, *r.k.as_triple(), r.k.per_tensor, fp8, k_mean)
        return QuantizedQK(q_codes, q_scale, k_codes, k_scale, k_mean)

    def quantize_v(self, v: torch.Tensor, *, quant_recipe: RecipeArg, dtype: VQuantDType = "fp8") -> QuantizedV:
        self._check_runs(PvMode(dtype), "dtype")
        ops = self._ops()
        r = as_resolved(quant_recipe)
        fp8 = dtype == "fp8"
        if r.v_per_channel:
            codes, scale = ops.quantize_channels(v, fp8)
        else:
            codes, scale = ops.quantize_tokens(v, *r.v.as_triple(), r.v.per_tensor, fp8, None)
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
        self._check_runs(pv_mode, "v")
        v_scale_mode = VScaleMode.PER_CHANNEL if r.v_per_channel else VScaleMode.PER_TOKEN
        groupings = [*r.q.as_triple(), *r.k.as_triple(), *r.v.as_triple()]
        o, o_scale, lse = self._ops().attention(
            q, k, v, q_scale, k_scale, v_scale if pv_mode.quantizes_v else None, groupings, pv_mode.ffi_code,
            int(v_scale_mode), k_mean, attn_mask,
            float(softmax_scale), bool(causal), bool(out_hnd), out_dtype, bool(fp8_output), bool(return_lse),
        )
        return deliver(o, o_scale, lse, out=out, out_scale=out_scale, fp8_output=fp8_output, return_lse=return_lse)
