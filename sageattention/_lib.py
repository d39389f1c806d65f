"""Loads the C++ operator core (``libsageattn_cpu.so``) through TVM-FFI.

The library has no libtorch dependency: tensors cross as DLPack, so one build serves
every torch version. TVM-FFI releases the GIL for the duration of each call.
"""
from __future__ import annotations

import os
import sys
from functools import lru_cache
from typing import Any

import tvm_ffi

# The core raises NotImplementedError for unsupported recipes; TVM-FFI maps errors by
# name, and this one is not among its defaults.
try:
    tvm_ffi.register_error("NotImplementedError", NotImplementedError)
except Exception:  # already registered by another import of this module
    pass

_LIB_NAME = "libsageattn_cpu.so"


def _candidates() -> list[str]:
    # Every entry of the package path: an editable install keeps the sources in the
    # checkout and the built library in site-packages.
    package = sys.modules[__package__ or "sageattention"]
    paths = [os.path.join(d, _LIB_NAME) for d in getattr(package, "__path__", [])]
    # `python -m pytest` from a checkout imports the sources, which hold no library:
    # fall back to an installed copy on sys.path.
    paths += [os.path.join(p, "sageattention", _LIB_NAME) for p in sys.path if p]
    override = os.environ.get("SAGEATTN_LIBRARY")
    if override:
        paths.insert(0, override)
    return paths


@lru_cache(maxsize=1)
def module() -> Any:
    """The loaded TVM-FFI module; raises ImportError with the paths it tried."""
    tried = []
    for path in _candidates():
        if os.path.exists(path):
            return tvm_ffi.load_module(path)
        tried.append(path)
    raise ImportError(
        "sageattention: the C++ core was not found (tried " + ", ".join(tried) + "). "
        "Reinstall with `pip install .`."
    )


def cpu_isa() -> str:
    """The SIMD path the CPU kernels use now: one of cpu_isa_names()."""
    return str(module().cpu_isa())


def cpu_isa_names() -> list[str]:
    """Every SIMD path this build contains, most capable first (the core's ISA table)."""
    return [str(n) for n in module().cpu_isa_names()]


def set_cpu_isa(name: str) -> None:
    """Force a SIMD path (one of cpu_isa_names()) or return to 'auto'."""
    module().set_cpu_isa(name)


def cpu_isa_available(name: str) -> bool:
    """Whether this build has the path `name` and this CPU can execute it."""
    return bool(module().cpu_isa_available(name))
