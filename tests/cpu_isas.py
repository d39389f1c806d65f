"""The CPU core's SIMD paths as pytest parameters: one list for every test that forces
each path in turn (``sageattention._lib.set_cpu_isa``).

Every level of the core's ISA table (``_lib.cpu_isa_names()``) is a parameter; a level
this CPU (or build) cannot execute is skipped with a reason naming what is missing.
The ``isa`` fixture in conftest.py runs a test once per path and restores "auto".
"""

from __future__ import annotations

import functools
from typing import List, Set

import pytest

import sageattention._lib as _lib

# CPU features each level needs, as /proc/cpuinfo spells them (for the skip reason).
_ISA_FLAGS = {
    "avx2": ["avx2", "fma", "f16c"],
    "avx512": ["avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni"],
    "avx512_bf16": ["avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni", "avx512_bf16"],
}


@functools.lru_cache(maxsize=None)
def _cpu_flags() -> Set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def skip_reason(isa: str) -> str:
    missing = [f for f in _ISA_FLAGS.get(isa, []) if f not in _cpu_flags()]
    if missing:
        return f"the {isa} path cannot run: CPU lacks {', '.join(missing)}"
    return f"the {isa} path is not available (CPU features unknown, or not an x86 build)"


def isa_params(include_scalar: bool = True) -> List:
    """One pytest.param per ISA level, scalar first (the reference the others meet)."""
    params = []
    for isa in reversed(_lib.cpu_isa_names()):
        if isa == "scalar" and not include_scalar:
            continue
        try:
            ok = _lib.cpu_isa_available(isa)
        except Exception:  # the library failed to load: the tests that import it say so
            ok = False
        marks = [] if ok else [pytest.mark.skip(reason=skip_reason(isa))]
        params.append(pytest.param(isa, marks=marks, id=isa))
    return params
