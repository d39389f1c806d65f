"""Which 8-bit P·V mode a call runs: the `pv_quant_dtype` keyword and the
`SAGEATTN_CPU_PV` environment variable, resolved in one place.

- "fp8" (the default): P = fp8(448·p), V fp8 e4m3 codes (SageAttention2's recipe; every
  backend runs it).
- "int8" (opt-in, CPU only): P as u8 codes with one scale per row and key tile, V as int8
  codes; integer P·V on the CPU's int8 dot-product units (docs/DESIGN.md, "P·V modes").

An explicit keyword wins over the variable. The variable exists for clients that cannot
pass our keyword (diffusers, ComfyUI call `sageattn` or the upstream fp8-PV names with
upstream's arguments); its name says CPU because only the CPU backend has an int8 P·V
mode, so other devices do not read it. Any value other than those above, of either, is
a ValueError naming it; an empty variable counts as unset.
"""
from __future__ import annotations

import os
from typing import Any, Optional

from ._types import VQuantDType

PV_QUANT_DTYPES: tuple[VQuantDType, ...] = ("fp8", "int8")
DEFAULT_PV_QUANT_DTYPE: VQuantDType = "fp8"
ENV_VAR = "SAGEATTN_CPU_PV"


def check_v_quant_dtype(value: Any, name: str) -> VQuantDType:
    """`value` as a P·V / V quantization dtype; ValueError naming `name` otherwise."""
    if not isinstance(value, str) or value not in PV_QUANT_DTYPES:
        raise ValueError(f"{name}: expected 'fp8' or 'int8', got {value!r}")
    return value  # type: ignore[return-value]


def env_pv_quant_dtype() -> Optional[VQuantDType]:
    """The P·V mode SAGEATTN_CPU_PV asks for, or None when it is unset or empty."""
    raw = os.environ.get(ENV_VAR)
    if raw is None or raw == "":
        return None
    return check_v_quant_dtype(raw, f"environment variable {ENV_VAR}")


def resolve_pv_quant_dtype(pv_quant_dtype: Any, device_type: str) -> VQuantDType:
    """The P·V mode of one call on a device of type `device_type`.

    `pv_quant_dtype=None` means "not given": SAGEATTN_CPU_PV on CPU, else "fp8". Whether
    the backend can run the result is the backend's to say (NotImplementedError)."""
    if pv_quant_dtype is not None:
        return check_v_quant_dtype(pv_quant_dtype, "pv_quant_dtype")
    if device_type == "cpu":
        from_env = env_pv_quant_dtype()
        if from_env is not None:
            return from_env
    return DEFAULT_PV_QUANT_DTYPE
