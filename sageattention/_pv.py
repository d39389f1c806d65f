"""The P·V modes (docs/CONTRACT.md §3): how the second product of attention runs.

One Enum carries the choice from the entry points (core.py's plan) to the backends; its
FFI code is the C++ core's `sageattn::PvMode` (include/sageattn/tile_ops.h).
"""
from __future__ import annotations

import enum

import torch


class PvMode(enum.Enum):
    """FP8: P = fp8(448·p) times fp8 V codes (SageAttention2's default).
    HALF: P rounded to fp16 times unquantized fp16/bf16 V (upstream's pv_fp16 variants).
    INT8: P as u8 codes with a per-row tile scale times int8 V codes (opt-in)."""

    FP8 = "fp8"
    HALF = "16bit"
    INT8 = "int8"

    @property
    def ffi_code(self) -> int:
        return _FFI_CODES[self]

    @property
    def quantizes_v(self) -> bool:
        return self is not PvMode.HALF


_FFI_CODES = {PvMode.FP8: 0, PvMode.HALF: 1, PvMode.INT8: 2}


class VScaleMode(enum.IntEnum):
    """V's dequantization scale (the FFI's `v_scale_mode`): per channel or per token group."""

    PER_CHANNEL = 0
    PER_TOKEN = 1


# V's dtype names its P·V mode at the low-level API (codes or unquantized values).
_MODE_OF_V_DTYPE = {
    torch.float8_e4m3fn: PvMode.FP8,
    torch.float16: PvMode.HALF,
    torch.bfloat16: PvMode.HALF,
    torch.int8: PvMode.INT8,
}


def pv_mode_of_v(v: torch.Tensor) -> PvMode:
    """The P·V mode that V's dtype selects; TypeError naming `v` for any other dtype."""
    mode = _MODE_OF_V_DTYPE.get(v.dtype)
    if mode is None:
        raise TypeError(f"v: expected float8_e4m3fn or int8 codes, or float16/bfloat16 for 16-bit P·V; got {v.dtype}")
    return mode
