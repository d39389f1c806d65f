"""Triton backend: NVIDIA (sm_80+) and AMD (CDNA2+, RDNA3+) GPUs from one Triton source,
compiled just in time, so no build step (docs/DESIGN.md, "Triton backend").

Importing this package imports neither triton nor CUDA: the kernels load on first use.
The same kernels run on CPU tensors in Triton's interpreter (TRITON_INTERPRET=1) when
SAGEATTN_BACKEND=triton forces this backend; that is how CI tests them.
"""
from __future__ import annotations

import importlib.util
from types import ModuleType

from ..._pv import PvMode
from ..base import OpsBackend


def have_triton() -> bool:
    try:
        return importlib.util.find_spec("triton") is not None
    except (ImportError, ValueError):
        return False


class TritonBackend(OpsBackend):
    name = "triton"
    library = "sageattention's Triton kernels"
    pv_modes = frozenset({PvMode.FP8, PvMode.HALF})  # no int8 P·V kernel

    def _ops(self) -> ModuleType:
        from . import ops  # imports triton and builds the kernels

        return ops


__all__ = ["TritonBackend", "have_triton"]
