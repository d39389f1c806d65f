"""CPU backend: our C++ operator core (SIMD + threads), through the custom ops of cpu_ops."""
from __future__ import annotations

from types import ModuleType

from .._pv import PvMode
from . import cpu_ops
from .base import OpsBackend


class CpuBackend(OpsBackend):
    name = "cpu"
    library = "sageattention's C++ core"
    pv_modes = frozenset(PvMode)  # fp8, 16-bit and the int8 P·V mode

    def _ops(self) -> ModuleType:
        return cpu_ops
