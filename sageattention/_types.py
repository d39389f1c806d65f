"""Result containers of the low-level API."""
from __future__ import annotations

from typing import Literal, NamedTuple, Optional

import torch

# What V (and with it P) is quantized to: fp8 e4m3fn (the default P·V of every backend)
# or int8 (the CPU's opt-in int8 P·V mode, docs/DESIGN.md "P·V modes").
VQuantDType = Literal["fp8", "int8"]


class QuantizedQK(NamedTuple):
    """Q and K codes with their dequantization scales (see docs/DESIGN.md)."""

    q_codes: torch.Tensor  # (B, Nq, Hq, D) int8 or float8_e4m3fn
    q_scale: torch.Tensor  # (B, Hq, Gq) float32, or (1, 1, 1) per tensor
    k_codes: torch.Tensor  # (B, Nk, Hkv, D)
    k_scale: torch.Tensor  # (B, Hkv, Gk) float32, or (1, 1, 1)
    k_mean: Optional[torch.Tensor]  # (B, Hkv, D) float32 when smoothing, else None


class QuantizedV(NamedTuple):
    """V codes (float8_e4m3fn, or int8 for the int8 P·V mode) with their dequantization
    scales."""

    v_codes: torch.Tensor  # (B, Nk, Hkv, Dv)
    v_scale: torch.Tensor  # (B, Hkv, Dv) per channel, (B, Hkv, G) per token block, (1, 1, 1)
