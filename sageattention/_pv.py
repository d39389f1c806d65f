"""The P·V modes (docs/CONTRACT.md §3): how the second product of attention runs.

One Enum carries the choice from the entry points (core.py's plan) to the backends; its
FFI code is the C++ core's `sageattn::PvMode` (include/sageattn/tile_ops.h).

Which 8-bit mode a call runs is resolved here too (docs/DESIGN.md, "The int8 P·V mode"):
the `pv_quant_dtype` keyword ("fp8", the default, or "int8"), else the SAGEATTN_CPU_PV
environment variable on the CPU backend, else fp8. The variable is for clients that cannot pass our
keyword (diffusers, ComfyUI call `sageattn` or the upstream fp8-PV names with upstream's
arguments); its name says CPU because only the CPU backend has the int8 mode, so other
backends do not read it. Any other value of either is a ValueError naming it; an empty
variable counts as unset.
"""
from __future__ import annotations

import enum
import os
from typing import Any, Optional

import torch

from ._types import VQuantDType


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


# ---- the 8-bit P·V mode of a call --------------------------------------------------------
ENV_VAR = "SAGEATTN_CPU_PV"
_MODE_OF_NAME = {"fp8": PvMode.FP8, "int8": PvMode.INT8}


def check_v_quant_dtype(value: Any, name: str) -> VQuantDType:
    """`value` as an 8-bit P·V / V code type ("fp8" or "int8"); ValueError naming `name`."""
    if not isinstance(value, str) or value not in _MODE_OF_NAME:
        raise ValueError(f"{name}: expected 'fp8' or 'int8', got {value!r}")
    return value  # type: ignore[return-value]


def env_pv_quant_dtype() -> Optional[VQuantDType]:
    """What SAGEATTN_CPU_PV asks for, or None when it is unset or empty."""
    raw = os.environ.get(ENV_VAR)
    if raw is None or raw == "":
        return None
    return check_v_quant_dtype(raw, f"environment variable {ENV_VAR}")


def resolve_pv_mode(pv_quant_dtype: Optional[str], backend_name: str) -> PvMode:
    """The 8-bit P·V mode of one call on the backend `backend_name`: the keyword when given
    (already checked), else SAGEATTN_CPU_PV for the CPU backend, else fp8. (The backend,
    not the device: SAGEATTN_BACKEND may hand CPU tensors to another backend.)"""
    if pv_quant_dtype is None and backend_name == "cpu":
        pv_quant_dtype = env_pv_quant_dtype()
    return _MODE_OF_NAME[pv_quant_dtype or "fp8"]


def check_backend_runs(mode: PvMode, backend: Any) -> None:
    """NotImplementedError naming the backend when it has no such P·V mode (backends list
    theirs in `pv_modes`; one that does not is taken to run fp8 only)."""
    if mode is PvMode.INT8 and mode not in getattr(backend, "pv_modes", (PvMode.FP8,)):
        raise NotImplementedError(
            f"pv_quant_dtype: 'int8' (the int8 P·V mode) is not available on the '{backend.name}' backend; "
            "it runs on CPU only")
