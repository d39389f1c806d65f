"""Loads the C++ operator core (``libsageattn_cpu.so``) through TVM-FFI.

The library has no libtorch dependency: tensors cross as DLPack, so one build serves
every torch version. TVM-FFI releases the GIL for the duration of each call.

Two rules keep that true on every torch the package declares:

- fp8 tensors cross the C ABI as uint8 views (``_CoreModule``). Torch before 2.7 has no
  DLPack code for float8 ("float8 types are not supported by dlpack"); the core reads
  fp8 codes from uint8 storage as well.
- TVM-FFI's optional torch add-on (``tvm_ffi._optional_torch_c_dlpack``) is switched off
  for our import: on a torch that lacks ``Tensor.__dlpack_c_exchange_api__`` it would
  compile a libtorch extension on first import (over a minute, and a failure without a
  C++ compiler). The plain DLPack protocol is all the core needs. Set
  ``TVM_FFI_DISABLE_TORCH_C_DLPACK=0`` before importing sageattention to keep the add-on.
"""
from __future__ import annotations

import os
import sys
from functools import lru_cache
from typing import Any, Callable

_ADDON_SWITCH = "TVM_FFI_DISABLE_TORCH_C_DLPACK"
_caller_choice = os.environ.get(_ADDON_SWITCH)
os.environ[_ADDON_SWITCH] = _caller_choice if _caller_choice is not None else "1"
try:
    import tvm_ffi
finally:  # the switch is read once, at tvm_ffi's import: leave the environment as we found it
    if _caller_choice is None:
        del os.environ[_ADDON_SWITCH]

# The core raises NotImplementedError for unsupported recipes; TVM-FFI maps errors by
# name, and this one is not among its defaults.
try:
    tvm_ffi.register_error("NotImplementedError", NotImplementedError)
except Exception:  # already registered by another import of this module
    pass

_LIB_NAME = "libsageattn_cpu.so"
LIBRARY_ENV = "SAGEATTN_LIBRARY"  # a library path to try first
ISA_ENV = "SAGEATTN_CPU_ISA"  # read by the core itself (csrc/core/isa.cc), named here for `env`


def _candidates() -> list[str]:
    # Every entry of the package path: an editable install keeps the sources in the
    # checkout and the built library in site-packages.
    package = sys.modules[__package__ or "sageattention"]
    paths = [os.path.join(d, _LIB_NAME) for d in getattr(package, "__path__", [])]
    # `python -m pytest` from a checkout imports the sources, which hold no library:
    # fall back to an installed copy on sys.path.
    paths += [os.path.join(p, "sageattention", _LIB_NAME) for p in sys.path if p]
    override = os.environ.get(LIBRARY_ENV)
    if override:
        paths.insert(0, override)
    return paths


def _fp8_dtypes() -> frozenset:
    import torch

    # every float8 flavour this torch has: none of them has a DLPack code before torch 2.7
    names = ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz")
    return frozenset(getattr(torch, n) for n in names if hasattr(torch, n))


class _CoreModule:
    """The core's functions, with every fp8 tensor argument (inputs and the output
    buffers the core writes) passed as a uint8 view of the same storage. Every call into
    the library goes through here, so no call site can hand DLPack a float8 dtype."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self.__file__ = getattr(raw, "__file__", None)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        fn = getattr(self._raw, name)
        torch = sys.modules.get("torch")
        if torch is None:  # no torch tensor can be among the arguments yet: nothing to view
            return fn
        fp8 = _fp8_dtypes()
        uint8 = torch.uint8
        tensor = torch.Tensor

        def call(*args: Any) -> Any:
            return fn(*[a.view(uint8) if isinstance(a, tensor) and a.dtype in fp8 else a for a in args])

        call.__name__ = name
        setattr(self, name, call)  # later lookups skip __getattr__
        return call


@lru_cache(maxsize=1)
def module() -> Any:
    """The loaded core, wrapped by _CoreModule; raises ImportError with the paths it tried."""
    tried = []
    for path in _candidates():
        if os.path.exists(path):
            return _CoreModule(tvm_ffi.load_module(path))
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
