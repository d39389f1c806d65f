"""The operator contract every backend serves (docs/DESIGN.md, low-level API)."""
from __future__ import annotations

from typing import Optional, Protocol, Tuple, Union

import torch

from .._pv import PvMode
from .._recipes import QuantRecipe
from .._types import QuantizedQK, QuantizedV, VQuantDType

AttentionResult = Union[torch.Tensor, Tuple[torch.Tensor, ...]]


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
